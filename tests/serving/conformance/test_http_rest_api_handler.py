"""Port of TF Serving's `model_servers/http_rest_api_handler_test.cc` (tensorflow/serving
commit 9d981c5), run over the wire against the embedded server, started like the C++ test's
ServerCore: model `saved_model_half_plus_two_2_versions` from TF Serving's testdata, specific
version 123, label `Version_Label` -> 123, no timeout. Expected bodies, status codes
(the canonical code through http_server.cc's mapping) and message substrings are the
original's. Ported: 9 cases; not applicable: NOT_APPLICABLE (0 cases).

Below the ported cases, the known incompatibilities of issue #20 on REST, each answered as
TF Serving answers it, and the hostile-client cases (gzip, echoed input, timeout)."""

import gzip
import json
import re
import zlib

import numpy as np
import pytest

from tests.serving.conformance.conftest import HANDLER_MODEL, call
from tests.serving.conftest import tfs_testdata

NOT_APPLICABLE = []  # (case name, reason): every case of http_rest_api_handler_test.cc applies
JSON_ONLY = {"Content-Type": "application/json"}


def request(server, method, path, body=""):
    status, headers, text = call(server, method, path, body)
    return status, headers, text


def error_of(server, method, path, body=""):
    status, headers, text = request(server, method, path, body)
    doc = json.loads(text)
    assert set(doc) == {"error"}, doc
    assert headers["Content-Type"] == "application/json"
    return status, doc["error"]


def ok_json(server, method, path, body=""):
    status, headers, text = request(server, method, path, body)
    assert status == 200, text
    assert (
        headers["Content-Type"] == "application/json"
    )  # exactly; HeaderList {{"Content-Type", "application/json"}}
    return json.loads(text)


def test_path_regex(handler_server):
    """kPathRegex: /v1/models is the handler's; /statuspage and /index are not (plain 404)."""
    status, _ = error_of(handler_server, "GET", "/v1/models")
    assert status == 400
    for path in ("/statuspage", "/index"):
        status, headers, _ = request(handler_server, "GET", path)
        assert status == 404 and headers.get("Content-Type") != "application/json"


UNSUPPORTED = [
    ("GET", "/v1/foo", "Malformed request"),
    ("POST", "/v1/foo", "Malformed request"),
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "Malformed request"),
    ("POST", "/v1/models", "Malformed request"),
    ("GET", "/v1/models/foo:predict", "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
]


def test_unsupported_api_calls(handler_server):
    for method, path, message in UNSUPPORTED:
        status, error = error_of(handler_server, method, path)
        assert status == 400 and message in error, (method, path, error)


def test_predict_model_name_version_errors(handler_server):
    for path in (
        "/v1/models/foo:predict",
        "/v1/models/foo/versions/50:predict",
        f"/v1/models/{HANDLER_MODEL}99:predict",
    ):
        status, _ = error_of(handler_server, "POST", path, '{ "instances": [1] }')
        assert status == 404, path


def test_predict_request_errors(handler_server):
    path = f"/v1/models/{HANDLER_MODEL}:predict"
    cases = [
        (path, "", "JSON Parse error: The document is empty"),
        (path, "instances = [1, 2]", "JSON Parse error: Invalid value"),
        (path, '{ "instances": ["x", "y"] }', "not of expected type: float"),
        (
            f"/v1/models/{HANDLER_MODEL}/labels/Version_Nonexistent:predict",
            '{ "instances": ["x", "y"] }',
            "Unrecognized servable version label",
        ),
        (path, '{ "signature_name": 100 }', "'signature_name' key must be a string value."),
    ]
    for url, body, message in cases:
        status, error = error_of(handler_server, "POST", url, body)
        assert status == 400 and message in error, (body, error)


def test_predict(handler_server):
    base = f"/v1/models/{HANDLER_MODEL}"
    cases = [
        (
            f"{base}:predict",
            '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
            {"predictions": [[2.5, 3.0], [3.5, 4.0]]},
        ),
        (f"{base}/versions/123:predict", '{"instances": [1.0, 2.0]}', {"predictions": [2.5, 3.0]}),
        (
            f"{base}/labels/Version_Label:predict",
            '{"instances": [1.0, 2.0]}',
            {"predictions": [2.5, 3.0]},
        ),
        (
            f"{base}/versions/123:predict",
            '{"signature_name": "serving_default", "instances": [3.0, 4.0]}',
            {"predictions": [3.5, 4.0]},
        ),
        (
            f"{base}/versions/123:predict",
            '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}',
            {"outputs": [3.5, 4.0]},
        ),
    ]
    for url, body, expected in cases:
        assert ok_json(handler_server, "POST", url, body) == expected


def test_regress(handler_server):
    body = '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }'
    for url in (":regress", "/versions/123:regress", "/labels/Version_Label:regress"):
        assert ok_json(handler_server, "POST", f"/v1/models/{HANDLER_MODEL}{url}", body) == {
            "results": [42]
        }


