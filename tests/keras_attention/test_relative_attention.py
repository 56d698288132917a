"""Closed-form checks of the relative-position attention layers against NumPy (float64)."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.factory import create_attention
from keras_attention.layers.relative_attention import rel_to_abs, resize_relative_table
from tests.keras_attention import cases_relative_attention, oracles_relative_attention
from tests.layer_harness import harness_test, randomize_weights
from tests.oracle_cases import timm_parity_tests

test_layer_harness = harness_test(cases_relative_attention)
test_matches_committed_timm_fixture, test_matches_live_timm = timm_parity_tests(
    oracles_relative_attention
)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype("float64")


def _input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _conv2d_same(x, conv):
    """Stride-1 'same' convolution of an NHWC array with a Keras Conv2D's weights."""
    kernel = _numpy(conv.kernel)
    kh, kw = kernel.shape[:2]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,cd->bhwd", padded[:, i : i + h, j : j + w], kernel[i, j])
    if conv.use_bias:
        out += _numpy(conv.bias)
    return out


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _relative_attention(q, k, v, rel_h, rel_w, content_scale, position_scale):
    """Explicit 2D relative attention of one head: q, k (H, W, d), v (H, W, dv).

    logit_ij = content_scale * q_i . k_j
               + position_scale * (q_i . rel_w[x_j - x_i + W - 1] + q_i . rel_h[y_j - y_i + H - 1])
    """
    h, w, _ = q.shape
    positions = [(y, x) for y in range(h) for x in range(w)]
    logits = np.zeros((h * w, h * w))
    for i, (yi, xi) in enumerate(positions):
        for j, (yj, xj) in enumerate(positions):
            qi = q[yi, xi]
            logits[i, j] = content_scale * qi @ k[yj, xj]
            if rel_h is not None:
                logits[i, j] += position_scale * (
                    qi @ rel_w[xj - xi + w - 1] + qi @ rel_h[yj - yi + h - 1]
                )
    attention = _softmax(logits)
    return attention @ v.reshape(h * w, -1), attention


def test_rel_to_abs_indexes_relative_offsets():
    rng = np.random.default_rng(0)
    for length, keys in ((4, 4), (3, 6)):  # BoTNet / AA-Conv, HaloNet (block < window)
        x = rng.normal(size=(2, length, 2 * keys - 1)).astype("float32")
        out = _numpy(rel_to_abs(x))
        expected = np.zeros((2, length, keys))
        for i in range(length):
            for j in range(keys):
                expected[:, i, j] = x[:, i, keys - 1 + j - i]
        np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("relative", [True, False], ids=["aaconv_rel", "aaconv_plain"])
def test_aaconv_matches_paper_formulas(relative):
    shape = (2, 3, 4, 6)
    nh, dk, dv = 2, 8, 4
    layer = L.AttentionAugmentedConv2D(10, 3, dk, dv, nh, relative=relative)
    layer.build(shape)
    randomize_weights(layer, seed=3)
    x = _input(shape, seed=4)
    outputs, attention = layer(x, return_attention=True)

    x64 = x.astype("float64")
    qkv = _conv2d_same(x64, layer.qkv)
    dkh, dvh = dk // nh, dv // nh
    q, k, v = qkv[..., :dk] * dkh**-0.5, qkv[..., dk : 2 * dk], qkv[..., 2 * dk :]
    rel_h = _numpy(layer.key_rel_h) if relative else None
    rel_w = _numpy(layer.key_rel_w) if relative else None
    heads, maps = [], []
    for b in range(shape[0]):
        per_head = []
        for n in range(nh):
            out, att = _relative_attention(
                q[b, ..., n * dkh : (n + 1) * dkh],
                k[b, ..., n * dkh : (n + 1) * dkh],
                v[b, ..., n * dvh : (n + 1) * dvh],
                rel_h,
                rel_w,
                1.0,
                1.0,
            )
            per_head.append(out)
            maps.append(att)
        heads.append(np.concatenate(per_head, axis=-1).reshape(shape[1], shape[2], dv))
    attended = _conv2d_same(np.stack(heads), layer.attn_out)
    expected = np.concatenate([_conv2d_same(x64, layer.conv), attended], axis=-1)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        _numpy(attention).reshape(-1, 12, 12), np.stack(maps), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize(
    "scale_pos_embed", [False, True], ids=["botnet_closed", "botnet_closed_scaled"]
)
def test_bottleneck_matches_explicit_relative_logits(scale_pos_embed):
    shape = (1, 3, 4, 8)
    nh, dqk = 2, 3
    layer = L.BottleneckAttention(dim_head=dqk, num_heads=nh, scale_pos_embed=scale_pos_embed)
    layer.build(shape)
    randomize_weights(layer, seed=5)
    x = _input(shape, seed=6)
    qkv = _conv2d_same(x.astype("float64"), layer.qkv)[0]
    q, k, v = qkv[..., : nh * dqk], qkv[..., nh * dqk : 2 * nh * dqk], qkv[..., 2 * nh * dqk :]
    dv = v.shape[-1] // nh
    scale = dqk**-0.5
    heads = [
        _relative_attention(
            q[..., n * dqk : (n + 1) * dqk],
            k[..., n * dqk : (n + 1) * dqk],
            v[..., n * dv : (n + 1) * dv],
            _numpy(layer.height_rel),
            _numpy(layer.width_rel),
            scale,
            scale if scale_pos_embed else 1.0,
        )[0]
        for n in range(nh)
    ]
    expected = np.concatenate(heads, axis=-1).reshape(1, 3, 4, nh * dv)
    np.testing.assert_allclose(_numpy(layer(x)), expected, rtol=1e-4, atol=1e-5)


