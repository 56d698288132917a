"""Hard attention layers against NumPy: crops, RAM's glimpses, top-k / adaptive selection,
RA-CNN's boxcar mask and zoom, and the attention proposal."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_hard_attention
from tests.layer_harness import harness_test, loss_and_gradients, randomize_weights

test_layer_harness = harness_test(cases_hard_attention)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")), "float64")


def _images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _np_crop(image, top, left, h, w):
    """image[top:top+h, left:left+w] with zeros outside (one HWC image)."""
    out = np.zeros((h, w, image.shape[-1]))
    for i in range(h):
        for j in range(w):
            y, x = top + i, left + j
            if 0 <= y < image.shape[0] and 0 <= x < image.shape[1]:
                out[i, j] = image[y, x]
    return out


def test_hard_crop_is_slicing_with_zero_padding_and_gradients_reach_pixels_only():
    images = _images((4, 7, 9, 2))
    corners = np.array([[1, 2], [-2, 6], [5, -1], [0, 0]], "int32")
    layer = L.HardCrop((3, 4))
    crops, mask = layer([images, corners], return_attention=True)
    expected = np.stack([_np_crop(images[b], *corners[b], 3, 4) for b in range(4)])
    np.testing.assert_array_equal(_numpy(crops), expected)
    expected_mask = np.zeros((4, 7, 9, 1))
    for b, (y, x) in enumerate(corners):
        expected_mask[b, max(y, 0) : y + 3, max(x, 0) : x + 4] = 1
    np.testing.assert_array_equal(_numpy(mask), expected_mask)
    # float corners are floored: 1.7 -> 1, -1.2 -> -2
    floats = corners.astype("float32") + np.array(
        [[0.7, 0.2], [0.8, 0.5], [0.1, 0.9], [0, 0]], "float32"
    )
    np.testing.assert_array_equal(_numpy(layer([images, floats])), expected)
    # d sum(crops * P) / d images = P scattered back into the window; none to the corners
    _, _, (grad_images, grad_corners) = loss_and_gradients(layer, [images, floats])
    projection = np.random.default_rng(123).normal(size=(4, 3, 4, 2)).astype("float32")
    expected_grad = np.zeros(images.shape)
    for b, (y, x) in enumerate(corners):
        for i in range(3):
            for j in range(4):
                if 0 <= y + i < 7 and 0 <= x + j < 9:
                    expected_grad[b, y + i, x + j] += projection[b, i, j]
    np.testing.assert_allclose(grad_images, expected_grad, rtol=1e-6, atol=1e-6)
    assert grad_corners is None or not np.any(grad_corners)


def _np_glimpse(image, location, g, k, f):
    h, w = image.shape[:2]
    patches = []
    for s in range(k):
        side, r = g * f**s, f**s
        top = int(np.floor((location[0] + 1) / 2 * h - side / 2 + 0.5))
        left = int(np.floor((location[1] + 1) / 2 * w - side / 2 + 0.5))
        patch = _np_crop(image, top, left, side, side)
        patches.append(patch.reshape(g, r, g, r, -1).mean(axis=(1, 3)))
    return np.stack(patches)


@pytest.mark.parametrize("g, k, f", [(4, 3, 2), (3, 2, 3), (2, 1, 2)])
def test_glimpse_sensor_matches_numpy(g, k, f):
    images = _images((3, 12, 16, 2))
    locations = np.array([[0.0, 0.0], [-0.5, 0.25], [-1.0, 1.0]], "float32")  # (y, x)
    out = _numpy(L.GlimpseSensor(g, k, f)([images, locations]))
    expected = np.stack([_np_glimpse(images[b], locations[b], g, k, f) for b in range(3)])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_glimpse_sensor_placement_by_hand():
    # 12 x 16 image, g = 4: l = (0, 0) -> rows 4..7, cols 6..9; the 8-wide scale covers
    # rows 2..9, cols 4..11 pooled 2 x 2. l = (-1, 1) (top-right corner, (y, x) order):
    # rows -2..1 and cols 14..17, so only the patch's bottom-left quarter is in the image.
    images = _images((2, 12, 16, 1))
    locations = np.array([[0.0, 0.0], [-1.0, 1.0]], "float32")
    out = _numpy(L.GlimpseSensor(4, 2, 2)([images, locations]))
    np.testing.assert_array_equal(out[0, 0], images[0, 4:8, 6:10])
    coarse = images[0, 2:10, 4:12].reshape(4, 2, 4, 2, 1).mean(axis=(1, 3))
    np.testing.assert_allclose(out[0, 1], coarse, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[1, 0, 2:, :2], images[1, 0:2, 14:16])
    assert not np.any(out[1, 0, :2]) and not np.any(out[1, 0, :, 2:])


def test_top_k_keeps_the_k_largest_norm_cells():
    x = _images((3, 5, 6, 4))
    out, mask = L.TopKHardAttention(7)(x, return_attention=True)
    norms = np.linalg.norm(x.astype("float64"), axis=-1).reshape(3, -1)
    keep = np.zeros_like(norms)
    np.put_along_axis(keep, np.argsort(-norms, axis=-1)[:, :7], 1.0, axis=-1)
    keep = keep.reshape(3, 5, 6, 1)
    np.testing.assert_array_equal(_numpy(mask), keep)
    np.testing.assert_array_equal(_numpy(out), x * keep)


def test_adaptive_keeps_cells_above_the_uniform_share():
    x = _images((3, 5, 6, 4)) * np.linspace(0.2, 2.0, 30).reshape(1, 5, 6, 1).astype("float32")
    out, mask = L.AdaptiveHardAttention()(x, return_attention=True)
    norms = np.linalg.norm(x.astype("float64"), axis=-1).reshape(3, -1)
    shares = np.exp(norms - norms.max(-1, keepdims=True))
    shares /= shares.sum(-1, keepdims=True)
    keep = (shares > 1 / 30).astype("float64").reshape(3, 5, 6, 1)
    assert 0 < keep.sum() < keep.size  # a non-trivial selection
    np.testing.assert_array_equal(_numpy(mask), keep)
    np.testing.assert_array_equal(_numpy(out), x * keep)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _np_bilinear(image, px, py):
    """Bilinear samples of one HWC image at pixel coordinates, zeros outside."""
    h, w = image.shape[:2]
    out = np.zeros(px.shape + image.shape[-1:])
    for idx in np.ndindex(px.shape):
        x, y = px[idx], py[idx]
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    out[idx] += wy * wx * image[yy, xx]
    return out


def test_boxcar_crop_matches_numpy_mask_and_zoom():
    images = _images((2, 10, 12, 3))
    boxes = np.array([[0.1, -0.2, 0.5], [-0.6, 0.3, 0.8]], "float32")  # (tx, ty, tl)
    out, mask = L.BoxcarCrop((5, 7), sharpness=3.0)([images, boxes], return_attention=True)
    for b, (tx, ty, tl) in enumerate(boxes.astype("float64")):
        cx, cy, hx, hy = (tx + 1) / 2 * 12, (ty + 1) / 2 * 10, tl / 2 * 12, tl / 2 * 10
        xs, ys = np.arange(12) + 0.5, np.arange(10) + 0.5
        mx = _sigmoid(3 * (xs - cx + hx)) - _sigmoid(3 * (xs - cx - hx))
        my = _sigmoid(3 * (ys - cy + hy)) - _sigmoid(3 * (ys - cy - hy))
        m = my[:, None, None] * mx[None, :, None]
        np.testing.assert_allclose(_numpy(mask)[b], m, rtol=1e-5, atol=1e-6)
        px = cx - hx + (np.arange(7) + 0.5) * 2 * hx / 7 - 0.5
        py = cy - hy + (np.arange(5) + 0.5) * 2 * hy / 5 - 0.5
        px, py = np.meshgrid(px, py)
        expected = _np_bilinear(images[b] * m, px, py)
        np.testing.assert_allclose(_numpy(out)[b], expected, rtol=1e-5, atol=1e-5)


def test_sharp_boxcar_on_pixel_boundaries_is_an_exact_crop():
    # Box over pixels 2..7 on both axes of a 12 x 12 image, zoomed to its own 6 x 6 size:
    # samples land on pixel centres and a steep mask is 1 inside, so it is image[2:8, 2:8].
    images = _images((1, 12, 12, 2))
    boxes = np.array([[5 / 6 - 1, 5 / 6 - 1, 0.5]], "float32")
    out = _numpy(L.BoxcarCrop((6, 6), sharpness=100.0)([images, boxes]))
    np.testing.assert_allclose(out[0], images[0, 2:8, 2:8], rtol=1e-5, atol=1e-5)


def test_boxcar_crop_gradient_reaches_the_box():
    images = _images((2, 10, 12, 3))
    boxes = np.array([[0.1, -0.2, 0.5], [-0.6, 0.3, 0.8]], "float32")
    _, _, (grad_images, grad_boxes) = loss_and_gradients(L.BoxcarCrop((5, 7)), [images, boxes])
    assert np.all(np.isfinite(grad_boxes)) and np.all(grad_boxes != 0)
    # central finite differences of the same loss; bilinear zoom is piecewise linear in the
    # box, so the step is small enough (1e-3) not to move these samples across pixel cells
    projection = np.random.default_rng(123).normal(size=(2, 5, 7, 3))
    layer = L.BoxcarCrop((5, 7))

    def loss(bx):
        return float(np.sum(_numpy(layer([images, bx])) * projection))

    for b, i in ((0, 0), (0, 2), (1, 2)):
        step = np.zeros_like(boxes)
        step[b, i] = 1e-3
        numeric = (loss(boxes + step) - loss(boxes - step)) / 2e-3
        np.testing.assert_allclose(grad_boxes[b, i], numeric, rtol=2e-2)


def test_attention_proposal_outputs():
    features = _images((2, 4, 5, 6))
    fresh = L.AttentionProposal(units=8)
    np.testing.assert_allclose(_numpy(fresh(features)), [[0, 0, 2 / 3]] * 2, atol=1e-7)
    layer = L.AttentionProposal(units=8, pooling="avg", min_half_size=0.2)
    layer.build(features.shape)
    randomize_weights(layer)
    w = {v.path.split("/")[-2] + "/" + v.path.split("/")[-1]: _numpy(v) for v in layer.weights}
    hidden = np.tanh(features.mean(axis=(1, 2)) @ w["hidden/kernel"] + w["hidden/bias"])
    raw = hidden @ w["box/kernel"] + w["box/bias"]
    expected = np.concatenate([np.tanh(raw[:, :2]), 0.2 + 0.8 * _sigmoid(raw[:, 2:])], -1)
    np.testing.assert_allclose(_numpy(layer(features)), expected, rtol=1e-5, atol=1e-6)