def test_classify(handler_server):
    base = f"/v1/models/{HANDLER_MODEL}"
    assert ok_json(
        handler_server,
        "POST",
        f"{base}:classify",
        '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }',
    ) == {"results": [[["", 12]]]}
    assert ok_json(
        handler_server,
        "POST",
        f"{base}/labels/Version_Label:classify",
        '{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }',
    ) == {"results": [[["", 7]]]}


def test_get_status(handler_server):
    expected = {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    for suffix in ("", "/versions/123", "/labels/Version_Label"):
        assert ok_json(handler_server, "GET", f"/v1/models/{HANDLER_MODEL}{suffix}") == expected


def test_get_model_metadata(handler_server):
    expected = json.loads(
        (tfs_testdata(".") / "saved_model_half_plus_two_2_versions_metadata.json").read_text()
    )
    assert ok_json(handler_server, "GET", f"/v1/models/{HANDLER_MODEL}/metadata") == expected


# ---------------------------------------------------------------------------------------------
# Issue #20's REST incompatibilities, answered as TF Serving answers them
# (its behaviour read from util/json_tensor.cc, http_rest_api_util.cc, net_http at 9d981c5)
PREDICT = f"/v1/models/{HANDLER_MODEL}:predict"


def test_float_inputs_are_rounded_and_overflow_to_infinity(handler_server):
    """GetFloat(): 1435774380 rounds to the nearest float, 1e39 and DBL_MAX become inf
    (y = 0.5x + 2)."""
    got = ok_json(
        handler_server,
        "POST",
        PREDICT,
        '{"instances": [1435774380, 1e39, -1.7976931348623157e308]}',
    )
    x = np.float32(1435774380)
    assert got == {
        "predictions": [
            float(np.float32(x * np.float32(0.5) + np.float32(2))),
            float("inf"),
            float("-inf"),
        ]
    }


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"instances": [1e400]}', "JSON Parse error: Number too big to be stored in double"),
        (
            '{"instances": [%s]}' % ("9" * 5000),
            "JSON Parse error: Number too big to be stored in double",
        ),
        ('{"instances": [1.]}', "JSON Parse error: Miss fraction part in number"),
        ('{"instances": [1, 2}', "JSON Parse error: Missing a comma or ']' after an array element"),
        ('{"instances" [1]}', "JSON Parse error: Missing a colon after a name of object member"),
        ('{"instances": ["\\ud800"]}', "JSON Parse error: The surrogate pair in string is invalid"),
        ('{"instances": ["\\udc00"]}', "JSON Parse error: The surrogate pair in string is invalid"),
        ('{"instances": ["x]}', "JSON Parse error: Missing a closing quotation mark in string"),
        ("   ", "JSON Parse error: The document is empty"),
        ('{"instances": [' + "[" * 70 + "1" + "]" * 70 + "]}", "tensor parsing error: x"),
    ],
)
def test_bad_bodies_are_400_with_tf_serving_messages(handler_server, body, message):
    status, error = error_of(handler_server, "POST", PREDICT, body)
    assert status == 400 and message in error, error


def test_rapidjson_reading_nan_infinity_and_trailing_text(handler_server):
    """kParseNanAndInfFlag (NaN, Inf, -Infinity) and kParseStopWhenDoneFlag (text after the
    document is ignored), and kParseIterativeFlag: any nesting depth outside the inputs."""
    got = ok_json(handler_server, "POST", PREDICT, '{"instances": [NaN, Inf, -Infinity]} trailing')
    assert got == {"predictions": [None, float("inf"), float("-inf")]} or str(got) == str(
        {"predictions": [float("nan"), float("inf"), float("-inf")]}
    )
    deep = '{"instances": [1.0], "nested": ' + "[" * 100000 + "]" * 100000 + "}"
    assert ok_json(handler_server, "POST", PREDICT, deep) == {"predictions": [2.5]}
    status, error = error_of(
        handler_server, "POST", PREDICT, '{"signature_name": ' + "[" * 100000 + "]" * 100000 + "}"
    )
    assert status == 400 and "'signature_name' key must be a string value." in error
    assert len(error.encode()) < 400  # the echoed value is cut at 256 bytes


def test_version_numbers_beyond_int64_and_non_ascii_digits(handler_server):
    for version in ("9" * 5000, str(2**63)):
        status, error = error_of(
            handler_server,
            "POST",
            f"/v1/models/{HANDLER_MODEL}/versions/{version}:predict",
            '{"instances": [1.0]}',
        )
        assert status == 400 and "Failed to convert version" in error
    status, error = error_of(handler_server, "GET", f"/v1/models/{HANDLER_MODEL}/versions/%D9%A3")
    assert status == 400 and "Malformed request" in error  # RE2's \d is ASCII: "٣" is no version


def test_echoed_input_is_cut_at_256_bytes(handler_server):
    """JsonValueToDebugString: a 2 MB body echoed in an error message stops once 256 bytes are
    written (the value being written when the limit is reached is finished)."""
    body = json.dumps({"instances": [], "pad": ["x" * 100] * 20000})
    status, error = error_of(handler_server, "POST", PREDICT, body)
    assert status == 400 and error.endswith(" No values in 'instances' array")
    echoed = error[len("JSON Value: ") : -len(" No values in 'instances' array")]
    assert (
        echoed.startswith('{\n    "instances": [],\n    "pad": ["xxx')
        and 256 <= len(echoed) < 256 + 104
    )


