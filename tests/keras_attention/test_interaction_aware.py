"""Closed-form checks of InteractionAwareAttention and of its PCA-inspired auxiliary loss."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.layers.interaction_aware import _resample_axis


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), dtype="float64")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _centred(x):
    return x - x.mean(axis=(1, 2), keepdims=True)


def _pca_loss(maps, kernels):
    total = 0.0
    for x, w in zip(maps, kernels):
        xc = _centred(x.astype("float64"))
        residual = xc - xc @ w @ w.T
        total += np.mean(np.sum(residual**2, axis=-1))
    return total / len(maps)


def _expected_forward(resampled, kernels):
    b, h, w, _ = resampled[0].shape
    y = np.concatenate([_centred(x) @ k for x, k in zip(resampled, kernels)], axis=-1)
    y = y.reshape(b, h * w, -1)
    logits = np.einsum("bpd,bqd->bpq", y, y) / np.sqrt(y.shape[-1])
    attention = _softmax(logits, axis=-1)
    values = np.concatenate(resampled, axis=-1).reshape(b, h * w, -1)
    outputs = np.einsum("bpq,bqc->bpc", attention, values)
    return outputs.reshape(b, h, w, -1), attention.reshape(b, h, w, h, w)


@pytest.mark.parametrize("interpolation, target_index", [("nearest", 0), ("bilinear", 1)])
def test_interaction_aware_closed_form(interpolation, target_index):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    x1 = rng.normal(size=(2, 2, 2, 5)).astype("float32")
    layer = L.InteractionAwareAttention(
        projection_dim=2, interpolation=interpolation, target_index=target_index
    )
    layer.build([x0.shape, x1.shape])
    kernels = [rng.normal(size=(6, 2)), rng.normal(size=(5, 2))]
    for variable, kernel in zip(layer.projections, kernels):
        variable.assign(kernel.astype("float32"))
    outputs, attention = layer([x0, x1], return_attention=True)

    if target_index == 0:  # 2x nearest upsampling with half-pixel centres: repetition
        resampled = [x0, x1.repeat(2, axis=1).repeat(2, axis=2)]
    else:  # 2x bilinear downsampling with half-pixel centres: the mean of each 2 x 2 block
        resampled = [x0.reshape(2, 2, 2, 2, 2, 6).mean(axis=(2, 4)), x1]
    resampled = [r.astype("float64") for r in resampled]
    expected, expected_attention = _expected_forward(resampled, kernels)
    np.testing.assert_allclose(_numpy(attention), expected_attention, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(outputs), expected, rtol=1e-4, atol=1e-5)


def _bilinear_reference(x, size):
    """Half-pixel-centre bilinear resize (no antialiasing) in NumPy, separable."""

    def along(x, axis, out):
        n = x.shape[axis]
        source = np.maximum((np.arange(out) + 0.5) * n / out - 0.5, 0.0)
        lower = np.minimum(np.floor(source).astype(int), n - 1)
        upper = np.minimum(lower + 1, n - 1)
        frac = source - np.floor(source)
        shape = [1] * x.ndim
        shape[axis] = out
        frac = frac.reshape(shape)
        return np.take(x, lower, axis) * (1 - frac) + np.take(x, upper, axis) * frac

    return along(along(x, 1, size[0]), 2, size[1])


@pytest.mark.parametrize("size", [(7, 3), (10, 12), (2, 5)])
def test_interaction_aware_resampling_matches_bilinear_resize(size):
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 3)).astype("float32")
    y = _resample_axis(_resample_axis(x, size[0], 1, "bilinear"), size[1], 2, "bilinear")
    np.testing.assert_allclose(_numpy(y), _bilinear_reference(x, size), rtol=1e-5, atol=1e-6)
    resized = keras.ops.image.resize(x, size, interpolation="bilinear", antialias=False)
    np.testing.assert_allclose(_numpy(y), _numpy(resized), rtol=1e-5, atol=1e-5)


def test_interaction_aware_loss_added_in_training_only():
    rng = np.random.default_rng(2)
    maps = [
        rng.normal(size=(2, 4, 4, 6)).astype("float32"),
        rng.normal(size=(2, 8, 8, 3)).astype("float32"),
    ]
    layer = L.InteractionAwareAttention(projection_dim=2, loss_weight=0.3)
    layer.build([m.shape for m in maps])
    # W_0: the first two coordinate axes; W_1: a non-orthonormal matrix
    kernels = [np.eye(6, 2), rng.normal(size=(3, 2))]
    for variable, kernel in zip(layer.projections, kernels):
        variable.assign(kernel.astype("float32"))

    layer(maps, training=False)
    assert len(layer.losses) == 0
    layer(maps, training=True)
    assert len(layer.losses) == 1
    expected = 0.3 * _pca_loss(maps, kernels)
    np.testing.assert_allclose(_numpy(layer.losses[0]), expected, rtol=1e-5)
    # the documented value for W_0 = the first two axes: the energy of the other channels
    only_first = _pca_loss(maps[:1], kernels[:1])
    discarded = _centred(maps[0].astype("float64"))[..., 2:]
    np.testing.assert_allclose(only_first, np.mean(np.sum(discarded**2, -1)), rtol=1e-9)
    np.testing.assert_allclose(_numpy(layer.pca_loss(maps[:1])), only_first, rtol=1e-5)

    silent = L.InteractionAwareAttention(projection_dim=2, loss_weight=0.0)
    silent(maps, training=True)
    assert len(silent.losses) == 0


def test_interaction_aware_loss_alone_finds_the_principal_subspace():
    """Training with only the auxiliary loss turns W into orthonormal principal directions."""
    rng = np.random.default_rng(3)
    b, n, c, d = 8, 16, 5, 2
    rotation, _ = np.linalg.qr(rng.normal(size=(c, c)))
    scales = np.sqrt([8.0, 4.0, 0.5, 0.2, 0.1])
    features = rng.normal(size=(b, n, c)) * scales @ rotation.T
    features += rng.normal(size=(b, 1, c)) * 3.0  # per-example offsets: removed by centring
    x = features.reshape(b, 4, 4, c).astype("float32")

    centred = _centred(x.astype("float64")).reshape(-1, c)
    covariance = centred.T @ centred / len(centred)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    top = eigenvectors[:, -d:]

    inputs = keras.Input((4, 4, c))
    layer = L.InteractionAwareAttention(projection_dim=d)
    model = keras.Model(inputs, layer(inputs))
    layer.projections[0].assign((rng.normal(size=(c, d)) * 0.3).astype("float32"))
    model.compile(optimizer=keras.optimizers.SGD(0.02))  # no compiled loss: add_loss only
    model.fit(np.tile(x, (50, 1, 1, 1)), batch_size=b, epochs=6, shuffle=False, verbose=0)

    w = _numpy(layer.projections[0])
    np.testing.assert_allclose(w.T @ w, np.eye(d), atol=1e-2)
    np.testing.assert_allclose(w @ w.T, top @ top.T, atol=1e-2)
    # at the minimum, the loss is the variance left in the discarded directions
    np.testing.assert_allclose(_pca_loss([x], [w]), eigenvalues[:-d].sum(), rtol=1e-3)
