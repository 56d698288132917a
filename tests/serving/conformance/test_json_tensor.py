"""Port of TF Serving's `tensorflow_serving/util/json_tensor_test.cc` (tensorflow/serving
commit 9d981c5) against `serving.json_tensor`: the same JSON bodies, expected tensors (as numpy
arrays instead of TensorProtos), expected JSON and error substrings. The DeeplyNested and
float-rounding cases also run over the wire in test_http_rest_api_handler.py.

Ported: 41 cases (29 TEST, 3 TYPED_TEST x 2 request types, 6 result / status TEST); not
applicable: see NOT_APPLICABLE (0 cases). Adapted, not dropped: the classify / regress request
cases compare the serialized Examples this server hands the model (the context merged into
each, as ExampleListWithContext means) instead of the request proto; MakeJsonFromStatus is
checked on the server's error / success replies."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from serving import json_tensor
from serving.errors import ServingError

NOT_APPLICABLE = []  # (case name, reason): every case of json_tensor_test.cc applies


def fill(text, infomap):
    """FillPredictRequestFromJson: (tensors, row format?, signature name)."""
    doc = json_tensor.parse_json(text)
    name = json_tensor.signature_name(doc)
    tensors, row = json_tensor.predict_request(doc, infomap)
    return tensors, row, name


def fill_error(text, infomap):
    with pytest.raises(ServingError) as caught:
        fill(text, infomap)
    assert caught.value.code == "INVALID_ARGUMENT"
    return caught.value.message


def same(array, dtype, shape, values):
    assert array.dtype == dtype and array.shape == tuple(shape), (array.dtype, array.shape)
    assert np.array_equal(
        array.reshape(-1), np.array(values, dtype=dtype), equal_nan=array.dtype.kind == "f"
    )


def test_single_unnamed_tensor():
    tensors, row, _ = fill('{"instances": [[1,2],[3,4],[5,6]]}', {"default": "int32"})
    assert row and list(tensors) == ["default"]
    same(tensors["default"], np.int32, [3, 2], [1, 2, 3, 4, 5, 6])


@pytest.mark.slow  # 500000 levels, as the original; 100000 run over the wire unmarked
def test_deeply_nested_well_formed():
    body = '{"instances":[1], "nested":' + "[" * 500000 + "]" * 500000 + "}"
    tensors, _, _ = fill(body, {"default": "int32"})
    assert list(tensors) == ["default"]


@pytest.mark.slow  # 500000 levels, as the original; 100000 run over the wire unmarked
def test_deeply_nested_malformed():
    body = '{"signature_name":' + "[" * 500000 + "]" * 500000 + "}"
    assert "key must be a string value" in fill_error(body, {"default": "int32"})


def test_mixed_input_for_float_tensor():
    tensors, row, _ = fill('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', {"default": "float"})
    assert row
    same(tensors["default"], np.float32, [7], [1, 2.0, 3, 4, 5.003, 0.007, 0.0])


def test_mixed_input_for_double_tensor():
    tensors, _, _ = fill('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', {"default": "double"})
    same(tensors["default"], np.float64, [7], [1.0, 2, 3, 4, 0.662, 0, 0.0])


def test_float_tensor_with_precision_loss():
    for body in ('{"instances": [1435774380]}', '{"instances": [1435774380.0]}'):
        tensors, _, _ = fill(body, {"default": "float"})
        same(tensors["default"], np.float32, [1], [np.float32(1435774380)])


def test_float_tensor_that_exceeds_max_returns_inf():
    # absl::Substitute writes std::numeric_limits<double>::max() with six digits
    for text, expected in (("1.79769e+308", np.inf), ("-1.79769e+308", -np.inf)):
        tensors, _, _ = fill(f'{{ "instances": [{text}] }}', {"default": "float"})
        same(tensors["default"], np.float32, [1], [expected])


def test_float_tensor_that_exceeds_min_returns_zero():
    for text in ("2.22507e-308", "-2.22507e-308"):
        tensors, _, _ = fill(f'{{ "instances": [{text}] }}', {"default": "float"})
        value = tensors["default"][0]
        assert value == 0 and math.copysign(1, value) == math.copysign(1, float(text))


def test_single_unnamed_tensor_with_signature():
    tensors, row, name = fill(
        '{"signature_name": "predict_images", "instances": [[1,2]]}', {"default": "int32"}
    )
    assert name == "predict_images" and row
    same(tensors["default"], np.int32, [1, 2], [1, 2])


def test_tensor_from_non_null_terminated_buffer():
    buffer = memoryview(b'{"instances": [[1,2],[3,4],[5,6]]}X')[:-1]
    tensors, _, _ = fill(bytes(buffer), {"default": "int32"})
    same(tensors["default"], np.int32, [3, 2], [1, 2, 3, 4, 5, 6])


def test_single_unnamed_tensor_base64_scalars():
    tensors, _, _ = fill(
        '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}', {"default": "string"}
    )
    assert tensors["default"].shape == (2,) and list(tensors["default"]) == [b"hello", b"world"]


def test_single_unnamed_tensor_base64_lists():
    tensors, _, _ = fill(
        '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
        {"default": "string"},
    )
    assert tensors["default"].shape == (2, 1) and list(tensors["default"].reshape(-1)) == [
        b"hello",
        b"world",
    ]


def test_single_named_tensor_base64():
    tensors, _, _ = fill(
        '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
        {"default": "string"},
    )
    assert tensors["default"].shape == (1, 2, 1) and list(tensors["default"].reshape(-1)) == [
        b"hello",
        b"world",
    ]


def test_multiple_named_tensor():
    infomap = {
        "int_tensor": "int32",
        "str_tensor": "string",
        "float_tensor": "float",
        "dbl_tensor": "double",
    }
    tensors, row, _ = fill(
        """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
         "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
         "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}
    ]}""",
        infomap,
    )
    assert row and len(tensors) == 4
    same(tensors["int_tensor"], np.int32, [2, 3, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
    assert tensors["str_tensor"].shape == (2, 2)
    assert list(tensors["str_tensor"].reshape(-1)) == [b"foo", b"bar", b"baz", b"bat"]
    same(tensors["float_tensor"], np.float32, [2, 2], [1.0, np.nan, 2.0, np.inf])
    same(tensors["dbl_tensor"], np.float64, [2, 1], [np.nan, 2.0])


def test_single_unnamed_tensor_columnar_format():
    for body in (
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
        '{"inputs": [[[1,2],[3,4],[5,6]]]}',
    ):
        tensors, row, _ = fill(body, {"int_tensor": "int32"})
        assert not row
        same(tensors["int_tensor"], np.int32, [1, 3, 2], [1, 2, 3, 4, 5, 6])


def test_multiple_named_tensor_columnar_format():
    tensors, row, _ = fill(
        """{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],
                                          "bin_tensor": { "b64" : "aGVsbG8=" }}}""",
        {"int_tensor": "int32", "str_tensor": "string", "bin_tensor": "string"},
    )
    assert not row and len(tensors) == 3
    same(tensors["int_tensor"], np.int32, [1, 3, 2], [1, 2, 3, 4, 5, 6])
    assert tensors["str_tensor"].shape == (2,) and list(tensors["str_tensor"]) == [b"foo", b"bar"]
    assert tensors["bin_tensor"].shape == () and tensors["bin_tensor"][()] == b"hello"


def test_single_unnamed_tensor_errors():
    infomap = {"default": "int32"}
    assert "document is empty" in fill_error("", infomap)
    assert "must be a string value" in fill_error(
        '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', infomap
    )
    assert "Not formatted correctly" in fill_error(
        '{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', infomap
    )
    assert "Expecting tensor size" in fill_error('{"instances": [[1,2],[3,4],[5,6,7]]}', infomap)
    assert "Expecting shape" in fill_error('{"instances": [[1,2],[3,4],[[5,6]]]}', infomap)
    assert "Expecting shape" in fill_error('{"instances": [1, [1]]}', infomap)
    assert "not of expected type" in fill_error('{"instances": [[1,2],["a", "b"]]}', infomap)


def test_multiple_named_tensor_errors():
    infomap = {"int_tensor": "int32", "str_tensor": "string"}
    assert "Expecting shape" in fill_error(
        """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
        infomap,
    )
    assert "Expecting tensor size" in fill_error(
        """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""",
        infomap,
    )
    assert "Expecting object but got list" in fill_error(
        """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        [1, 20, 30],
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
        infomap,
    )
    assert "Expecting value/list but got object" in fill_error(
        '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}', {"str_tensor": "string"}
    )


# ------------------------------------------------------------------ MakeJsonFromTensors
def as_tokens(text):
    """A JSON document with every number kept as its text (CompareJsonAllValuesAsStrings)."""
    return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)


INT_2x3x2 = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2], dtype=np.int32).reshape(2, 3, 2)
BYTES_2x2 = np.array([b"hello", b"world", b"tf", b"serving"], dtype=object).reshape(2, 2)


def test_from_json_single_tensor():
    outputs = {"int_tensor": INT_2x3x2}
    expected = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]
    assert json.loads(json_tensor.predict_response_json(outputs, True)) == {"predictions": expected}
    assert json.loads(json_tensor.predict_response_json(outputs, False)) == {"outputs": expected}


def test_from_json_single_scalar_tensor():
    outputs = {"int_tensor": np.array([1, 2, 3, 4, 5], dtype=np.int32)}
    assert json.loads(json_tensor.predict_response_json(outputs, True)) == {
        "predictions": [1, 2, 3, 4, 5]
    }
    assert json.loads(json_tensor.predict_response_json(outputs, False)) == {
        "outputs": [1, 2, 3, 4, 5]
    }


def test_from_json_single_bytes_tensor():
    text = json_tensor.predict_response_json({"str_tensor_bytes": BYTES_2x2}, True)
    assert json.loads(text) == {
        "predictions": [
            [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
        ]
    }


def test_from_json_single_float_tensor_six_digit_precision():
    values = np.array(
        [9000000, 999999, 0.50000, 0.0003, 0.00003, 555557.5], dtype=np.float32
    ).reshape(2, 3)
    text = json_tensor.predict_response_json({"float_tensor": values}, True)
    assert as_tokens(text) == as_tokens(
        '{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}'
    )


def test_from_json_single_float_tensor_non_finite():
    values = np.array([np.nan, np.inf, 3, -np.inf], dtype=np.float32).reshape(2, 2)
    text = json_tensor.predict_response_json({"float_tensor": values}, True)
    assert as_tokens(text) == as_tokens('{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}')


def response_error(outputs, row=True):
    with pytest.raises(ServingError) as caught:
        json_tensor.predict_response_json(outputs, row)
    assert caught.value.code == "INVALID_ARGUMENT" and caught.value.http_status == 400
    return caught.value.message


def test_from_json_single_tensor_errors():
    assert "empty tensor map" in response_error({})
    assert "tensor type: complex64" in response_error(
        {"tensor": np.array([1.0, 2.0], dtype=np.complex64)}
    )
    assert "no shape information" in response_error({"tensor": np.array(1, dtype=np.int32)})


def test_from_json_multiple_named_tensors():
    outputs = {
        "int_tensor": INT_2x3x2,
        "str_tensor": np.array([b"foo", b"bar", b"baz", b"bat"], dtype=object).reshape(2, 2),
        "float_tensor": np.array([[1.0], [2.0]], dtype=np.float32),
        "double_scalar_tensor": np.array([8.0, 9.0], dtype=np.float64),
        "str_tensor_bytes": BYTES_2x2,
    }
    assert json.loads(json_tensor.predict_response_json(outputs, True)) == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [[1, 2], [3, 4], [5, 6]],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [[7, 8], [9, 0], [1, 2]],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }
    assert json.loads(json_tensor.predict_response_json(outputs, False)) == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0],
            "float_tensor": [[1.0], [2.0]],
            "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [
                [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            ],
        }
    }


def test_from_json_multiple_named_tensors_errors():
    outputs = {
        "int_tensor": np.arange(1, 7, dtype=np.int32).reshape(2, 3),
        "str_tensor": np.array([[b"foo", b"bar", b"baz"]], dtype=object),
    }
    assert "inconsistent batch size" in response_error(outputs)


def test_from_json_single_zero_batch_tensor():
    text = json_tensor.predict_response_json({"int_tensor": np.zeros((0, 2), dtype=np.int32)}, True)
    assert json.loads(text) == {"predictions": []}


def test_from_json_multiple_zero_batch_tensors():
    outputs = {
        "str_tensor": np.zeros((0, 1, 2), dtype=object),
        "float_tensor": np.zeros((0, 3, 4), dtype=np.float32),
    }
    assert json.loads(json_tensor.predict_response_json(outputs, True)) == {"predictions": []}


def test_from_json_multiple_zero_batch_tensors_errors():
    outputs = {
        "int_tensor": np.zeros((0, 2), dtype=np.int32),
        "str_tensor": np.array([[b"foo", b"bar"]], dtype=object),
    }
    assert "inconsistent batch size" in response_error(outputs)


# ------------------------------------------------------------------ classify / regress requests
def examples(text, method):
    """FillClassificationRequestFromJson / FillRegressionRequestFromJson: the request's
    examples, each merged with the context as the servable receives them."""
    doc = json_tensor.parse_json(text)
    name = json_tensor.signature_name(doc)
    return name, [
        tf.train.Example.FromString(s)
        for s in json_tensor.examples_request(doc, method, tf.train.Example)
    ]


def features(example):
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[key] = (kind, list(getattr(feature, kind).value))
    return out


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_request_no_context(method):
    _, got = examples(
        """{"examples": [
        {"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0 ], "age": 20},
        {"names": [ "baz" ], "ratings": 6.0}]}""",
        method,
    )
    assert [features(e) for e in got] == [
        {
            "names": ("bytes_list", [b"foo", b"bar"]),
            "ratings": ("float_list", [8.0, 9.0]),
            "age": ("int64_list", [20]),
        },
        {"names": ("bytes_list", [b"baz"]), "ratings": ("float_list", [6.0])},
    ]


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_request_with_context_and_signature(method):
    name, got = examples(
        """{"signature_name": "custom_signture",
        "context": {"query": "pizza", "location": [ "sfo" ]},
        "examples": [
          {"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0, NaN, Infinity ], "age": 20},
          {"names": [ "baz", { "b64": "aGVsbG8=" } ], "ratings": 6.0,
           "intboolmix": [ 1, true, false ]},
          {"names": "bar", "ratings": -Infinity}]}""",
        method,
    )
    assert name == "custom_signture"
    context = {"query": ("bytes_list", [b"pizza"]), "location": ("bytes_list", [b"sfo"])}
    want = [
        {
            "names": ("bytes_list", [b"foo", b"bar"]),
            "ratings": ("float_list", [8.0, 9.0, "nan", math.inf]),
            "age": ("int64_list", [20]),
        },
        {
            "names": ("bytes_list", [b"baz", b"hello"]),
            "ratings": ("float_list", [6.0]),
            "intboolmix": ("int64_list", [1, 1, 0]),
        },
        {"names": ("bytes_list", [b"bar"]), "ratings": ("float_list", [-math.inf])},
    ]
    for example, expected in zip(got, want, strict=True):
        found = features(example)
        kind, ratings = found["ratings"]
        found["ratings"] = (kind, ["nan" if math.isnan(v) else v for v in ratings])
        assert found == {**context, **expected}


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_json_errors(method):
    def error(text):
        with pytest.raises(ServingError) as caught:
            examples(text, method)
        assert caught.value.code == "INVALID_ARGUMENT"
        return caught.value.message

    assert "'signature_name' key must be a string" in error(
        '{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}'
    )
    assert "Example must be JSON object" in error('{"context": [ { "names": [ "foo", "bar" ] } ]}')
    assert "list/array" in error('{"examples": { "names": [ "foo", "bar" ] }}')
    assert "Example must be JSON object" in error(
        '{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}'
    )
    assert "names has element with unexpected JSON type: Null" in error(
        '{"examples": [ { "names": [ 10, null ] } ]}'
    )
    assert "feature: names expecting type: int64" in error(
        '{"examples": [ { "names": [ 10, 10.0 ] } ]}'
    )
    assert "names has element with unexpected JSON type: Object" in error(
        '{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}'
    )
    assert "names has element with unexpected JSON type: Array" in error(
        '{"examples": [ { "names": [ [10], 20 ] } ]}'
    )
    assert "Only int64_t is supported" in error(
        '{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}'
    )


# ------------------------------------------------------------------ results and status
def _result(kind, text):
    from google.protobuf import text_format
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    message = {
        "classification": classification_pb2.ClassificationResult,
        "regression": regression_pb2.RegressionResult,
    }[kind]()
    return text_format.Parse(text, message)


def test_json_from_classification_result():
    result = _result(
        "classification",
        """
        classifications {
          classes { label: "car" score: 0.2 } classes { label: "bike" score: 0.7 }
          classes { label: "bus" score: 0.1 } }
        classifications {
          classes { label: "car" score: 0.7 } classes { label: "bike" score: 0.1 }
          classes { label: "bus" score: 0.2 } }""",
    )
    assert json.loads(json_tensor.classify_response_json(result)) == {
        "results": [
            [["car", 0.2], ["bike", 0.7], ["bus", 0.1]],
            [["car", 0.7], ["bike", 0.1], ["bus", 0.2]],
        ]
    }


def test_json_from_regression_result():
    result = _result(
        "regression",
        "regressions { value: 0.2 } regressions { value: 0.9 } regressions { value: 1.0 }",
    )
    assert json.loads(json_tensor.regress_response_json(result)) == {"results": [0.2, 0.9, 1.0]}


def test_json_from_regression_result_with_non_finite():
    result = _result(
        "regression",
        " ".join(
            f"regressions {{ value: {v} }}" for v in ["0.2", "Infinity", "1.0", "-Infinity", "NaN"]
        ),
    )
    text = json_tensor.regress_response_json(result)
    assert as_tokens(text) == as_tokens('{ "results": [ 0.2, Infinity, 1.0, -Infinity, NaN ] }')


def test_json_from_result_errors():
    with pytest.raises(ServingError, match="empty ClassificationResults"):
        json_tensor.classify_response_json(_result("classification", ""))
    with pytest.raises(ServingError, match="empty RegressionResults"):
        json_tensor.regress_response_json(_result("regression", ""))


def test_status_ok():
    """MakeJsonFromStatus(OK) writes nothing: a successful reply carries no "error" key."""
    from serving.rest import _json_response

    response = _json_response(
        json_tensor.regress_response_json(_result("regression", "regressions { value: 1 }"))
    )
    assert "error" not in json.loads(response.body)


def test_status_error():
    from serving.errors import invalid
    from serving.rest import _error

    for message in ('Bad key: "key"', "Bad key: 'key'"):
        response = _error(invalid(message))
        assert response.status == 400 and json.loads(response.body) == {"error": message}