def test_cors_preflight(handler_server):
    status, headers, text = call(
        handler_server, "OPTIONS", PREDICT, headers={"Origin": "http://example.com"}
    )
    assert status == 200 and text == "" and headers["Content-Type"] == "application/json"
    status, _, text = call(handler_server, "OPTIONS", PREDICT)
    assert (
        status == 400 and "Origin header is missing in CORS preflight" in json.loads(text)["error"]
    )


def test_garbage_never_gets_a_500(handler_server):
    rng = np.random.default_rng(20)
    bodies = [bytes(rng.integers(0, 256, size=n, dtype=np.uint8)) for n in (1, 7, 64, 1000)]
    bodies += [
        b'{"instances": [' + bytes(rng.integers(0, 256, size=50, dtype=np.uint8)) + b"]}",
        b'{"instances": [{"b64": 1}]}',
        b'{"instances": [[1.0], {"x": [[[]]]}]}',
        b'{"inputs": {"x": {"b64": "!!"}}}',
        b'{"examples": [{"x": [1e39, -1e39]}], "signature_name": "regress_x_to_y"}',
        b'{"instances": [true, "a", null, {}]}',
        '{"instances": ["\udfff"]}'.encode("utf-8", "surrogatepass"),
    ]
    paths = [
        PREDICT,
        f"/v1/models/{HANDLER_MODEL}:classify",
        f"/v1/models/{HANDLER_MODEL}:regress",
        "/v1/models/%FF%FE:predict",
        "/v1/models/a/labels/%ZZ:predict",
    ]
    for path in paths:
        for body in bodies:
            status, _, text = call(handler_server, "POST", path, body)
            assert status < 500, (path, body, text)
            assert not re.search(
                r"Traceback|\b[A-Z]\w*(?:Error|Exception)\b", json.loads(text)["error"]
            ), text


# ---------------------------------------------------------------------------------------------
# gzip bodies: inflated only with Content-Encoding: gzip, streaming, at most 100 MB (patched lower)
def test_gzip_needs_its_header(handler_server):
    body = gzip.compress(b'{"instances": [1.0]}')
    assert ok_json_with(handler_server, body, {"Content-Encoding": "gzip"}) == (
        200,
        {"predictions": [2.5]},
    )
    status, doc = ok_json_with(handler_server, body, {})
    assert status == 400 and doc["error"].startswith("JSON Parse error: ")


def ok_json_with(server, body, headers):
    status, _, text = call(server, "POST", PREDICT, body, headers=headers)
    return status, json.loads(text)


def test_gzip_bomb_is_refused_beyond_the_cap(handler_server, monkeypatch):
    import serving.rest

    assert (
        serving.rest.MAX_INFLATED_BYTES == 100 * 1024 * 1024
    )  # TF Serving's ZLib::kMaxUncompressedBytes
    monkeypatch.setattr(serving.rest, "MAX_INFLATED_BYTES", 4 * 1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    prefix = b'{"instances": [1.0], "pad": "'
    bomb = (
        compressor.compress(prefix)
        + compressor.compress(b"x" * (64 * 1024 * 1024))
        + compressor.flush()
    )
    assert len(bomb) < 200 * 1024
    status, doc = ok_json_with(handler_server, bomb, {"Content-Encoding": "gzip"})
    assert status == 400 and "inflates to more than 4194304 bytes" in doc["error"]
    small = gzip.compress(b'{"instances": [1.0], "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}')
    assert ok_json_with(handler_server, small, {"Content-Encoding": "gzip"}) == (
        200,
        {"predictions": [2.5]},
    )
    status, doc = ok_json_with(handler_server, bomb[:1000], {"Content-Encoding": "gzip"})
    assert status == 400 and "Failed to decompress the gzip request body" in doc["error"]


def test_unknown_model_names_leave_no_state(handler_server):
    """Requests for 500 distinct unknown names: 404 each, and no per-name metrics state."""
    for i in range(500):
        status, _ = error_of(
            handler_server, "POST", f"/v1/models/unknown-{i}:predict", '{"instances": [1.0]}'
        )
        assert status == 404
    ok_json(handler_server, "POST", PREDICT, '{"instances": [1.0]}')
    page = handler_server.metrics.render()
    assert "unknown-" not in page and HANDLER_MODEL in page


def test_a_bug_is_a_500_without_python_internals(handler_server, monkeypatch):
    """The catch-all: an unexpected exception inside the server answers 500 with a plain
    message (the traceback goes to the log), never the exception's name or text."""
    from serving import json_tensor

    def broken(doc, inputs):
        raise KeyError("internal detail")

    monkeypatch.setattr(json_tensor, "predict_request", broken)
    status, error = error_of(handler_server, "POST", PREDICT, '{"instances": [{"x": 1.0}]}')
    assert status == 500 and error == "Internal error while processing the request"
