"""Multi-context attention (Chu et al., CVPR 2017) against its closed form."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_multi_context
from tests.layer_harness import call_layer, harness_test, randomize_weights, to_numpy

test_layer_harness = harness_test(cases_multi_context)


def _conv_same(x, kernel, bias=None):
    """A stride-1 'same' convolution (cross-correlation) in float64, NHWC."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros((*x.shape[:3], kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += padded[:, i : i + height, j : j + width] @ kernel[i, j]
    return out if bias is None else out + bias


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _closed_form(features, unary_kernel, unary_bias, pairwise_kernel, steps):
    unary = _conv_same(features, unary_kernel, unary_bias)
    scores = unary
    for _ in range(steps):
        scores = unary + _conv_same(_sigmoid(scores), pairwise_kernel)
    return _sigmoid(scores)


@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize(
    "kwargs", [{}, {"mode": "part", "parts": 4, "kernel_size": 1, "pairwise_kernel_size": 5}]
)
def test_mean_field_steps_match_the_closed_form(steps, kwargs):
    features = np.random.default_rng(steps).normal(size=(2, 5, 7, 6)).astype("float32")
    layer = L.MultiContextAttention(steps=steps, **kwargs)
    layer.build(features.shape)
    randomize_weights(layer, seed=steps + 1)
    unary_kernel, unary_bias, pairwise_kernel = (
        keras.ops.convert_to_numpy(w).astype("float64")
        for w in (layer.unary.kernel, layer.unary.bias, layer.pairwise.kernel)
    )
    expected = _closed_form(
        features.astype("float64"), unary_kernel, unary_bias, pairwise_kernel, steps
    )
    outputs, attention = call_layer(layer, features, return_attention=True)
    np.testing.assert_allclose(to_numpy(attention), expected, rtol=1e-5, atol=1e-6)
    parts = expected.shape[-1]
    expected_outputs = np.concatenate(
        [features * expected[..., k : k + 1] for k in range(parts)], -1
    )
    np.testing.assert_allclose(to_numpy(outputs), expected_outputs, rtol=1e-5, atol=1e-6)


def test_the_pairwise_kernel_is_shared_by_all_steps():
    layer = L.MultiContextAttention(steps=3)
    layer.build((None, None, None, 8))
    assert [w.path.split("/")[-2:] for w in layer.weights] == [
        ["unary", "kernel"],
        ["unary", "bias"],
        ["pairwise", "kernel"],
    ]
    assert tuple(layer.pairwise.kernel.shape) == (3, 3, 1, 1)


def test_messages_change_the_map_only_where_the_pairwise_kernel_reaches():
    """With a 1x1 unary and a 3x3 pairwise kernel, t steps spread a change of one
    input position over at most t positions in each direction."""
    features = np.zeros((1, 9, 11, 2), "float32")
    moved = features.copy()
    moved[0, 4, 5] = 3.0
    layer = L.MultiContextAttention(steps=2, kernel_size=1)
    layer.build(features.shape)
    randomize_weights(layer, seed=0)
    change = np.abs(
        to_numpy(call_layer(layer, moved, return_attention=True)[1])
        - to_numpy(call_layer(layer, features, return_attention=True)[1])
    )[0, ..., 0]
    rows, cols = np.nonzero(change > 1e-7)
    assert rows.min() == 2 and rows.max() == 6 and cols.min() == 3 and cols.max() == 7
