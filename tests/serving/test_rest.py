"""The REST API against TF Serving's own test models and the real server's known answers."""

import gzip
import json
import urllib.error
import urllib.request

import pytest

from tests.serving.conftest import tfs_testdata


def call(server, path, body=None, method=None, headers=None):
    url = f"http://127.0.0.1:{server.rest_api_port}{path}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers=headers or {},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def call_json(server, path, body=None, **kwargs):
    status, text = call(server, path, body, **kwargs)
    return status, json.loads(text)


def test_known_answers_row_and_columnar(tf_server):
    assert (
        call(tf_server, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})[1].replace(
            " ", ""
        )
        == '{"predictions":[3.0,3.5,4.0]}'
    )
    assert call_json(tf_server, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == (
        200,
        {"outputs": [3.0, 3.5, 4.0]},
    )
    # integers convert to the float input; whole-number outputs are printed with ".0"
    status, text = call(tf_server, "/v1/models/default:predict", {"instances": [2, 4]})
    assert status == 200 and text.replace(" ", "") == '{"predictions":[3.0,4.0]}'


def test_known_answers_classify_regress(tf_server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert call_json(tf_server, "/v1/models/default:classify", body) == (
        200,
        {"results": [[["", 3.0]]]},
    )
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert call_json(tf_server, "/v1/models/default:regress", body) == (200, {"results": [3.0]})


def test_float_formatting_nan_and_infinity(tf_server):
    status, text = call(
        tf_server, "/v1/models/default:predict", b'{"instances": [NaN, Infinity, 0.1]}'
    )
    assert status == 200
    assert text.replace(" ", "") == '{"predictions":[NaN,Infinity,2.05]}'


def test_format_float_like_tf_serving():
    import numpy as np

    from serving.json_tensor import format_float

    assert format_float(np.float32(3)) == "3.0"
    assert format_float(np.float32(1 / 3)) == "0.333333343"  # six digits do not round-trip
    assert format_float(np.float32(9000000)) == "9e+06"
    assert format_float(1 / 3, double=True) == "0.33333333333333331"
    assert format_float(float("-inf")) == "-Infinity"


def test_metadata_equals_real_server(tf_server):
    expected = json.loads(
        (tfs_testdata("saved_model_half_plus_two_2_versions_metadata.json")).read_text()
    )
    status, got = call_json(
        tf_server, "/v1/models/saved_model_half_plus_two_2_versions/versions/123/metadata"
    )
    assert status == 200 and got == expected


def test_status_and_version_routing(tf_server):
    ok = {"error_code": "OK", "error_message": ""}
    assert call_json(tf_server, "/v1/models/default") == (
        200,
        {"model_version_status": [{"version": "123", "state": "AVAILABLE", "status": ok}]},
    )
    name = "saved_model_half_plus_two_2_versions"
    status, got = call_json(tf_server, f"/v1/models/{name}")
    assert status == 200 and [v["version"] for v in got["model_version_status"]] == ["124", "123"]
    assert (
        call_json(tf_server, f"/v1/models/{name}/versions/124")[1]["model_version_status"][0][
            "version"
        ]
        == "124"
    )
    assert (
        call_json(tf_server, f"/v1/models/{name}/labels/stable")[1]["model_version_status"][0][
            "version"
        ]
        == "123"
    )
    # latest, version, label all route to a loaded version; metadata names the resolved version
    assert call_json(tf_server, f"/v1/models/{name}/metadata")[1]["model_spec"]["version"] == "124"
    assert (
        call_json(tf_server, f"/v1/models/{name}/labels/stable/metadata")[1]["model_spec"][
            "version"
        ]
        == "123"
    )
    body = {"instances": [[1.0]]}
    assert call_json(tf_server, f"/v1/models/{name}/versions/123:predict", body) == (
        200,
        {"predictions": [[2.5]]},
    )
    assert call_json(tf_server, f"/v1/models/{name}/labels/canary:predict", body)[0] == 200
    assert call_json(tf_server, f"/V1/MODELS/{name}/VERSIONS/00123:PREDICT", body)[0] == 200


def test_gzip_body(tf_server):
    body = gzip.compress(json.dumps({"instances": [2.0]}).encode())
    assert call_json(
        tf_server, "/v1/models/default:predict", body, headers={"Content-Encoding": "gzip"}
    ) == (200, {"predictions": [3.0]})


ERRORS = [
    # (method, path, body, status, message or substring)
    ("POST", "/v1/models/default:predict", b"{bad json", 400, "JSON Parse error: "),
    ("POST", "/v1/models/default:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/default:predict", b"[1, 2]", 400, "Is not object"),
    (
        "POST",
        "/v1/models/default:predict",
        {"foo": [1.0]},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": []},
        400,
        "No values in 'instances' array",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": 1.0},
        400,
        "Excepting 'instances' to be an list/array",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [1.0], "inputs": [1.0]},
        400,
        "expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [[1.0, 2.0], [1.0, 2.0, 3.0]]},
        400,
        "Expecting tensor size: 2 but got: 3",
    ),
    ("POST", "/v1/models/default:predict", {"instances": [1.0, [1.0]]}, 400, "Expecting shape"),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": ["x"]},
        400,
        'JSON Value: "x" Type: String is not of expected type: float',
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"inputs": [[1.0], "x"]},
        400,
        "found at incorrect level",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [1.0], "signature_name": "s"},
        400,
        'Serving signature name: "s" not found in signature def',
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [1.0], "signature_name": 3},
        400,
        "'signature_name' key must be a string value.",
    ),
    (
        "POST",
        "/v1/models/foo:predict",
        {"instances": [1.0]},
        404,
        "Servable not found for request: Latest(foo)",
    ),
    (
        "POST",
        "/v1/models/foo/versions/99:predict",
        {"instances": [1.0]},
        404,
        "Servable not found for request: Specific(foo, 99)",
    ),
    (
        "POST",
        "/v1/models/default/versions/99:predict",
        {"instances": [1.0]},
        404,
        "Servable not found for request: Specific(default, 99)",
    ),
    (
        "POST",
        "/v1/models/default/labels/nope:predict",
        {"instances": [1.0]},
        400,
        "Unrecognized servable version label: nope",
    ),
    ("GET", "/v1/models/foo", None, 404, "Could not find any versions of model foo"),
    ("GET", "/v1/models/foo/metadata", None, 404, "Servable not found for request: Latest(foo)"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    (
        "GET",
        "/v1/models/default:predict",
        None,
        400,
        "Malformed request: GET /v1/models/default:predict",
    ),
    (
        "POST",
        "/v1/models/default",
        {"instances": [1.0]},
        400,
        "Malformed request: POST /v1/models/default",
    ),
    ("POST", "/v1/models/default:explain", {"instances": [1.0]}, 400, "Malformed request: POST"),
    (
        "POST",
        "/v1/models/default:classify",
        {"examples": [{"x": 2.0}]},
        400,
        "Expected classification signature outputs to contain at least one of "
        '"classes" or "scores"',
    ),
    (
        "POST",
        "/v1/models/default:regress",
        {"signature_name": "regress_x_to_y"},
        400,
        "When method is classify, key 'examples' is expected and was not found",
    ),
    (
        "POST",
        "/v1/models/default:regress",
        {"signature_name": "regress_x_to_y", "examples": [1]},
        400,
        "Example must be JSON object but got JSON Number",
    ),
    (
        "POST",
        "/v1/models/default:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
        400,
        "Unexpected element type in feature: x expecting type: float",
    ),
    (
        "POST",
        "/v1/models/default/versions/abc:predict",
        {"instances": [1.0]},
        400,
        "Malformed request: POST /v1/models/default/versions/abc:predict",
    ),
    (
        "POST",
        "/v1/models/default/versions/99999999999999999999:predict",
        {"instances": [1.0]},
        400,
        "Failed to convert version: 99999999999999999999 to numeric.",
    ),
    (
        "POST",
        "/v1/models/default/versions/123/labels/x:predict",
        {"instances": [1.0]},
        400,
        "Malformed request: POST",
    ),
    (
        "PUT",
        "/v1/models/default:predict",
        {"instances": [1.0]},
        400,
        "Malformed request: PUT /v1/models/default:predict",
    ),
    ("DELETE", "/v1/models/default", None, 400, "Malformed request: DELETE /v1/models/default"),
    ("POST", "/v1/models/default:predict", b"\xff\xfe", 400, "JSON Parse error: "),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [[1.0], [[1.0]]]},
        400,
        "Expecting shape [1] but got: [1,1]",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [True]},
        400,
        "JSON Value: true Type: True is not of expected type: float",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [None]},
        400,
        "JSON Value: null Type: Null is not of expected type: float",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [{"b64": "AAA"}]},
        400,
        "Type: Object is not of expected type",
    ),
    (
        "POST",
        "/v1/models/default:predict",
        {"instances": [{"x": 1.0, "extra": 2.0}]},
        400,
        "JSON object: does not have named input: extra",
    ),
    ("POST", "/v1/models/default:predict", {"instances": [{}]}, 400, "keys must be equal to: x"),
    (
        "POST",
        "/v1/models/default:regress",
        {"signature_name": "regress_x_to_y", "examples": "x"},
        400,
        "Expecting 'examples' value to be an list/array",
    ),
    (
        "POST",
        "/v1/models/default:classify",
        {"signature_name": "nope", "examples": [{"x": 1.0}]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        "GET",
        "/v1/models/default/versions/7",
        None,
        404,
        "Could not find version 7 of model default",
    ),
    ("GET", "/v1/models/default/labels/x", None, 400, "Unrecognized servable version label: x"),
]


@pytest.mark.parametrize(
    "method,path,body,status,message", ERRORS, ids=[f"{e[0]} {e[1]} {e[4][:30]}" for e in ERRORS]
)
def test_errors_then_still_serving(tf_server, method, path, body, status, message):
    got_status, got = call_json(tf_server, path, body, method=method)
    assert got_status == status, got
    assert set(got) == {"error"} and message in got["error"], got["error"]
    assert call_json(tf_server, "/v1/models/default:predict", {"instances": [2.0]}) == (
        200,
        {"predictions": [3.0]},
    )


def test_outside_v1_is_plain_404(tf_server):
    assert call(tf_server, "/v2/models/default")[0] == 404
    assert call(tf_server, "/")[0] == 404
