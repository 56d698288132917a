"""Closed-form checks of GeneralizedAttention against NumPy, one logit term at a time."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_generalized_attention
from tests.layer_harness import harness_test, randomize_weights

test_layer_harness = harness_test(cases_generalized_attention)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), "float64")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _embedding(offset, dim):
    """mmcv's sinusoidal embedding of one offset: sines then cosines of offset / 1000^(4k/dim)."""
    angles = offset / 1000.0 ** (4.0 * np.arange(dim // 4) / dim)
    return np.concatenate([np.sin(angles), np.cos(angles)])


def _reference(layer, x, attention_type, heads, stride, magnitude, dim):
    """Logits as the sum of the selected terms, each computed on its own per position pair."""
    e1, e2, e3, e4 = (f == "1" for f in attention_type)
    b, h, w, c = x.shape
    d = c // heads
    x_kv = x[:, ::stride, ::stride]
    hk, wk = x_kv.shape[1:3]

    def conv(sub, inputs):
        return (inputs @ _numpy(sub.kernel)[0, 0]).reshape(*inputs.shape[:3], heads, d)

    q = conv(layer.query, x) if e1 or e2 else None
    k = conv(layer.key, x_kv) if e1 or e3 else None
    u = _numpy(layer.content_bias).reshape(heads, d) if e3 else None
    v = _numpy(layer.position_bias).reshape(heads, d) if e4 else None
    if e2 or e4:
        wx, wy = _numpy(layer.position_x.kernel), _numpy(layer.position_y.kernel)

    logits = np.zeros((b, heads, h * w, hk * wk))
    for y in range(h):
        for xq in range(w):
            i = y * w + xq
            for ky in range(hk):
                for kx in range(wk):
                    j = ky * wk + kx
                    if e2 or e4:
                        rx = _embedding((xq - kx * stride) * magnitude, dim) @ wx
                        ry = _embedding((y - ky * stride) * magnitude, dim) @ wy
                        r = ((rx + ry) / np.sqrt(2)).reshape(heads, d)
                    if e1:  # query content x key content
                        logits[:, :, i, j] += np.einsum("bnd,bnd->bn", q[:, y, xq], k[:, ky, kx])
                    if e2:  # query content x relative position
                        logits[:, :, i, j] += np.einsum("bnd,nd->bn", q[:, y, xq], r)
                    if e3:  # key content alone
                        logits[:, :, i, j] += np.einsum("nd,bnd->bn", u, k[:, ky, kx])
                    if e4:  # relative position alone
                        logits[:, :, i, j] += np.einsum("nd,nd->n", v, r)
    attention = _softmax(logits, axis=-1)
    values = conv(layer.value, x_kv).reshape(b, hk * wk, heads, d)
    mixed = np.einsum("bnij,bjnd->bind", attention, values).reshape(b, h, w, heads * d)
    projected = mixed @ _numpy(layer.output_proj.kernel)[0, 0] + _numpy(layer.output_proj.bias)
    return _numpy(layer.gamma) * projected + x, attention


@pytest.mark.parametrize(
    "attention_type, heads, stride, magnitude, dim",
    [
        ("1000", 2, 1, 1.0, None),
        ("0100", 2, 1, 1.0, None),
        ("0010", 2, 1, 1.0, None),
        ("0001", 2, 1, 1.0, None),
        ("1111", 2, 1, 1.0, None),
        ("1111", 4, 2, 0.5, 12),
        ("0110", 1, 3, 2.0, 4),
    ],
)
def test_generalized_attention_closed_form(attention_type, heads, stride, magnitude, dim):
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 8)).astype("float32")  # non-square
    layer = L.GeneralizedAttention(
        num_heads=heads,
        attention_type=attention_type,
        position_embedding_dim=dim,
        position_magnitude=magnitude,
        kv_stride=stride,
    )
    layer.build(x.shape)
    randomize_weights(layer, seed=1)

    outputs, attention = layer(x, return_attention=True)

    expected, expected_attention = _reference(
        layer, x.astype("float64"), attention_type, heads, stride, magnitude, dim or x.shape[-1]
    )
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-5)


def test_generalized_attention_starts_as_identity_with_mmcv_initialisation():
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 16)).astype("float32")
    layer = L.GeneralizedAttention(num_heads=4)
    np.testing.assert_array_equal(_numpy(layer(x)), x)
    bound = 1 / np.sqrt(2 * 4)
    for weight in (layer.content_bias, layer.position_bias):
        assert np.all(np.abs(_numpy(weight)) <= bound)
    # mmcv's Kaiming uniform with a=1, fan_in: bound sqrt(3 / fan_in)
    assert np.abs(_numpy(layer.query.kernel)).max() <= np.sqrt(3 / 16)


def test_generalized_attention_builds_only_the_weights_of_its_terms():
    layer = L.GeneralizedAttention(num_heads=2, attention_type="0010")
    layer.build((None, None, None, 8))
    names = {w.path.split("/", 1)[1] for w in layer.weights}
    assert names == {
        "content_bias",
        "gamma",
        "key/kernel",
        "value/kernel",
        "output/kernel",
        "output/bias",
    }
