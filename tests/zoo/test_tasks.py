"""Translated, cluttered and RTS MNIST (zoo.tasks): determinism, content, no leakage."""

import numpy as np
import pytest

from zoo import datasets, tasks


@pytest.fixture(scope="module")
def test_digits():
    return datasets.mnist_subset("test")


def _digit_rows(images):
    return {bytes(img) for img in np.asarray(images, np.float32).reshape(len(images), -1)}


@pytest.mark.parametrize("task", ["translated_mnist", "cluttered_mnist", "rts_mnist"])
def test_same_seed_same_arrays_other_seed_other_arrays(task):
    fn = tasks.TASKS[task]
    a, ya, ma = fn("test", seed=3)
    b, yb, mb = fn("test", seed=3)
    c, yc, _ = fn("test", seed=4)
    np.testing.assert_array_equal(a, b)
    for key in ma:
        np.testing.assert_array_equal(ma[key], mb[key])
    # Labels do not depend on the seed; the images do, almost everywhere.
    np.testing.assert_array_equal(ya, yc)
    assert np.mean(np.any(a != c, axis=(1, 2, 3))) > 0.9
    assert a.dtype == np.float32 and ya.dtype == np.int64
    assert a.min() == 0.0 and a.max() <= 1.0


@pytest.mark.parametrize("task", ["translated_mnist", "cluttered_mnist", "rts_mnist"])
def test_labels_are_the_subset_labels(task, test_digits):
    _, labels, _ = tasks.TASKS[task]("test", seed=0)
    np.testing.assert_array_equal(labels, test_digits[1])


def test_translated_canvas_holds_the_exact_digit_at_its_offset(test_digits):
    digits, _ = test_digits
    images, _, meta = tasks.translated_mnist("test", size=60, seed=5)
    assert images.shape == (1000, 60, 60, 1)
    offsets = meta["offsets"]
    assert offsets.min() >= 0 and offsets.max() <= 32
    # Offsets cover the whole range (uniform placement), not just the centre.
    assert offsets.min() <= 1 and offsets.max() >= 31
    for i in range(0, 1000, 37):
        r, c = offsets[i]
        np.testing.assert_array_equal(images[i, r : r + 28, c : c + 28], digits[i])
        outside = images[i].copy()
        outside[r : r + 28, c : c + 28] = 0
        assert not outside.any()


def test_cluttered_rebuilds_from_metadata_and_clutter_never_uses_the_digit(test_digits):
    digits, _ = test_digits
    images, _, meta = tasks.cluttered_mnist("test", size=60, num_clutter=4, clutter_size=8, seed=2)
    sources, crops, places = meta["clutter_sources"], meta["clutter_crops"], meta["clutter_offsets"]
    assert sources.shape == (1000, 4) and crops.shape == places.shape == (1000, 4, 2)
    assert sources.min() >= 0 and sources.max() < 1000
    assert not np.any(sources == np.arange(1000)[:, None])
    for i in range(0, 1000, 41):
        canvas = np.zeros((60, 60, 1), np.float32)
        for k in range(4):
            (sr, sc), (r, c) = crops[i, k], places[i, k]
            canvas[r : r + 8, c : c + 8] = np.maximum(
                canvas[r : r + 8, c : c + 8], digits[sources[i, k], sr : sr + 8, sc : sc + 8]
            )
        r, c = meta["offsets"][i]
        canvas[r : r + 28, c : c + 28] = np.maximum(canvas[r : r + 28, c : c + 28], digits[i])
        np.testing.assert_array_equal(images[i], canvas)
        # The digit's ink is there, undimmed.
        window = images[i, r : r + 28, c : c + 28]
        assert np.all(window >= digits[i])


def test_cluttered_100_has_eight_pieces_and_more_ink_than_translated():
    images, _, meta = tasks.cluttered_mnist("test", size=100, num_clutter=8, seed=0)
    plain, _, _ = tasks.translated_mnist("test", size=100, seed=0)
    assert images.shape == (1000, 100, 100, 1)
    assert meta["clutter_sources"].shape == (1000, 8)
    assert images.sum() > 1.2 * plain.sum()


def test_no_test_pixel_reaches_a_training_image():
    """Every 8x8 clutter piece of the training task is cut from a training digit; no test
    digit equals a training digit, so no test ink is in the training canvases."""
    train_digits, _ = datasets.mnist_subset("train")
    test_digits, _ = datasets.mnist_subset("test")
    assert not _digit_rows(train_digits) & _digit_rows(test_digits)
    images, _, meta = tasks.cluttered_mnist("train", seed=1)
    assert meta["clutter_sources"].max() < 4000
    # Check the pieces themselves for a sample: each equals the crop of its training
    # source wherever nothing else was pasted over it (here: the first piece, before the
    # others, against a canvas rebuilt from training digits alone).
    for i in range(0, 4000, 97):
        rebuilt = np.zeros((60, 60, 1), np.float32)
        for k in range(4):
            (sr, sc), (r, c) = meta["clutter_crops"][i, k], meta["clutter_offsets"][i, k]
            piece = train_digits[meta["clutter_sources"][i, k], sr : sr + 8, sc : sc + 8]
            rebuilt[r : r + 8, c : c + 8] = np.maximum(rebuilt[r : r + 8, c : c + 8], piece)
        r, c = meta["offsets"][i]
        rebuilt[r : r + 28, c : c + 28] = np.maximum(
            rebuilt[r : r + 28, c : c + 28], train_digits[i]
        )
        np.testing.assert_array_equal(images[i], rebuilt)


