"""Closed-form checks of SAN's pairwise and patchwise self-attention against NumPy loops."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_san
from tests.layer_harness import harness_test, randomize_weights

test_layer_harness = harness_test(cases_san)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), "float64")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reflect(i, n):
    """Index of a reflection-padded axis (edge not repeated), as SAN's `pad_mode=1` kernels."""
    if i < 0:
        i = -i
    if i >= n:
        i = 2 * (n - 1) - i
    return i


def _footprint(y, x, h, w, kernel_size, dilation):
    """Row-major (top-left first) source positions of the footprint around (y, x)."""
    p = dilation * (kernel_size - 1) // 2
    return [
        (_reflect(y + ky * dilation - p, h), _reflect(x + kx * dilation - p, w))
        for ky in range(kernel_size)
        for kx in range(kernel_size)
    ]


def _conv1x1(conv, x):
    kernel = _numpy(conv.kernel)
    kernel = kernel.reshape(kernel.shape[-2:])
    bias = _numpy(conv.bias) if conv.use_bias else 0.0
    return x @ kernel + bias


def _batch_norm(norm, x, training):
    if training:
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = _numpy(norm.moving_mean), _numpy(norm.moving_variance)
    return (x - mean) / np.sqrt(var + 1e-5) * _numpy(norm.gamma) + _numpy(norm.beta)


def _aggregate(beta, weights, kernel_size, dilation, groups):
    """y[b, y, x, c] = sum_k w[b, y, x, k, c % groups] * beta[b, j_k(y, x), c]."""
    b, h, w, c = beta.shape
    out = np.zeros_like(beta)
    for y in range(h):
        for x in range(w):
            for k, (jy, jx) in enumerate(_footprint(y, x, h, w, kernel_size, dilation)):
                for ch in range(c):
                    out[:, y, x, ch] += weights[:, y, x, k, ch % groups] * beta[:, jy, jx, ch]
    return out


def _pairwise_reference(layer, x, training):
    ks, dil = layer.kernel_size, layer.dilation
    b, h, w, _ = x.shape
    phi, psi = _conv1x1(layer.query, x), _conv1x1(layer.key, x)
    if layer.position_encoding:
        xs, ys = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
        position = _numpy(layer.position.kernel)
    rows = []
    for y in range(h):
        for xq in range(w):
            taps = []
            for jy, jx in _footprint(y, xq, h, w, ks, dil):
                relation = phi[:, y, xq] - psi[:, jy, jx]  # subtraction relation
                if layer.position_encoding:
                    delta = (np.array([xs[xq], ys[y]]) - np.array([xs[jx], ys[jy]])) @ position
                    relation = np.concatenate([relation, np.tile(delta, (b, 1))], axis=-1)
                taps.append(relation)
            rows.append(np.stack(taps, axis=1))
    relation = np.stack(rows, axis=1).reshape(b, h, w, ks * ks, -1)
    z = np.maximum(_batch_norm(layer.weight_norm1, relation, training), 0)
    z = np.maximum(_batch_norm(layer.weight_norm2, _conv1x1(layer.weight_conv1, z), training), 0)
    weights = _softmax(_conv1x1(layer.weight_conv2, z), axis=3)
    beta = _conv1x1(layer.value, x)
    return _aggregate(beta, weights, ks, dil, layer.groups), weights


def _patchwise_reference(layer, x, training):
    ks, dil, groups = layer.kernel_size, layer.dilation, layer.groups
    b, h, w, _ = x.shape
    phi, psi = _conv1x1(layer.query, x), _conv1x1(layer.key, x)
    features = np.zeros((b, h, w, phi.shape[-1] * (ks * ks + 1)))
    for y in range(h):
        for xq in range(w):
            patch = np.stack(
                [psi[:, jy, jx] for jy, jx in _footprint(y, xq, h, w, ks, dil)], axis=-1
            )  # (B, r, K2): channel-major like nn.Unfold
            features[:, y, xq] = np.concatenate([phi[:, y, xq], patch.reshape(b, -1)], axis=-1)
    z = np.maximum(_batch_norm(layer.weight_norm1, features, training), 0)
    z = np.maximum(_batch_norm(layer.weight_norm2, _conv1x1(layer.weight_conv1, z), training), 0)
    z = _conv1x1(layer.weight_conv2, z)  # channel g * K2 + k
    weights = np.zeros((b, h, w, ks * ks, groups))
    for g in range(groups):
        for k in range(ks * ks):
            weights[..., k, g] = z[..., g * ks * ks + k]
    if layer.softmax:
        weights = _softmax(weights, axis=3)
    beta = _conv1x1(layer.value, x)
    return _aggregate(beta, weights, ks, dil, groups), weights


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "relation_channels": 3, "share_planes": 2},
        {
            "kernel_size": 3,
            "dilation": 2,
            "relation_channels": 2,
            "value_channels": 6,
            "share_planes": 3,
            "position_encoding": False,
        },
        {"kernel_size": 5, "relation_channels": 2, "share_planes": 4},
    ],
)
def test_san_pairwise_closed_form(kwargs, training):
    x = np.random.default_rng(0).normal(size=(2, 4, 5, 8)).astype("float32")
    layer = L.PairwiseSelfAttention(**kwargs)
    layer.build(x.shape)
    randomize_weights(layer, seed=3)

    outputs, attention = layer(x, return_attention=True, training=training)

    expected, expected_attention = _pairwise_reference(layer, x.astype("float64"), training)
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "relation_channels": 2, "share_planes": 2},
        {
            "kernel_size": 3,
            "dilation": 2,
            "relation_channels": 1,
            "value_channels": 6,
            "share_planes": 3,
            "softmax": False,
        },
        {"kernel_size": 5, "relation_channels": 1, "share_planes": 4},
    ],
)
def test_san_patchwise_closed_form(kwargs, training):
    x = np.random.default_rng(1).normal(size=(2, 4, 5, 8)).astype("float32")
    layer = L.PatchwiseSelfAttention(**kwargs)
    layer.build(x.shape)
    randomize_weights(layer, seed=4)

    outputs, attention = layer(x, return_attention=True, training=training)

    expected, expected_attention = _patchwise_reference(layer, x.astype("float64"), training)
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-4)


def test_san_defaults_follow_the_official_widths():
    layer = L.PairwiseSelfAttention()
    layer.build((None, None, None, 64))
    assert (layer.kernel_size, layer.share_planes) == (7, 8)
    assert layer.relation_width == 4  # rel_planes = planes // 16
    assert layer.groups == 8 and layer.compute_output_shape((1, 9, 9, 64)) == (1, 9, 9, 64)
    assert layer.compute_attention_shape((1, 9, 9, 64)) == (1, 9, 9, 49, 8)
    patchwise = L.PatchwiseSelfAttention(value_channels=32)
    patchwise.build((None, None, None, 64))
    # conv_w input: rel_planes * (k^2 + 1); output: k^2 * out_planes // share_planes
    assert tuple(patchwise.weight_conv1.kernel.shape) == (1, 1, 4 * 50, 4)
    assert tuple(patchwise.weight_conv2.kernel.shape) == (1, 1, 4, 49 * 4)
