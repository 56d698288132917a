"""Closed-form checks of the channel-domain layers against NumPy."""

import math

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.layers import _utils as U
from tests.keras_attention import cases_channel, oracles_channel
from tests.layer_harness import harness_test
from tests.oracle_cases import timm_parity_tests

test_layer_harness = harness_test(cases_channel)
test_matches_committed_timm_fixture, test_matches_live_timm = timm_parity_tests(oracles_channel)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------
# DualChannelAttention (DANet CAM)


@pytest.mark.parametrize("energy", ["official", "paper"])
def test_dual_channel_attention_closed_form(energy):
    rng = np.random.default_rng(0)
    b, h, w, c = 2, 5, 4, 6
    x = (rng.normal(size=(b, h, w, c)) * 0.3).astype("float32")
    layer = L.DualChannelAttention(energy=energy)
    layer.build(x.shape)
    gamma = 0.73
    layer.gamma.assign(gamma)

    outputs, attention = layer(x, return_attention=True)

    xs = x.astype("float64").reshape(b, h * w, c)  # (B, N, C)
    e = np.einsum("bnc,bnd->bcd", xs, xs)  # X^T X
    if energy == "official":
        e = e.max(axis=-1, keepdims=True) - e
    a = _softmax(e, axis=-1)
    expected = gamma * np.einsum("bcd,bnd->bnc", a, xs) + xs
    np.testing.assert_allclose(_numpy(attention), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected.reshape(x.shape), rtol=1e-5, atol=1e-5)


def test_dual_channel_attention_starts_as_identity():
    x = np.random.default_rng(1).normal(size=(2, 3, 3, 8)).astype("float32")
    layer = L.DualChannelAttention()
    np.testing.assert_array_equal(_numpy(layer(x)), x)


# --------------------------------------------------------------------------------------
# EfficientChannelAttention


def _eca_reference_kernel_size(channels, gamma=2, beta=1):
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


@pytest.mark.parametrize(
    "channels, expected",
    [(8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)],
)
def test_eca_adaptive_kernel_size_table(channels, expected):
    assert _eca_reference_kernel_size(channels) == expected
    assert U.eca_kernel_size(channels) == expected
    layer = L.EfficientChannelAttention()
    layer.build((None, None, None, channels))
    assert tuple(layer.conv.kernel.shape) == (expected, 1, 1)


def test_eca_adaptive_kernel_size_gamma_beta():
    # |log2 64 + 3| / 1 = 9 (odd) ; |log2 64 + 0| / 3 = 2 -> 3
    assert U.eca_kernel_size(64, gamma=1, beta=3) == 9
    assert U.eca_kernel_size(64, gamma=3, beta=0) == 3


@pytest.mark.parametrize("circular", [False, True])
def test_eca_closed_form(circular):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4, 10)).astype("float32")
    k = 5
    layer = L.EfficientChannelAttention(kernel_size=k, circular=circular)
    layer.build(x.shape)
    taps = rng.normal(size=(k,)).astype("float32")
    layer.conv.kernel.assign(taps.reshape(k, 1, 1))

    outputs, gate = layer(x, return_attention=True)

    pooled = x.astype("float64").mean(axis=(1, 2))  # (B, C)
    p = (k - 1) // 2
    mode = "wrap" if circular else "constant"
    padded = np.pad(pooled, ((0, 0), (p, p)), mode=mode)
    conv = np.stack([padded[:, i : i + k] @ taps for i in range(x.shape[-1])], axis=-1)
    expected_gate = 1 / (1 + np.exp(-conv))
    np.testing.assert_allclose(_numpy(gate)[:, 0, 0], expected_gate, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _numpy(outputs), x * expected_gate[:, None, None], rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------------------
# GlobalContext


@pytest.mark.parametrize("pooling", ["attention", "avg"])
def test_global_context_weights_sum_to_one(pooling):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 7, 16)).astype("float32") * 3
    layer = L.GlobalContext(pooling=pooling, reduced_channels=4)
    layer.build(x.shape)
    for weight in layer.weights:
        weight.assign(rng.normal(size=tuple(weight.shape)).astype("float32"))
    _, weights = layer(x, return_attention=True)
    weights = _numpy(weights)
    assert weights.shape == (2, 5, 7, 1)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    if pooling == "avg":
        np.testing.assert_allclose(weights, 1 / 35, rtol=1e-6)


def test_global_context_closed_form_attention_pooling():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 3, 8)).astype("float32")
    layer = L.GlobalContext(reduced_channels=4, fusion="multiply", zero_init_last=False)
    layer.build(x.shape)
    for weight in layer.weights:
        weight.assign(rng.normal(size=tuple(weight.shape)).astype("float32") * 0.5)

    outputs, weights = layer(x, return_attention=True)

    xs = x.astype("float64")
    wa, ba = _numpy(layer.attention.kernel)[0, 0], _numpy(layer.attention.bias)
    logits = xs @ wa + ba  # (B, H, W, 1)
    soft = _softmax(logits.reshape(2, -1), axis=-1).reshape(logits.shape)
    context = (xs * soft).sum(axis=(1, 2))  # (B, C)
    hidden = context @ _numpy(layer.reduce.kernel)[0, 0] + _numpy(layer.reduce.bias)
    mean, var = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    hidden = (hidden - mean) / np.sqrt(var + 1e-5)
    hidden = np.maximum(hidden * _numpy(layer.norm.gamma) + _numpy(layer.norm.beta), 0)
    transform = hidden @ _numpy(layer.expand.kernel)[0, 0] + _numpy(layer.expand.bias)
    expected = xs / (1 + np.exp(-transform))[:, None, None]
    np.testing.assert_allclose(_numpy(weights), soft, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


def test_global_context_official_defaults():
    layer = L.GlobalContext()
    layer.build((None, None, None, 256))
    assert layer.reduce.filters == 16  # int(256 / 16), the official floor
    assert layer.norm.epsilon == 1e-5
    # the last convolution starts at zero: a fresh additive block is the identity
    x = np.random.default_rng(5).normal(size=(1, 3, 3, 256)).astype("float32")
    np.testing.assert_array_equal(_numpy(layer(x)), x)
