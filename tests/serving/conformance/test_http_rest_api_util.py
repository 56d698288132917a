"""Port of TF Serving's `model_servers/http_rest_api_util_test.cc` (tensorflow/serving commit
9d981c5): `ParseModelInfo` cases against `serving.rest.parse_model_info` (the same paths,
decoded names, versions, labels, subresources, failures), and over the wire where a path has a
REST meaning (percent-decoded names and labels reach the model lookup). Ported: 2 cases;
not applicable: NOT_APPLICABLE (0 cases)."""

import json

import pytest

from serving.errors import ServingError
from serving.rest import parse_model_info
from tests.serving.conformance.conftest import HANDLER_MODEL, call

NOT_APPLICABLE = []  # (case name, reason): both cases of http_rest_api_util_test.cc apply
RESERVED = "%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
DECODED = "!#$%&'()*+,/:;=?@[]"


def test_parse_model_info_for_get():
    assert parse_model_info("GET", f"/v1/models/modelname{RESERVED}")[:2] == (
        True,
        f"modelname{DECODED}",
    )
    assert parse_model_info("GET", "/v1/models/modelname/versions/99") == (
        True,
        "modelname",
        99,
        None,
        None,
    )
    assert parse_model_info("GET", "/v1/models/modelname/labels/latest") == (
        True,
        "modelname",
        None,
        "latest",
        None,
    )
    assert parse_model_info("GET", f"/v1/models/modelname/labels/latest{RESERVED}") == (
        True,
        "modelname",
        None,
        f"latest{DECODED}",
        None,
    )
    assert parse_model_info("GET", "/v1/models/modelname/labels/latest/metadata") == (
        True,
        "modelname",
        None,
        "latest",
        "metadata",
    )
    assert parse_model_info(
        "GET", f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}/metadata"
    ) == (True, f"modelname{DECODED}", None, f"latest{DECODED}", "metadata")
    for path in ("/v1/foo", "/v1/models/foo:predict", "/v1/models/foo/version/50:predict"):
        assert parse_model_info("GET", path)[0] is False, path


def test_parse_model_info_for_post():
    assert parse_model_info("POST", f"/v1/models/modelname{RESERVED}:predict") == (
        True,
        f"modelname{DECODED}",
        None,
        None,
        "predict",
    )
    assert parse_model_info("POST", "/v1/models/modelname/versions/99:predict") == (
        True,
        "modelname",
        99,
        None,
        "predict",
    )
    assert parse_model_info("POST", "/v1/models/modelname/labels/latest:predict") == (
        True,
        "modelname",
        None,
        "latest",
        "predict",
    )
    assert parse_model_info("POST", f"/v1/models/modelname/labels/latest{RESERVED}:predict") == (
        True,
        "modelname",
        None,
        f"latest{DECODED}",
        "predict",
    )
    assert parse_model_info(
        "POST", f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}:predict"
    ) == (True, f"modelname{DECODED}", None, f"latest{DECODED}", "predict")
    for path in (
        "/v1/foo",
        "/v1/models",
        "/v1/models/foo/version/50:predict",
        "/v1/models/foo/versions/string:predict",
        "/v1/models/foo/metadata",
        "/v1/models/foo/versions/50/labels/some_label:regress",
    ):
        assert parse_model_info("POST", path)[0] is False, path
    with pytest.raises(ServingError) as caught:
        parse_model_info("POST", f"/v1/models/foo/versions/{2**64 - 1}:predict")
    assert (
        caught.value.code == "INVALID_ARGUMENT"
        and "Failed to convert version" in caught.value.message
    )


def test_decoded_names_and_labels_over_the_wire(handler_server):
    """The decoded name and label are what the server looks up (and names in its answers)."""
    status, _, text = call(handler_server, "GET", f"/v1/models/modelname{RESERVED}")
    assert (
        status == 404
        and json.loads(text)["error"] == f"Could not find any versions of model modelname{DECODED}"
    )
    status, _, text = call(
        handler_server,
        "POST",
        f"/v1/models/{HANDLER_MODEL}/labels/latest{RESERVED}:predict",
        '{"instances": [1.0]}',
    )
    assert (
        status == 400
        and f"Unrecognized servable version label: latest{DECODED}" in json.loads(text)["error"]
    )
    status, _, text = call(
        handler_server,
        "POST",
        f"/v1/models/{HANDLER_MODEL}/labels/Version%5FLabel:predict",
        '{"instances": [1.0]}',
    )
    assert status == 200 and json.loads(text) == {"predictions": [2.5]}


def test_versions_are_ascii_int64():
    """absl::SimpleAtoi on RE2's ASCII \\d: other scripts' digits are no version, and a version
    beyond int64 (even 5000 digits long) is INVALID_ARGUMENT."""
    assert parse_model_info("GET", "/v1/models/m/versions/\u0663")[0] is False
    assert parse_model_info("POST", "/v1/models/m/versions/\u0663:predict")[0] is False
    assert parse_model_info("GET", "/v1/models/m/versions/00123")[2] == 123
    assert parse_model_info("GET", f"/v1/models/m/versions/{2**63 - 1}")[2] == 2**63 - 1
    for version in (str(2**63), "9" * 5000):
        with pytest.raises(ServingError, match="Failed to convert version"):
            parse_model_info("GET", f"/v1/models/m/versions/{version}")
