"""Closed-form checks of the scene-context attention layers against NumPy dense attention."""

import math

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_context_attention
from tests.layer_harness import harness_test, randomize_weights

test_layer_harness = harness_test(cases_context_attention)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype("float64")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _conv1x1(conv, x):
    """A 1x1 Conv2D (with or without bias, no groups) on `(..., C)` in NumPy."""
    y = x @ _numpy(conv.kernel)[0, 0]
    return y + _numpy(conv.bias) if conv.use_bias else y


def _batch_norm(norm, x, training):
    if training:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    else:
        mean, var = _numpy(norm.moving_mean), _numpy(norm.moving_variance)
    return (x - mean) / np.sqrt(var + 1e-5) * _numpy(norm.gamma) + _numpy(norm.beta)


def _input(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


# --------------------------------------------------------------------------------------
# PositionAttention (DANet PAM)


def test_position_attention_closed_form():
    x = _input((2, 4, 5, 16))
    layer = L.PositionAttention()
    layer.build(x.shape)
    randomize_weights(layer, seed=1)

    outputs, attention = layer(x, return_attention=True)

    b, h, w, c = x.shape
    xs = x.astype("float64").reshape(b, h * w, c)
    q, k, v = (_conv1x1(conv, xs) for conv in (layer.query, layer.key, layer.value))
    a = _softmax(np.einsum("bnd,bmd->bnm", q, k))  # no 1/sqrt(d)
    expected = _numpy(layer.gamma) * np.einsum("bnm,bmc->bnc", a, v) + xs
    np.testing.assert_allclose(_numpy(attention), a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected.reshape(x.shape), rtol=1e-4, atol=1e-4)


def test_position_attention_starts_as_identity():
    x = _input((2, 3, 3, 16), seed=2)
    np.testing.assert_array_equal(_numpy(L.PositionAttention()(x)), x)


# --------------------------------------------------------------------------------------
# CrissCrossAttention: dense attention restricted to the row and column of each position


def _criss_cross_dense(layer, x):
    """One application as dense (HW x HW) attention under the criss-cross mask."""
    b, h, w, c = x.shape
    xs = x.reshape(b, h * w, c)
    q, k, v = (_conv1x1(conv, xs) for conv in (layer.query, layer.key, layer.value))
    rows, cols = np.divmod(np.arange(h * w), w)
    mask = (rows[:, None] == rows[None]) | (cols[:, None] == cols[None])  # diagonal once
    energy = np.where(mask, np.einsum("bnd,bmd->bnm", q, k), -np.inf)
    a = _softmax(energy)
    out = _numpy(layer.gamma) * np.einsum("bnm,bmc->bnc", a, v) + xs
    return out.reshape(x.shape), a


def _criss_cross_weights(a, h, w):
    """The layer's `(B, H, W, H + W)` layout of a dense criss-cross attention: column
    `(k, w)` for `k < H` (the self position left at 0), then row `(h, k)`."""
    a = a.reshape(a.shape[0], h, w, h, w)
    out = np.zeros(a.shape[:3] + (h + w,))
    for i in range(h):
        for j in range(w):
            out[:, i, j, :h] = a[:, i, j, :, j]
            out[:, i, j, i] = 0.0
            out[:, i, j, h:] = a[:, i, j, i, :]
    return out


@pytest.mark.parametrize("recurrence", [1, 2])
def test_criss_cross_equals_masked_dense_attention(recurrence):
    x = _input((2, 4, 5, 16), seed=3)
    layer = L.CrissCrossAttention(recurrence=recurrence)
    layer.build(x.shape)
    randomize_weights(layer, seed=4)

    outputs, weights = layer(x, return_attention=True)

    expected = x.astype("float64")
    for _ in range(recurrence):
        expected, a = _criss_cross_dense(layer, expected)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_numpy(weights), _criss_cross_weights(a, 4, 5), rtol=1e-4, atol=1e-6)
    weights = _numpy(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    diagonal = weights[:, np.arange(4), :, np.arange(4)]  # column branch at k = h
    np.testing.assert_array_equal(diagonal, 0.0)


# --------------------------------------------------------------------------------------
# ObjectContext


def _oc_attention(stage, x, scale, training):
    """Object context of one block over all positions of `x` (B, h, w, C): (W(ctx), map)."""
    key, key_norm, value, out = stage
    b, h, w, _ = x.shape
    qk = np.maximum(_batch_norm(key_norm, _conv1x1(key, x), training), 0).reshape(b, h * w, -1)
    v = _conv1x1(value, x).reshape(b, h * w, -1)
    a = _softmax(scale * np.einsum("bnd,bmd->bnm", qk, qk))
    return _conv1x1(out, np.einsum("bnm,bmc->bnc", a, v)).reshape(b, h, w, -1), a


def _fuse(layer, features, training):
    fused = _conv1x1(layer.fuse, np.concatenate(features, axis=-1))
    return np.maximum(_batch_norm(layer.fuse_norm, fused, training), 0)


@pytest.mark.parametrize("training", [False, True])
def test_object_context_base_closed_form(training):
    x = _input((2, 4, 5, 16), seed=5).astype("float64")
    layer = L.ObjectContext(key_channels=6, value_channels=4, out_channels=12)
    layer.build(x.shape)
    randomize_weights(layer, seed=6)

    outputs, attention = layer(x.astype("float32"), return_attention=True, training=training)

    context, a = _oc_attention(layer.stages[0], x, 6**-0.5, training)
    expected = _fuse(layer, [context, x], training)
    assert outputs.shape == (2, 4, 5, 12)
    np.testing.assert_allclose(_numpy(attention), a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-4)


def test_object_context_pyramid_closed_form():
    # 7 x 5 with partitions 2 and 3: uneven regions, the last taking the remainder.
    x = _input((2, 7, 5, 8), seed=7).astype("float64")
    sizes = (1, 2, 3)
    layer = L.ObjectContext(mode="pyramid", pyramid_sizes=sizes)
    layer.build(x.shape)
    randomize_weights(layer, seed=8)

    outputs, attention = layer(x.astype("float32"), return_attention=True, training=False)

    def bounds(n, s):
        step = n // s
        return [(i * step, n if i == s - 1 else (i + 1) * step) for i in range(s)]

    scale = 4**-0.5
    contexts, maps = [], []
    for stage, s in zip(layer.stages, sizes):
        context = np.zeros(x.shape[:3] + (8,))
        dense = np.zeros((2, 35, 35))
        for h0, h1 in bounds(7, s):
            for w0, w1 in bounds(5, s):
                region, a = _oc_attention(stage, x[:, h0:h1, w0:w1], scale, False)
                context[:, h0:h1, w0:w1] = region
                index = (np.arange(h0, h1)[:, None] * 5 + np.arange(w0, w1)[None]).ravel()
                dense[:, index[:, None], index[None]] = a
        contexts.append(context)
        maps.append(dense)
    widened = np.maximum(_batch_norm(layer.widen_norm, _conv1x1(layer.widen, x), False), 0)
    expected = _fuse(layer, [widened, *contexts], False)
    np.testing.assert_allclose(_numpy(attention), np.stack(maps, 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-4)


def test_object_context_asp_closed_form_without_dilations():
    # With no dilated branch everything is 1x1 except the context's 3x3 convolution, which
    # is checked by zeroing all but its centre tap.
    x = _input((2, 4, 4, 8), seed=9).astype("float64")
    layer = L.ObjectContext(mode="asp", dilations=(), out_channels=6)
    layer.build(x.shape)
    randomize_weights(layer, seed=10)
    kernel = np.zeros(tuple(layer.context_conv.kernel.shape), "float32")
    kernel[1, 1] = np.random.default_rng(11).normal(size=kernel.shape[2:])
    layer.context_conv.kernel.assign(kernel)

    outputs, attention = layer(x.astype("float32"), return_attention=True, training=False)

    def cbr(conv, norm, y):
        return np.maximum(_batch_norm(norm, _conv1x1(conv, y), False), 0)

    centre = _numpy(layer.context_conv.kernel)[1, 1]
    feat = np.maximum(
        _batch_norm(layer.context_norm, x @ centre + _numpy(layer.context_conv.bias), False), 0
    )
    context, a = _oc_attention(layer.stages[0], feat, 3**-0.5, False)
    context = cbr(layer.context_project, layer.context_project_norm, context)
    branch = cbr(layer.aspp_convs[0], layer.aspp_norms[0], x)
    expected = _fuse(layer, [context, branch], False)
    np.testing.assert_allclose(_numpy(attention), a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-4)


def test_object_context_starts_with_zero_context():
    x = _input((2, 4, 4, 8), seed=12)
    layer = L.ObjectContext()
    layer.build(x.shape)
    context, _ = layer._context(layer.stages[0], x, False, False)
    np.testing.assert_array_equal(_numpy(context), 0.0)


# --------------------------------------------------------------------------------------
# CompactGeneralizedNonLocal: the compact forms against the naive (C_g HW x C_g HW) kernels


def _cgnl_expected(layer, x, kernel_fn, use_scale=False):
    b, h, w, c = x.shape
    groups = layer.groups
    theta, phi, g = (_conv1x1(conv, x) for conv in (layer.theta, layer.phi, layer.g))
    cg = theta.shape[-1] // groups
    y = np.zeros_like(theta)
    for n in range(b):
        for i in range(groups):
            part = slice(i * cg, (i + 1) * cg)
            t, p, v = (a[n, ..., part].ravel() for a in (theta, phi, g))
            k = kernel_fn(t[:, None], p[None])  # (C_g HW, C_g HW)
            if use_scale:
                k = k / math.sqrt(t.size)
            y[n, ..., part] = (k @ v).reshape(h, w, cg)
    # grouped 1x1 convolution z, then GroupNorm and the residual
    zk = _numpy(layer.z.kernel)[0, 0]  # (C_g, C)
    co = c // groups
    z = np.concatenate(
        [y[..., i * cg : (i + 1) * cg] @ zk[:, i * co : (i + 1) * co] for i in range(groups)],
        axis=-1,
    )
    zg = z.reshape(b, h, w, groups, co)
    mean = zg.mean(axis=(1, 2, 4), keepdims=True)
    var = zg.var(axis=(1, 2, 4), keepdims=True)
    normed = ((zg - mean) / np.sqrt(var + 1e-5)).reshape(z.shape)
    return normed * _numpy(layer.norm.gamma) + _numpy(layer.norm.beta) + x


@pytest.mark.parametrize("groups, use_scale", [(1, False), (2, True)])
def test_cgnl_dot_equals_naive_kernel(groups, use_scale):
    x = _input((2, 3, 4, 8), seed=13).astype("float64")
    layer = L.CompactGeneralizedNonLocal(groups=groups, use_scale=use_scale)
    layer.build(x.shape)
    randomize_weights(layer, seed=14)

    outputs, scalars = layer(x.astype("float32"), return_attention=True)

    expected = _cgnl_expected(layer, x, lambda t, p: t * p, use_scale)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-4)
    phi, g = _conv1x1(layer.phi, x), _conv1x1(layer.g, x)
    s = (phi * g).reshape(2, -1, groups, 4 // groups).sum(axis=(1, 3))
    if use_scale:
        s = s / math.sqrt(3 * 4 * 4 // groups)
    np.testing.assert_allclose(_numpy(scalars)[..., 0], s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gamma, tolerance", [(1e-4, 1e-4), (0.05, 2e-3)])
def test_cgnl_gaussian_taylor_matches_rbf(gamma, tolerance):
    x = _input((2, 3, 4, 8), seed=15, scale=0.5).astype("float64")
    layer = L.CompactGeneralizedNonLocal(kernel="gaussian", gamma=gamma, groups=2)
    layer.build(x.shape)
    randomize_weights(layer, seed=16)

    outputs = _numpy(layer(x.astype("float32")))

    exact = _cgnl_expected(layer, x, lambda t, p: np.exp(-gamma * (t - p) ** 2))
    np.testing.assert_allclose(outputs, exact, rtol=tolerance, atol=tolerance)


def test_cgnl_gaussian_error_shrinks_with_order():
    x = _input((2, 3, 4, 8), seed=17).astype("float64")
    gamma = 0.2
    errors = []
    for order in (1, 3, 6):
        layer = L.CompactGeneralizedNonLocal(kernel="gaussian", gamma=gamma, order=order)
        layer.build(x.shape)
        randomize_weights(layer, seed=18)
        exact = _cgnl_expected(layer, x, lambda t, p: np.exp(-gamma * (t - p) ** 2))
        errors.append(np.abs(_numpy(layer(x.astype("float32"))) - exact).max())
    assert errors[0] > errors[1] > errors[2]