def test_rts_is_the_rotated_scaled_digit_at_its_offset(test_digits):
    """Rebuild each transformed digit with an independent resampler (scipy) and compare."""
    ndimage = pytest.importorskip("scipy.ndimage")
    digits, _ = test_digits
    images, _, meta = tasks.rts_mnist("test", seed=1)
    angles, scales, offsets = meta["angles"], meta["scales"], meta["offsets"]
    assert images.shape == (1000, 42, 42, 1)
    assert -90 <= angles.min() < -80 and 80 < angles.max() <= 90
    assert 0.7 <= scales.min() < 0.72 and 1.18 < scales.max() <= 1.2
    for i in range(0, 1000, 53):
        theta = np.deg2rad(angles[i])
        # A digit pixel q = (row, col) lands at p = 23.5 + scale * rot @ (q - 13.5) of the
        # 48x48 working patch; scipy wants the inverse map p -> q.
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        inverse = rot.T / scales[i]
        patch = ndimage.affine_transform(
            digits[i, :, :, 0].astype(np.float64),
            inverse,
            offset=np.array([13.5, 13.5]) - inverse @ np.array([23.5, 23.5]),
            output_shape=(48, 48),
            order=1,
            mode="constant",
        )
        canvas = np.zeros((42 + 96, 42 + 96))
        r, c = offsets[i] + 48
        canvas[r : r + 48, c : c + 48] = patch
        np.testing.assert_allclose(images[i, :, :, 0], canvas[48:90, 48:90], atol=1e-5)


def test_rts_ink_stays_inside_the_canvas():
    images, _, meta = tasks.rts_mnist("train", seed=0)
    digits, _ = datasets.mnist_subset("train")
    # Ink mass scales as scale^2 (nothing was cut off at the border).
    ratio = images.sum(axis=(1, 2, 3)) / digits.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(ratio, meta["scales"] ** 2, rtol=0.06)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="`size` must be an integer >= 28"):
        tasks.translated_mnist("test", size=20)
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer"):
        tasks.translated_mnist("test", seed=-1)
    with pytest.raises(ValueError, match="`clutter_size` must be an integer in"):
        tasks.cluttered_mnist("test", clutter_size=30)
    with pytest.raises(ValueError, match="`scale_range`"):
        tasks.rts_mnist("test", scale_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="split='val'"):
        tasks.rts_mnist("val")


def test_reexported_from_datasets_and_as_tf_dataset():
    assert datasets.translated_mnist is tasks.translated_mnist
    images, labels, _ = tasks.translated_mnist("test", seed=0)
    ds = tasks.as_tf_dataset(images, labels, batch_size=256)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [256, 256, 256, 232]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    shuffled = tasks.as_tf_dataset(images, labels, batch_size=1000, shuffle=True, seed=1)
    x, y = next(shuffled.as_numpy_iterator())
    assert not np.array_equal(y, labels)
    order = np.argsort([bytes(img) for img in x.reshape(1000, -1)])
    ref = np.argsort([bytes(img) for img in images.reshape(1000, -1)])
    np.testing.assert_array_equal(y[order], labels[ref])


@pytest.mark.parametrize("task", ["translated_mnist", "cluttered_mnist"])
def test_return_boxes_adds_the_tight_ink_box_and_changes_nothing_else(task, test_digits):
    digits, _ = test_digits
    images, labels, meta = tasks.TASKS[task]("test", seed=1)
    boxed, boxed_labels, boxed_meta = tasks.TASKS[task]("test", seed=1, return_boxes=True)
    np.testing.assert_array_equal(images, boxed)
    np.testing.assert_array_equal(labels, boxed_labels)
    assert set(boxed_meta) == set(meta) | {"boxes"}
    for key in meta:
        np.testing.assert_array_equal(meta[key], boxed_meta[key])
    boxes = boxed_meta["boxes"]
    assert boxes.shape == (1000, 4) and boxes.dtype == np.int64
    for i in range(0, 1000, 41):
        (row, col), (top, left, bottom, right) = meta["offsets"][i], boxes[i]
        ink_rows, ink_cols = np.nonzero(digits[i, :, :, 0])
        # tight: the first and last ink rows and columns of the digit, moved to the canvas
        assert (top, bottom) == (row + ink_rows.min(), row + ink_rows.max() + 1)
        assert (left, right) == (col + ink_cols.min(), col + ink_cols.max() + 1)
