"""The REST server's numpy fast path for dense numeric requests answers exactly like the full
JSON converter, or steps aside (returns None) so the full converter answers, errors included."""

import json
import random

import numpy as np
import pytest

from serving import json_tensor
from serving.errors import ServingError
from serving.rest import _dense_numeric_request

LEAVES = [1.5, -2.25, 0.1, 3, -7, 2**24 - 1, 2**24, 2**31, 2**53, 2**63, 2**64, True, False,
          None, "x", "1.5", {"b64": "AA=="}, float("nan"), float("inf"), -float("inf"), 1e39,
          -1e39, 3.4e38, 0, [], [1.0]]


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
    return {"inputs": rng.choice([{"x": value}, {"x": value, "y": 1}, {"y": value},
                                  {"x": value, "b64": "AA=="}, {"b64": "AA=="}])}


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
