"""Closed-form checks of CBAM's gates, CBAM and BAM against NumPy (float64)."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.factory import create_attention
from tests.keras_attention import cases_mixed, oracles_mixed
from tests.layer_harness import harness_test, randomize_weights
from tests.oracle_cases import timm_parity_tests

test_layer_harness = harness_test(cases_mixed)
test_matches_committed_timm_fixture, test_matches_live_timm = timm_parity_tests(oracles_mixed)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype("float64")


def _w(variable):
    return _numpy(variable)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv2d_same(x, conv, dilation=1):
    """Stride-1 'same' convolution of an NHWC array with a Keras Conv2D's weights."""
    kernel = _w(conv.kernel)
    kh, kw = kernel.shape[:2]
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(kh):
        for j in range(kw):
            window = padded[:, i * dilation : i * dilation + h, j * dilation : j * dilation + w]
            out += np.einsum("bhwc,cd->bhwd", window, kernel[i, j])
    if conv.use_bias:
        out += _w(conv.bias)
    return out


def _dense(x, dense):
    return x @ _w(dense.kernel) + _w(dense.bias)


def _batch_norm(x, norm, training):
    if training:  # batch statistics over every axis but the channels, biased variance
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = _w(norm.moving_mean), _w(norm.moving_variance)
    return _w(norm.gamma) * (x - mean) / np.sqrt(var + norm.epsilon) + _w(norm.beta)


def _relu(x):
    return np.maximum(x, 0.0)


def _input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# --------------------------------------------------------------------------------------
# SpatialGate


