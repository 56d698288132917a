"""Spatial transformers: torch parity of the grid and sampler (values and gradients, committed
fixtures and live torch), exact identities, and the thin-plate spline in closed form."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.layers.spatial_transformer import (
    affine_grid,
    tps_control_points,
    tps_grid,
)
from tests.keras_attention import cases_spatial_transformer
from tests.keras_attention import grid_sample_reference as G
from tests.layer_harness import harness_test, randomize_weights

test_layer_harness = harness_test(cases_spatial_transformer)

ids = [case.id for case in G.CASES]


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


def _images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("case", G.CASES, ids=ids)
def test_grid_sample_matches_committed_torch_fixture(case):
    G.assert_matches(case, G.load_fixture(case))


@pytest.mark.oracle
@pytest.mark.parametrize("case", G.CASES, ids=ids)
def test_grid_sample_matches_live_torch(case):
    pytest.importorskip("torch", reason="live oracle needs the `oracle` extra (torch)")
    G.assert_matches(case, G.torch_run(case, seed=1))


@pytest.mark.parametrize("align_corners", [True, False])
def test_identity_theta_reproduces_the_input(align_corners):
    # Same size: pixel centres map onto themselves under both conventions.
    images = _images((2, 5, 7, 3))
    theta = np.tile(np.array([[[1, 0, 0], [0, 1, 0]]], "float32"), (2, 1, 1))
    grid = L.AffineGrid((5, 7), align_corners=align_corners)(theta)
    out = _numpy(L.BilinearSampler(align_corners=align_corners)([images, grid]))
    # align_corners=True: exact up to float32 rounding; False: the normalised centres
    # (2j + 1) / W - 1 are not exact in float32 (~1e-7 of a pixel off)
    tolerance = 1e-6 if align_corners else 1e-5
    np.testing.assert_allclose(out, images, rtol=0, atol=tolerance * np.abs(images).max())


def test_identity_resize_keeps_corner_pixels_only_with_align_corners():
    # Upsampling 4 -> 7 by the identity: align_corners=True puts the output's corner pixels
    # on the input's corner pixel centres; False maps the outer edges, so the corner output
    # pixels lie outside the corner centres and blend in the zero padding.
    images = _images((1, 4, 4, 1))
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], "float32")
    aligned = _numpy(
        L.BilinearSampler(align_corners=True)(
            [images, L.AffineGrid((7, 7), align_corners=True)(theta)]
        )
    )
    np.testing.assert_allclose(aligned[0, ::2, ::2], images[0], rtol=0, atol=1e-6)
    half_pixel = _numpy(L.BilinearSampler()([images, L.AffineGrid((7, 7))(theta)]))
    # output pixel 0 sits at input coordinate ((1/7) * 4 - 1) / 2 = -3/14 (pixel units):
    # 11/14 of pixel 0 and 3/14 of the zero padding on each axis
    np.testing.assert_allclose(half_pixel[0, 0, 0], images[0, 0, 0] * (11 / 14) ** 2, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"align_corners": True},
        {"transform": "tps"},
        {"transform": "tps", "tps_grid_size": (3, 5), "align_corners": True},
    ],
)
def test_fresh_spatial_transformer_is_the_identity(kwargs):
    images = _images((2, 9, 11, 3))
    layer = L.SpatialTransformer(**kwargs)
    out, grid = layer(images, return_attention=True)
    # affine with align_corners=True: exact up to float32 rounding; with False the
    # normalised centres (2j + 1) / W - 1 are not exact in float32 (~1e-7 of a pixel);
    # TPS: the float32 spline solve leaves ~1e-6 in the grid
    exact = kwargs.get("align_corners") and kwargs.get("transform") != "tps"
    tolerance = (1e-6 if exact else 1e-5) * np.abs(images).max()
    np.testing.assert_allclose(_numpy(out), images, rtol=0, atol=tolerance)
    expected = _numpy(
        affine_grid(
            np.array([[1, 0, 0, 0, 1, 0]] * 2, "float32"), 9, 11, kwargs.get("align_corners", False)
        )
    )
    np.testing.assert_allclose(_numpy(grid), expected, rtol=0, atol=2e-6)


def test_tps_reproduces_affine_maps():
    # A thin-plate spline through control points moved by an affine map is that affine map
    # (the bending part vanishes), so its grid equals affine_grid.
    points = tps_control_points((4, 3))
    a = np.array([[0.8, -0.3, 0.1], [0.2, 1.1, -0.2]])
    targets = points @ a[:, :2].T + a[:, 2]
    grid = _numpy(tps_grid(targets[None].astype("float32"), points, 6, 5, False))
    expected = _numpy(affine_grid(a[None].astype("float32"), 6, 5, False))
    np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-5)


def test_tps_interpolates_its_control_points():
    # With an align_corners=True grid whose pixels include the 3 x 3 control points, the
    # spline passes exactly through the (non-affine) targets there.
    points = tps_control_points((3, 3))
    rng = np.random.default_rng(0)
    targets = points + 0.2 * rng.normal(size=points.shape)
    grid = _numpy(tps_grid(targets[None].astype("float32"), points, 5, 5, True))[0]
    np.testing.assert_allclose(grid[::2, ::2].reshape(-1, 2), targets, rtol=0, atol=1e-5)


def test_user_localization_theta_drives_the_sampler():
    class FixedTheta(keras.layers.Layer):
        def call(self, x):
            theta = keras.ops.convert_to_tensor([[0.5, 0.1, 0.2, -0.1, 0.7, -0.3]])
            return keras.ops.tile(theta, (keras.ops.shape(x)[0], 1))

        def compute_output_shape(self, shape):
            return (shape[0], 6)

    images = _images((2, 8, 10, 2))
    layer = L.SpatialTransformer(localization=FixedTheta(), output_size=(5, 6))
    theta = np.tile(np.array([[0.5, 0.1, 0.2, -0.1, 0.7, -0.3]], "float32"), (2, 1))
    expected = L.BilinearSampler()([images, L.AffineGrid((5, 6))(theta)])
    np.testing.assert_allclose(_numpy(layer(images)), _numpy(expected), rtol=1e-6, atol=1e-6)


def test_localization_with_the_wrong_output_width_is_rejected():
    loc = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"`localization` must map the input to \(batch, 6\)"):
        L.SpatialTransformer(localization=loc).build((2, 8, 8, 3))


def test_localization_head_gets_the_torch_theta_gradient():
    # With a zero kernel the default network's regression bias *is* theta, so its gradient
    # must equal torch's d loss / d theta (committed fixture, first sample; the harness'
    # projection for batch 1 is the first sample of the batch-2 projection).
    from tests.layer_harness import loss_and_gradients

    case = G.CASES[1]  # same size, align_corners=False
    data = G.load_fixture(case)
    layer = L.SpatialTransformer()
    layer.build(case.input_shape)
    randomize_weights(layer)
    head = layer.loc_layers[-1]
    head.kernel.assign(np.zeros(head.kernel.shape, "float32"))
    head.bias.assign(data["theta"][0].reshape(-1))
    output, grads, _ = loss_and_gradients(layer, data["images"][:1])
    np.testing.assert_allclose(output, data["output"][:1], rtol=1e-5, atol=1e-5)
    bias_grad = dict(zip([v.path for v in layer.trainable_variables], grads))[head.bias.path]
    reference = data["grad_theta"][0].reshape(-1)
    np.testing.assert_allclose(bias_grad, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_tps_grid_for_dynamic_sizes_matches_the_static_path():
    # Unknown sizes (symbolic TF graphs) take the keras.ops path; static ones the float64 one.
    points = tps_control_points((3, 4))
    targets = (points + 0.1 * np.random.default_rng(1).normal(size=points.shape))[None]
    targets = targets.astype("float32")
    static = _numpy(tps_grid(targets, points, 6, 5, False))
    size = keras.ops.convert_to_tensor
    dynamic = _numpy(tps_grid(targets, points, size(6), size(5), False))
    np.testing.assert_allclose(dynamic, static, rtol=0, atol=1e-5)