def test_aaconv_resize_relative_table_interpolates_linearly():
    table = np.arange(10, dtype="float64").reshape(5, 2)  # offsets -2..2
    np.testing.assert_array_equal(resize_relative_table(table, 5), table)
    resized = resize_relative_table(table, 9)  # offsets -4..4: half steps
    np.testing.assert_allclose(resized[:, 0], np.arange(9) * 1.0)
    np.testing.assert_allclose(resized[[0, -1]], table[[0, -1]])
    np.testing.assert_allclose(resize_relative_table(table, 3), table[::2])


def _aaconv_model(height, width):
    inputs = keras.Input((height, width, 6))
    layer = L.AttentionAugmentedConv2D(10, 3, 8, 4, 2, name="aa")
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"], ids=["aaconv_h5", "aaconv_keras"])
def test_aaconv_loads_weights_saved_at_another_resolution(tmp_path, suffix):
    source = _aaconv_model(4, 5)
    randomize_weights(source, seed=7)
    path = str(tmp_path / ("model" + suffix))
    if suffix == ".keras":
        source.save(path)
    else:
        source.save_weights(path)
    target = _aaconv_model(6, 3)
    target.load_weights(path)
    old, new = source.get_layer("aa"), target.get_layer("aa")
    assert tuple(new.key_rel_w.shape) == (5, 4) and tuple(new.key_rel_h.shape) == (11, 4)
    np.testing.assert_allclose(
        _numpy(new.key_rel_w), resize_relative_table(_numpy(old.key_rel_w), 5), rtol=1e-6
    )
    np.testing.assert_allclose(
        _numpy(new.key_rel_h), resize_relative_table(_numpy(old.key_rel_h), 11), rtol=1e-6
    )
    for a, b in ((old.qkv, new.qkv), (old.conv, new.conv), (old.attn_out, new.attn_out)):
        np.testing.assert_array_equal(_numpy(a.kernel), _numpy(b.kernel))
    y = target.predict(_input((2, 6, 3, 6)), verbose=0)
    assert y.shape == (2, 6, 3, 10) and np.all(np.isfinite(y))
    # Same resolution: an exact round trip.
    same = _aaconv_model(4, 5)
    same.load_weights(path)
    np.testing.assert_array_equal(_numpy(same.get_layer("aa").key_rel_w), _numpy(old.key_rel_w))


@pytest.mark.parametrize(
    "name, cls",
    [
        ("bottleneck", L.BottleneckAttention),
        ("halo", L.HaloAttention),
        ("lambda", L.LambdaLayer),
        ("aa_conv", L.AttentionAugmentedConv2D),
    ],
    ids=["botnet_factory", "halo_factory", "lambda_factory", "aaconv_factory"],
)
def test_relative_attention_factory_names(name, cls):
    layer = create_attention(name, 64)
    assert type(layer) is cls and layer.built
