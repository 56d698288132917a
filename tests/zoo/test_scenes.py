"""Digit scenes (zoo.scenes, also zoo.datasets.digit_scenes): determinism, labels where the
strokes are, test digits only in the test split, shapes, tf.data, the mask palette."""

import io

import numpy as np
import pytest

from zoo import datasets, scenes, tasks


@pytest.fixture(scope="module")
def test_scenes():
    return datasets.digit_scenes("test", num_scenes=24, seed=3)


def test_same_seed_same_scenes_other_seed_other_scenes(test_scenes):
    images, labels, meta = test_scenes
    again = scenes.digit_scenes("test", num_scenes=24, seed=3)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])
    for key in meta:
        np.testing.assert_array_equal(meta[key], again[2][key])
    other, other_labels, _ = scenes.digit_scenes("test", num_scenes=24, seed=4)
    assert np.all(np.any(other != images, axis=(1, 2, 3)))
    assert np.mean(np.any(other_labels != labels, axis=(1, 2))) > 0.9
    # the train split draws from its own stream: same seed, other scenes
    train_images, _, _ = scenes.digit_scenes("train", num_scenes=24, seed=3)
    assert np.all(np.any(train_images != images, axis=(1, 2, 3)))


def test_shapes_dtypes_and_class_range(test_scenes):
    images, labels, meta = test_scenes
    assert images.shape == (24, 64, 64, 3) and images.dtype == np.float32
    assert labels.shape == (24, 64, 64) and labels.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.min() == 0 and labels.max() <= scenes.NUM_CLASSES - 1
    counts = meta["counts"]
    assert counts.min() >= 2 and counts.max() <= 4
    # each scene's labelled classes are exactly 1 + the digits painted into it (a digit
    # entirely painted over would be missing, which max_overlap=0.2 rules out here)
    for i in range(24):
        painted = set((1 + meta["digits"][i, : counts[i]]).tolist())
        assert set(np.unique(labels[i]).tolist()) - {0} == painted
    wide, wide_labels, _ = scenes.digit_scenes("test", num_scenes=2, size=(96, 128), seed=0)
    assert wide.shape == (2, 96, 128, 3) and wide_labels.shape == (2, 96, 128)


def test_labels_are_the_ink_of_the_last_digit_painted_there(test_scenes):
    """An independent rebuild from the metadata: each digit resampled with tasks'
    `_rotate_scale` at its recorded angle and scale, its ink box at its recorded offset."""
    images, labels, meta = test_scenes
    digits, digit_labels = datasets.mnist_subset("test")
    for i in range(0, 24, 3):
        expected = np.zeros(labels.shape[1:], np.int32)
        top_ink = np.zeros(labels.shape[1:], np.float32)
        top_colour = np.zeros(images.shape[1:], np.float32)
        for j in range(meta["counts"][i]):
            source, angle, scale = meta["sources"][i, j], meta["angles"][i, j], meta["scales"][i, j]
            assert meta["digits"][i, j] == digit_labels[source]
            theta = np.deg2rad(angle)
            side = int(np.ceil(28 * scale * (abs(np.cos(theta)) + abs(np.sin(theta))))) + 2
            patch = tasks._rotate_scale(digits[source, :, :, 0], angle, scale, side)
            rows, cols = np.flatnonzero(patch.max(1) > 0), np.flatnonzero(patch.max(0) > 0)
            ink = patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            top, left = meta["offsets"][i, j]
            window = (slice(top, top + ink.shape[0]), slice(left, left + ink.shape[1]))
            expected[window][ink >= 0.5] = 1 + digit_labels[source]
            top_ink[window] = np.where(ink > 0, ink, top_ink[window])
            top_colour[window] = np.where(
                ink[..., None] > 0, meta["colours"][i, j], top_colour[window]
            )
        np.testing.assert_array_equal(labels[i], expected)
        # alpha blending: a pixel is within (1 - ink) of the colour of the last digit
        # painted there, per channel (all values are in [0, 1])
        solid = top_ink >= 0.9
        assert solid.sum() > 30
        gap = np.abs(images[i][solid] - top_colour[solid]).max(-1)
        assert np.all(gap <= 1.0 - top_ink[solid] + 1e-5)
        # and the strokes stand out: labelled pixels are far from the background's mean
        background = images[i][labels[i] == 0].mean(0)
        assert np.abs(images[i][solid] - background).sum(-1).min() > 0.3


def test_test_scenes_hold_only_test_digits():
    """Every digit of a test scene is a test digit of mnist_subset, never a training digit:
    its ink, cut out of the scene's label map, is the resampled test digit's."""
    _, _, meta = scenes.digit_scenes("test", num_scenes=400, seed=0)
    sources = meta["sources"][meta["sources"] >= 0]
    test_digits, _ = datasets.mnist_subset("test")
    assert sources.max() < len(test_digits)
    # every test digit is used once before any is used twice
    assert len(np.unique(sources[: len(test_digits)])) == min(len(sources), len(test_digits))
    train_digits, _ = datasets.mnist_subset("train")
    train_rows = {d.tobytes() for d in train_digits}
    assert not any(test_digits[s].tobytes() in train_rows for s in np.unique(sources))
    _, _, train_meta = scenes.digit_scenes("train", num_scenes=50, seed=0)
    assert train_meta["sources"].max() < len(train_digits)


def test_as_tf_dataset_batches_images_and_label_maps(test_scenes):
    images, labels, _ = test_scenes
    batches = list(datasets.as_tf_dataset(images, labels, batch_size=10).as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(10, 64, 64, 3), (10, 64, 64, 3), (4, 64, 64, 3)]
    assert batches[0][1].dtype == np.int32 and batches[0][1].shape == (10, 64, 64)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size=40), "`size` must be an integer >= 48"),
        (dict(digits_per_scene=(3, 2)), "`digits_per_scene` must be"),
        (dict(scale_range=(0.8, 2.0)), "`scale_range` high must be at most 1.6"),
        (dict(max_angle=90), "`max_angle` must be in"),
        (dict(split="val"), "`split` must be one of"),
        (dict(seed=-1), "`seed` must be a non-negative integer"),
        (dict(num_scenes=0), "`num_scenes` must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        scenes.digit_scenes(**{"split": "test", "num_scenes": 1, **kwargs})


def test_palette_is_pascal_voc_and_the_mask_png_round_trips():
    from PIL import Image

    colours = scenes.palette(11)
    # PASCAL VOC's colour map (VOCdevkit labelcolormap): its first classes
    voc = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128)]
    assert [tuple(c) for c in colours[:6]] == voc
    assert tuple(colours[8]) == (64, 0, 0) and tuple(colours[10]) == (64, 128, 0)
    assert len({tuple(c) for c in colours}) == 11
    mask = np.arange(11 * 6, dtype=np.int32).reshape(6, 11) % 11
    image = Image.open(io.BytesIO(scenes.mask_png(mask)))
    assert image.mode == "P" and image.size == (11, 6)
    np.testing.assert_array_equal(np.asarray(image), mask)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), colours[mask])
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 11\)"):
        scenes.mask_png(np.full((2, 2), 11))
