"""DRAW's Gaussian attention against the paper's filterbank formulas in NumPy (float64)."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.layer_harness import randomize_weights


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), "float64")


def _draw_filterbanks(params, n, height, width, eps=1e-8):
    """DRAW (Gregor et al. 2015, eqs. 19-26) with 0-based pixel coordinates."""
    gx_, gy_, log_var, log_delta, log_gamma = params.T
    gx = (width + 1) / 2 * (gx_ + 1)
    gy = (height + 1) / 2 * (gy_ + 1)
    delta = (max(width, height) - 1) / (n - 1) * np.exp(log_delta)
    var, gamma = np.exp(log_var), np.exp(log_gamma)
    banks = []
    for g, size in ((gx, width), (gy, height)):
        f = np.zeros((len(params), n, size))
        for b in range(len(params)):
            for i in range(1, n + 1):
                mu = g[b] + (i - n / 2 - 0.5) * delta[b]
                f[b, i - 1] = np.exp(-((np.arange(size) - mu) ** 2) / (2 * var[b]))
        banks.append(f / np.maximum(f.sum(-1, keepdims=True), eps))
    return banks[0], banks[1], gamma


def _layer(inputs, seed=0, **kwargs):
    layer = L.GaussianAttention(**kwargs)
    layer.build([x.shape for x in inputs])
    randomize_weights(layer, seed)
    # moderate parameters: the harness' random weights alone give very wide glimpses
    layer.params.kernel.assign(0.3 * _numpy(layer.params.kernel).astype("float32"))
    return layer


def _params(layer, conditioning):
    return conditioning.astype("float64") @ _numpy(layer.params.kernel) + _numpy(layer.params.bias)


def test_read_matches_draw_formula():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 10, 13, 2)).astype("float32")
    conditioning = rng.normal(size=(3, 7)).astype("float32")
    layer = _layer([images, conditioning], glimpse_size=5)
    glimpse, footprint = layer([images, conditioning], return_attention=True)
    fx, fy, gamma = _draw_filterbanks(_params(layer, conditioning), 5, 10, 13)
    expected = gamma[:, None, None, None] * np.einsum("bih,bhwc,bjw->bijc", fy, images, fx)
    np.testing.assert_allclose(
        _numpy(glimpse), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )
    expected_footprint = fy.sum(1)[:, :, None, None] * fx.sum(1)[:, None, :, None]
    np.testing.assert_allclose(_numpy(footprint), expected_footprint, rtol=1e-5, atol=1e-6)


def test_write_is_the_transpose_scaled_by_inverse_intensity():
    rng = np.random.default_rng(1)
    patch = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    images = rng.normal(size=(2, 9, 11, 3)).astype("float32")
    conditioning = rng.normal(size=(2, 6)).astype("float32")
    write = _layer([patch, conditioning], glimpse_size=4, mode="write", output_size=(9, 11))
    read = L.GaussianAttention(4)
    read.build([images.shape, conditioning.shape])
    read.set_weights(write.get_weights())
    canvas = _numpy(write([patch, conditioning]))
    fx, fy, gamma = _draw_filterbanks(_params(write, conditioning), 4, 9, 11)
    expected = np.einsum("bih,bijc,bjw->bhwc", fy, patch, fx) / gamma[:, None, None, None]
    np.testing.assert_allclose(canvas, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # adjoint: <read(x), p> = gamma^2 <x, write(p)> per sample
    glimpse = _numpy(read([images, conditioning]))
    lhs = np.einsum("bijc,bijc->b", glimpse, patch)
    rhs = gamma**2 * np.einsum("bhwc,bhwc->b", images, canvas)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def test_fresh_parameters_centre_the_grid_over_the_whole_image():
    # Zero kernel and bias: gx = (A + 1) / 2, delta = (max(A, B) - 1) / (N - 1), sigma = 1,
    # gamma = 1; each row of the filterbanks sums to one.
    layer = L.GaussianAttention(3)
    layer.build([(1, 7, 9, 1), (1, 4)])
    layer.params.kernel.assign(np.zeros((4, 5), "float32"))
    fx, fy, gamma = (_numpy(t) for t in layer.filterbanks(np.ones((1, 4), "float32"), 7, 9))
    np.testing.assert_allclose(fx.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(gamma, [1.0])
    # centres at gx + (i - 2) * 4 for i = 1..3 -> 1, 5, 9 (x); gy = 4 -> 0, 4, 8 (y)
    assert list(np.argmax(fx[0], axis=-1)) == [1, 5, 8]  # 9 is off the 9-wide image
    assert list(np.argmax(fy[0], axis=-1)) == [0, 4, 6]  # 8 is off the 7-high image
    # the middle filter is symmetric about its centre where the image allows
    np.testing.assert_allclose(fx[0, 1, 3], fx[0, 1, 7], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"glimpse_size": 4, "mode": "write"}, r"`output_size` is required"),
        ({"glimpse_size": 4, "output_size": (5, 5)}, r"mode='write' only"),
    ],
)
def test_output_size_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        L.GaussianAttention(**kwargs)