def _spatial_gate_reference(layer, x, training):
    x = x.astype("float64")
    mean, maximum = x.mean(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    maps = [maximum, mean] if layer.pooling_order == "max_mean" else [mean, maximum]
    pooled = np.concatenate(maps, axis=-1)
    gate = _sigmoid(_batch_norm(_conv2d_same(pooled, layer.conv), layer.norm, training))
    return x * gate, gate


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("pooling_order", ["max_mean", "mean_max"])
def test_spatial_gate_closed_form(pooling_order, training):
    x = _input((2, 6, 7, 12))
    layer = L.SpatialGate(pooling_order=pooling_order, kernel_size=5)
    layer.build(x.shape)
    randomize_weights(layer, seed=1)
    expected, expected_gate = _spatial_gate_reference(layer, x, training)
    outputs, gate = layer(x, training=training, return_attention=True)
    assert tuple(gate.shape) == (2, 6, 7, 1)
    np.testing.assert_allclose(_numpy(gate), expected_gate, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling_order, first", [("max_mean", "max"), ("mean_max", "mean")])
def test_spatial_gate_pooling_order(pooling_order, first):
    """A kernel reading only input channel 0 at its centre sees the first pooled map."""
    x = _input((2, 4, 5, 8), seed=3)
    layer = L.SpatialGate(pooling_order=pooling_order, kernel_size=3)
    layer.build(x.shape)
    kernel = np.zeros((3, 3, 2, 1), "float32")
    kernel[1, 1, 0, 0] = 1.0
    layer.conv.kernel.assign(kernel)
    layer.norm.moving_variance.assign(np.full((1,), 1.0 - 1e-5, "float32"))  # BN = identity
    pooled = x.max(axis=-1, keepdims=True) if first == "max" else x.mean(axis=-1, keepdims=True)
    _, gate = layer(x, training=False, return_attention=True)
    np.testing.assert_allclose(
        _numpy(gate), _sigmoid(pooled.astype("float64")), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------------------
# ChannelGate and CBAM


def _channel_gate_reference(layer, x):
    x = x.astype("float64")

    def mlp(v):
        return _conv2d_same(_relu(_conv2d_same(v, layer.reduce)), layer.expand)

    gate = _sigmoid(
        mlp(x.mean(axis=(1, 2), keepdims=True)) + mlp(x.max(axis=(1, 2), keepdims=True))
    )
    return x * gate, gate


@pytest.mark.parametrize("use_bias", [True, False])
def test_channel_gate_closed_form(use_bias):
    x = _input((2, 5, 6, 40))
    layer = L.ChannelGate(use_bias=use_bias)
    layer.build(x.shape)
    assert layer.reduce.filters == 3  # round(40 / 16), timm's rd_divisor=1
    randomize_weights(layer, seed=2)
    expected, expected_gate = _channel_gate_reference(layer, x)
    outputs, gate = layer(x, return_attention=True)
    np.testing.assert_allclose(_numpy(gate), expected_gate, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


def test_cbam_is_channel_then_spatial_and_returns_the_spatial_map():
    x = _input((2, 5, 6, 32), seed=4)
    layer = L.CBAM(kernel_size=3)
    layer.build(x.shape)
    randomize_weights(layer, seed=5)
    channel_out, _ = _channel_gate_reference(layer.channel_gate, x)
    expected, expected_map = _spatial_gate_reference(layer.spatial_gate, channel_out, False)
    outputs, attention = layer(x, training=False, return_attention=True)
    assert tuple(attention.shape) == (2, 5, 6, 1)
    np.testing.assert_allclose(_numpy(attention), expected_map, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


def test_cbam_official_floor_and_factory_timm_configuration():
    official = L.CBAM(divisor=None)
    official.build((None, None, None, 40))
    assert official.channel_gate.reduce.filters == 2  # 40 // 16
    layer = create_attention("cbam", 40)
    assert type(layer) is L.CBAM
    assert layer.channel_gate.reduce.filters == 3  # timm: round(40 / 16)
    assert not layer.channel_gate.use_bias
    assert layer.spatial_gate.pooling_order == "mean_max"
    assert layer.spatial_gate.kernel_size == 7
    assert layer.spatial_gate.norm.epsilon == 1e-5
    assert create_attention("channel_gate", 40).use_bias is False
    assert create_attention("spatial_gate", 40).pooling_order == "mean_max"
    assert type(create_attention("bam", 40)) is L.BAM


# --------------------------------------------------------------------------------------
# BAM


def _bam_reference(layer, x, training):
    x = x.astype("float64")
    mc = _dense(x.mean(axis=(1, 2)), layer.channel_reduce)
    mc = _dense(_relu(_batch_norm(mc, layer.channel_norm, training)), layer.channel_expand)
    mc = mc[:, None, None, :]
    ms = _relu(
        _batch_norm(_conv2d_same(x, layer.spatial_reduce), layer.spatial_reduce_norm, training)
    )
    for conv, norm in zip(layer.dilated_convs, layer.dilated_norms):
        ms = _relu(_batch_norm(_conv2d_same(ms, conv, layer.dilation_rate), norm, training))
    ms = _conv2d_same(ms, layer.spatial_final)
    attention = _sigmoid(mc * ms if layer.combine == "product" else mc + ms)
    return x * (1.0 + attention), attention


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("combine", ["product", "sum"])
def test_bam_closed_form(combine, training):
    x = _input((3, 9, 10, 48), seed=6)
    layer = L.BAM(combine=combine)
    layer.build(x.shape)
    assert layer.channel_reduce.units == 3 and layer.spatial_reduce.filters == 3  # 48 // 16
    assert len(layer.dilated_convs) == 2 and layer.dilated_convs[0].dilation_rate == (4, 4)
    randomize_weights(layer, seed=7)
    expected, expected_attention = _bam_reference(layer, x, training)
    outputs, attention = layer(x, training=training, return_attention=True)
    assert tuple(attention.shape) == x.shape
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


def test_bam_floors_the_bottleneck_like_the_official_code():
    layer = L.BAM()
    layer.build((None, None, None, 40))
    assert layer.channel_reduce.units == 2 and layer.spatial_reduce.filters == 2  # 40 // 16
