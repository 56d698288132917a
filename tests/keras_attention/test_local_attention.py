"""Closed-form checks of the neighbourhood attention layers: dense attention with a band mask."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_local_attention
from tests.layer_harness import harness_test, randomize_weights

test_layer_harness = harness_test(cases_local_attention)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), dtype="float64")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _dense_band_attention(layer, query_map, reference_map):
    """NumPy: (H W) x (H W) logits per head, everything outside the window masked, softmax.

    Returns the outputs and the attention gathered into the layer's (B, H, W, n, k*k) layout.
    """
    w = {v.path.split("/")[-2] + "/" + v.path.split("/")[-1]: _numpy(v) for v in layer.weights}
    b, h, wd, _ = query_map.shape
    k, d = layer.kernel_size, layer.dilation
    r = k // 2
    xq = query_map.astype("float64").reshape(b, h * wd, -1)
    xr = reference_map.astype("float64").reshape(b, h * wd, -1)
    q = np.einsum("bpc,cnd->bpnd", xq, w["query/kernel"])
    kk = np.einsum("bpc,cnd->bpnd", xr, w["key/kernel"])
    v = np.einsum("bpc,cnd->bpnd", xr, w["value/kernel"])
    if layer.use_bias:
        q, v = q + w["query/bias"], v + w["value/bias"]
    logits = np.einsum("bpnd,bsnd->bnps", q, kk) / np.sqrt(q.shape[-1])
    ys, xs = np.divmod(np.arange(h * wd), wd)
    dy, dx = ys[None, :] - ys[:, None], xs[None, :] - xs[:, None]  # key minus query
    band = (np.abs(dy) <= r * d) & (np.abs(dx) <= r * d) & (dy % d == 0) & (dx % d == 0)
    attention = _softmax(np.where(band, logits, -np.inf), axis=-1)  # (B, n, HW, HW)
    mixed = np.einsum("bnps,bsnd->bpnd", attention, v)
    outputs = np.einsum("bpnd,ndc->bpc", mixed, w["output_dense/kernel"])
    if layer.use_bias:
        outputs = outputs + w["output_dense/bias"]
    window = np.zeros((b, h * wd, attention.shape[1], k * k))
    for p in range(h * wd):
        for i in range(k):
            for j in range(k):
                y, x = ys[p] + (i - r) * d, xs[p] + (j - r) * d
                if 0 <= y < h and 0 <= x < wd:
                    window[:, p, :, i * k + j] = attention[:, :, p, y * wd + x]
    return outputs.reshape(query_map.shape), window.reshape(b, h, wd, -1, k * k)


CONFIGS = [
    {"num_heads": 2, "kernel_size": 3},
    {
        "num_heads": 1,
        "kernel_size": 5,
        "dilation": 2,
        "key_dim": 3,
        "value_dim": 5,
        "use_bias": False,
    },
    {"num_heads": 2, "kernel_size": 7},  # window larger than most of the 5 x 6 image
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "_".join(f"{k}{v}" for k, v in c.items()))
def test_local_self_attention_equals_band_masked_dense(config):
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 4)).astype("float32")
    layer = L.LocalSelfAttention2D(**config)
    layer.build(x.shape)
    randomize_weights(layer)
    outputs, attention = layer(x, return_attention=True)
    expected, expected_attention = _dense_band_attention(layer, x, x)
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_numpy(attention).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "config", CONFIGS[:2], ids=lambda c: "_".join(f"{k}{v}" for k, v in c.items())
)
def test_local_cross_attention_equals_band_masked_dense(config):
    rng = np.random.default_rng(1)
    query_frame = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    reference_frame = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    layer = L.LocalCrossAttention2D(**config)
    layer.build([query_frame.shape, reference_frame.shape])
    randomize_weights(layer)
    outputs, attention = layer([query_frame, reference_frame], return_attention=True)
    expected, expected_attention = _dense_band_attention(layer, query_frame, reference_frame)
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-5)


def test_local_self_attention_is_cross_attention_on_the_same_map():
    x = np.random.default_rng(2).normal(size=(1, 4, 4, 4)).astype("float32")
    self_layer = L.LocalSelfAttention2D(num_heads=2, kernel_size=3)
    cross_layer = L.LocalCrossAttention2D(num_heads=2, kernel_size=3)
    self_layer.build(x.shape)
    cross_layer.build([x.shape, x.shape])
    randomize_weights(self_layer)
    cross_layer.set_weights(self_layer.get_weights())
    np.testing.assert_allclose(_numpy(cross_layer([x, x])), _numpy(self_layer(x)), rtol=1e-6)


def test_local_cross_attention_aligns_a_shifted_frame():
    """With identity projections and large logits, attention picks the matching pixel."""
    # one-hot codes (3y + x) mod 9: the nine pixels of every 3 x 3 window differ
    ys, xs = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    reference = np.eye(9, dtype="float32")[(3 * ys + xs) % 9][None]
    query = np.roll(reference, (1, -1), axis=(1, 2))  # query(y, x) = reference(y - 1, x + 1)
    layer = L.LocalCrossAttention2D(kernel_size=3, use_bias=False)
    layer.build([query.shape, reference.shape])
    eye = np.eye(9, dtype="float32")[:, None, :]
    layer.query.kernel.assign(eye * 60.0)  # logit 60 / sqrt(9) = 20 for the match, 0 otherwise
    layer.key.kernel.assign(eye)
    layer.value.kernel.assign(eye)
    layer.output_dense.kernel.assign(np.eye(9, dtype="float32")[None])
    outputs, attention = layer([query, reference], return_attention=True)
    inner = (slice(None), slice(1, -1), slice(1, -1))
    # offset (-1, +1) in the 3 x 3 window: row 0, column 2
    assert np.all(_numpy(attention)[inner][..., 0, 2] > 0.99)
    np.testing.assert_allclose(_numpy(outputs)[inner], query[inner], atol=1e-2)


def test_local_cross_attention_rejects_mismatched_frames():
    layer = L.LocalCrossAttention2D(kernel_size=3)
    with pytest.raises(ValueError, match="inputs"):
        layer.build([(2, 5, 6, 4), (2, 5, 7, 4)])
    with pytest.raises(ValueError, match="inputs"):
        layer.build((2, 5, 6, 4))
