"""The REST server's fast paths answer exactly like the slow ones, or step aside so that the slow
ones answer, errors included: the numpy path for dense numeric requests against the full JSON
converter, and orjson parsing of bodies against json.loads."""

import json
import random

import numpy as np
import pytest

from serving import json_tensor
from serving.errors import ServingError
from serving.rest import _dense_numeric_request

LEAVES = [
    1.5,
    -2.25,
    0.1,
    3,
    -7,
    2**24 - 1,
    2**24,
    2**31,
    2**53,
    2**63,
    2**64,
    True,
    False,
    None,
    "x",
    "1.5",
    {"b64": "AA=="},
    float("nan"),
    float("inf"),
    -float("inf"),
    1e39,
    -1e39,
    3.4e38,
    0,
    [],
    [1.0],
]


def _random_value(rng, depth):
    if depth == 0 or rng.random() < 0.1:
        return rng.choice(LEAVES) if rng.random() < 0.3 else rng.choice([1.5, 2.0, -3.25, 4, 0.5])
    width = rng.randint(1, 3)
    children = [_random_value(rng, depth - 1) for _ in range(width)]
    if rng.random() < 0.7:  # mostly rectangular, sometimes ragged in the last child
        children = [json.loads(json.dumps(children[0])) for _ in range(width)]
        if rng.random() < 0.2:
            children[-1] = _random_value(rng, depth - 1)
    return children


def _random_request(rng):
    value = _random_value(rng, rng.randint(0, 4))
    draw = rng.random()
    if draw < 0.4:
        return {"instances": value}
    if draw < 0.7:
        return {"inputs": value}
    return {
        "inputs": rng.choice(
            [
                {"x": value},
                {"x": value, "y": 1},
                {"y": value},
                {"x": value, "b64": "AA=="},
                {"b64": "AA=="},
            ]
        )
    }


@pytest.mark.parametrize("dtype", ["float", "double", "int32", "int64"])
def test_fast_path_agrees_with_the_full_converter(dtype):
    rng = random.Random(dtype)
    used = 0
    for _ in range(3000):
        request = _random_request(rng)
        fast = _dense_numeric_request(request, {"x": dtype})
        if fast is None:
            continue
        used += 1
        try:
            full = json_tensor.predict_request(request, {"x": dtype})
        except ServingError as error:
            pytest.fail(f"fast path accepted {request} that the converter rejects: {error}")
        assert fast[1] == full[1]
        got, want = fast[0]["x"], full[0]["x"]
        assert got.dtype == want.dtype and got.shape == want.shape, request
        assert np.array_equal(got, want, equal_nan=True), request
    assert used > 100  # the fast path really answered a good share of the requests


def test_fast_path_takes_an_image_batch():
    batch = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    request = json.loads(json.dumps({"instances": batch.tolist()}))
    tensors, row = _dense_numeric_request(request, {"x": "float"})
    np.testing.assert_array_equal(tensors["x"], batch)
    assert row is True


BODIES = [
    b'{"instances": [[0.1, -2.5e-08, 3.4028234663852886e+38, 1e-45], [0, -0.0, 7, 1.0]]}',
    b'{"signature_name": "serving_default", "inputs": {"x": [1, 2], "y": [true, null]}}',
    '{"inputs": {"caf\u00e9": "\u00e9t\u00e9", "a": 1, "a": 2}}'.encode(),
    b'{"instances": [NaN, Infinity, -Infinity, 0.5]}',  # json.loads only
    # 1e400 and lone surrogates are refused as TF Serving refuses them (tests/serving/conformance)
    b'  {"x": [[], {}]}  ',
]


@pytest.mark.parametrize("body", BODIES)
def test_parsed_body_is_what_json_loads_reads(body):
    expected = json.dumps(json.loads(body.decode("utf-8")), sort_keys=True)
    for text in (body, body.decode("utf-8")):
        assert json.dumps(json_tensor.parse_json(text), sort_keys=True) == expected


def test_bodies_without_special_tokens_skip_json_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("json.loads called")

    monkeypatch.setattr(json_tensor.json, "loads", refuse)
    assert json_tensor.parse_json(BODIES[0])["instances"][1] == [0, -0.0, 7, 1.0]
    with pytest.raises(AssertionError, match="json.loads called"):
        json_tensor.parse_json(BODIES[3])


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{bad json", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (
            b'{"instances": [1.0] trailing',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 20",
        ),
        (b"\xff\xfe", "JSON Parse error: Invalid encoding in string. at offset: 0"),
        (b"", "JSON Parse error: The document is empty"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    ],
)
def test_parse_errors_keep_their_messages(body, message):
    with pytest.raises(ServingError) as caught:
        json_tensor.parse_json(body)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.message == message


def test_integers_beyond_64_bits_are_read_as_doubles_like_rapidjson():
    doc = json_tensor.parse_json(b'{"instances": [18446744073709551616, 18446744073709551615]}')
    assert doc["instances"] == [1.8446744073709552e19, 18446744073709551615]
    assert type(doc["instances"][0]) is float and type(doc["instances"][1]) is int
