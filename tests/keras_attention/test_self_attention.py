"""Closed-form checks of the self-attention layers against NumPy."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.factory import create_attention
from tests.keras_attention import cases_self_attention, oracles_self_attention
from tests.layer_harness import harness_test, randomize_weights
from tests.oracle_cases import timm_parity_tests

test_layer_harness = harness_test(cases_self_attention)
test_matches_committed_timm_fixture, test_matches_live_timm = timm_parity_tests(
    oracles_self_attention
)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype("float64")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _dense(x, dense):
    y = x @ _numpy(dense.kernel)
    return y + _numpy(dense.bias) if dense.use_bias else y


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# --------------------------------------------------------------------------------------
# MultiHeadSelfAttention2D


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_heads": 4},
        {"num_heads": 4, "num_key_value_heads": 2, "key_dim": 3, "output_dim": 10},
        {"num_heads": 3, "num_key_value_heads": 1, "use_bias": False, "scale": 0.2},
    ],
    ids=["mhsa_plain", "mhsa_gqa", "mhsa_mqa"],
)
def test_mhsa_closed_form(kwargs):
    x = _random((2, 3, 4, 12), seed=0)
    layer = L.MultiHeadSelfAttention2D(**kwargs)
    layer.build(x.shape)
    randomize_weights(layer, seed=1)
    outputs, attention = layer(x, return_attention=True)

    heads = kwargs["num_heads"]
    kv_heads = kwargs.get("num_key_value_heads", heads)
    d = kwargs.get("key_dim", 12 // heads)
    scale = kwargs.get("scale", d**-0.5)
    tokens = x.astype("float64").reshape(2, 12, 12)
    q = _dense(tokens, layer.query).reshape(2, 12, heads, d)
    k = _dense(tokens, layer.key).reshape(2, 12, kv_heads, d)
    v = _dense(tokens, layer.value).reshape(2, 12, kv_heads, d)
    group = np.arange(heads) // (heads // kv_heads)  # query head n reads kv head n // groups
    k, v = k[:, :, group], v[:, :, group]
    a = _softmax(np.einsum("bqhd,bkhd->bhqk", q, k) * scale)
    mixed = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(2, 12, heads * d)
    expected = _dense(mixed, layer.out).reshape(2, 3, 4, -1)

    assert tuple(attention.shape) == (2, heads, 12, 12)
    np.testing.assert_allclose(_numpy(attention), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


def test_mhsa_factory_name():
    layer = create_attention("mhsa", 64)
    assert type(layer) is L.MultiHeadSelfAttention2D
    assert layer.head_dim == 8 and layer.num_heads == 8


# --------------------------------------------------------------------------------------
# NonLocal


def _max_pool(x, windows):
    """Floor ('valid') max pooling of (B, *spatial, C) with stride = window."""
    for axis, w in enumerate(windows, start=1):
        if w == 1:
            continue
        n = x.shape[axis] // w
        x = np.take(x, np.arange(n * w), axis=axis)
        shape = x.shape[:axis] + (n, w) + x.shape[axis + 1 :]
        x = x.reshape(shape).max(axis=axis + 1)
    return x


def _non_local_reference(layer, x, pairwise, windows, scale):
    b = x.shape[0]
    x = x.astype("float64")
    flat = lambda t: t.reshape(b, -1, t.shape[-1])  # noqa: E731
    g = flat(_max_pool(_dense(x, layer.g), windows))
    if pairwise == "gaussian":
        query, key = flat(x), flat(_max_pool(x, windows))
    else:
        query = flat(_dense(x, layer.theta))
        key = flat(_max_pool(_dense(x, layer.phi), windows))
    n_prime = key.shape[1]
    if pairwise in ("gaussian", "embedded_gaussian"):
        f = _softmax(np.einsum("bnd,bmd->bnm", query, key) * scale)
    elif pairwise == "dot_product":
        f = np.einsum("bnd,bmd->bnm", query, key) / n_prime
    else:
        w = _numpy(layer.concat_project.kernel)[:, 0]
        inner = query.shape[-1]
        # the concatenation, built here on purpose
        pairs = np.concatenate(
            [
                np.broadcast_to(query[:, :, None], (b, query.shape[1], n_prime, inner)),
                np.broadcast_to(key[:, None], (b, query.shape[1], n_prime, inner)),
            ],
            axis=-1,
        )
        f = np.maximum(pairs @ w, 0.0) / n_prime
    y = _dense(f @ g, layer.out)
    norm = layer.out_norm
    y = _numpy(norm.gamma) * (y - _numpy(norm.moving_mean)) / np.sqrt(
        _numpy(norm.moving_variance) + norm.epsilon
    ) + _numpy(norm.beta)
    return y.reshape(x.shape) + x, f


SHAPES = {
    "1d": ((2, 9, 6), (2,)),
    "2d": ((2, 5, 7, 6), (2, 2)),
    "3d": ((2, 3, 4, 5, 6), (1, 2, 2)),
}


@pytest.mark.parametrize("subsample", [False, True], ids=["full", "subsample"])
@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize(
    "pairwise", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"]
)
def test_nonlocal_closed_form(pairwise, rank, subsample):
    shape, windows = SHAPES[rank]
    x = (_random(shape, seed=2) * 0.5).astype("float32")
    layer = L.NonLocal(
        pairwise=pairwise,
        subsample=subsample,
        inner_channels=4,
        scale="input" if pairwise == "gaussian" else "inner",
    )
    layer.build(shape)
    randomize_weights(layer, seed=3)
    outputs, attention = layer(x, training=False, return_attention=True)
    scale = 6**-0.5 if pairwise == "gaussian" else 4**-0.5
    expected, f = _non_local_reference(
        layer, x, pairwise, windows if subsample else (1,) * len(windows), scale
    )
    assert tuple(attention.shape) == f.shape
    np.testing.assert_allclose(_numpy(attention), f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale, value", [("inner", 4**-0.5), ("input", 16**-0.5), (None, 1.0)])
def test_nonlocal_scale_options(scale, value):
    x = (_random((2, 3, 4, 16), seed=4) * 0.5).astype("float32")
    layer = L.NonLocal(inner_channels=4, scale=scale)
    layer.build(x.shape)
    randomize_weights(layer, seed=5)
    assert layer.scale_value == pytest.approx(value)
    expected, _ = _non_local_reference(layer, x, "embedded_gaussian", (1, 1), value)
    np.testing.assert_allclose(_numpy(layer(x, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_nonlocal_starts_as_identity():
    x = _random((2, 4, 4, 8), seed=6)
    layer = L.NonLocal(pairwise="concatenation", subsample=True)
    np.testing.assert_array_equal(_numpy(layer(x, training=False)), x.astype("float64"))
    assert layer.inner == 4  # C // 2
    assert [w.path.split("/")[-2] for w in layer.trainable_weights].count("theta") == 2


@pytest.mark.parametrize("channels, inner", [(48, 8), (64, 8), (72, 16), (256, 32)])
def test_nonlocal_factory_matches_timm_width(channels, inner):
    # timm NonLocalAttn: make_divisible(C / 8, 8) with its default round_limit 0.9
    layer = create_attention("nl", channels)
    assert type(layer) is L.NonLocal
    assert layer.inner == inner
    assert layer.scale_value == pytest.approx(channels**-0.5)
    assert layer.pairwise == "embedded_gaussian" and not layer.subsample
