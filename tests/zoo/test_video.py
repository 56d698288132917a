"""The video scheme: moving-digit clips (zoo.tasks.moving_mnist_clips), the C2D ResNet with and
without 3D non-local blocks (zoo/backbones/video.py), and their shipped weights."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
from tests.other_backends import OTHER_BACKENDS
from zoo import catalog, datasets, tasks

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def test_clips():
    return tasks.moving_mnist_clips("test", seed=0)


def test_same_seed_same_clips_other_seed_other_clips(test_clips):
    clips, labels, meta = test_clips
    again, labels_again, meta_again = tasks.moving_mnist_clips("test", seed=0)
    other, labels_other, _ = tasks.moving_mnist_clips("test", seed=1)
    np.testing.assert_array_equal(clips, again)
    for key in meta:
        np.testing.assert_array_equal(meta[key], meta_again[key])
    # the labels are the subset's, whatever the seed; the clips change almost everywhere
    np.testing.assert_array_equal(labels, datasets.mnist_subset("test")[1])
    np.testing.assert_array_equal(labels, labels_other)
    assert np.mean(np.any(clips != other, axis=(1, 2, 3, 4))) > 0.99
    assert clips.shape == (1000, 8, 32, 32, 1) and clips.dtype == np.float32
    assert labels.dtype == np.int64 and clips.min() == 0.0 and clips.max() <= 1.0


def test_clips_rebuild_from_their_draws_and_only_the_labelled_digit_moves(test_clips):
    clips, labels, meta = test_clips
    digits, digit_labels = tasks.clip_digits("test")
    start, velocity, still, corner = (
        meta[k] for k in ("start", "velocity", "still", "still_offsets")
    )
    frames, size, d = clips.shape[1], clips.shape[2], tasks.CLIP_DIGIT_SIZE
    # the still digit is of another class; the mover travels 2 px a frame along some axis
    assert not np.any(digit_labels[still] == labels)
    np.testing.assert_array_equal(np.abs(velocity).max(axis=1), 2)
    assert len({tuple(v) for v in velocity}) == 16
    last = start + (frames - 1) * velocity
    for corners in (start, last, corner):
        assert corners.min() == 0 and corners.max() == size - d  # whole, edge to edge
    for i in range(0, 1000, 23):
        expected = np.zeros((frames, size, size), np.float32)
        r, c = corner[i]
        expected[:, r : r + d, c : c + d] = digits[still[i]]
        moving_box = np.zeros((size, size), bool)
        for t in range(frames):
            r, c = start[i] + t * velocity[i]
            window = expected[t, r : r + d, c : c + d]
            np.maximum(window, digits[i], out=window)
            moving_box[r : r + d, c : c + d] = True
        np.testing.assert_array_equal(clips[i, ..., 0], expected)
        # every pixel that changes over time lies on the labelled digit's path
        changes = np.any(clips[i, 1:, ..., 0] != clips[i, :1, ..., 0], axis=0)
        assert changes.any() and not np.any(changes & ~moving_box)


def test_clip_arguments_are_checked():
    with pytest.raises(ValueError, match="`frames` must be an integer >= 2"):
        tasks.moving_mnist_clips("test", frames=1)
    with pytest.raises(ValueError, match=r"`size` must be an integer >= 28"):
        tasks.moving_mnist_clips("test", frames=8, size=27)
    with pytest.raises(ValueError, match="`split` must be one of"):
        tasks.moving_mnist_clips("validation")
    assert datasets.moving_mnist_clips is tasks.moving_mnist_clips


def test_nonlocal_blocks_start_as_the_identity():
    """Fresh NonLocal blocks add BN(W y) with gamma = beta = 0, i.e. exactly 0: with the
    baseline's weights the non-local model computes the baseline's function; moving one
    block's gamma off 0 changes it (so the comparison can fail)."""
    keras.utils.set_random_seed(0)
    with_blocks = zoo.build("nonlocal_c2d_small", input_shape=(4, 32, 24, 1))
    baseline = zoo.build("c2d_small", input_shape=(4, 32, 24, 1))
    blocks = [layer for layer in with_blocks.layers if layer.name.endswith("-nl")]
    assert [b.name for b in blocks] == ["stage2-nl", "stage3-nl"]
    assert [type(b).__name__ for b in blocks] == ["NonLocal", "NonLocal"]
    # the rank-5 blocks attend over time x height x width (8x6 maps, 4x3 after stage 3)
    assert [b.compute_attention_shape(b.input.shape)[1:] for b in blocks] == [
        (4 * 8 * 6, 4 * 4 * 3),
        (4 * 4 * 3, 4 * 4 * 3),
    ]
    for layer in baseline.layers:
        layer.set_weights(with_blocks.get_layer(layer.name).get_weights())
    clips = np.random.default_rng(0).random((2, 4, 32, 24, 1), np.float32)

    def scores(model):
        return keras.ops.convert_to_numpy(model(clips, training=False))

    expected = scores(baseline)
    np.testing.assert_allclose(scores(with_blocks), expected, rtol=1e-6)
    gamma = blocks[1].out_norm.gamma
    gamma.assign(np.full(gamma.shape, 0.5, np.float32))
    assert np.abs(scores(with_blocks) - expected).max() > 1e-4
    keras.backend.clear_session()


def test_video_models_take_clips_only():
    with pytest.raises(ValueError, match=r"input_shape must be \(frames, height, width"):
        zoo.build("c2d_small", input_shape=(32, 32, 1))
    spec = zoo.model_info("nonlocal_c2d_small")
    assert spec.family == "video" and spec.default_input_shape == (8, 32, 32, 1)


def _reload_accuracy(name, count):
    clips, labels, _ = tasks.moving_mnist_clips("test", seed=0)
    model = zoo.load(name, weights="moving_mnist_clips")
    assert model.input_shape == (None, 8, 32, 32, 1)
    predicted = np.concatenate(
        [
            np.argmax(keras.ops.convert_to_numpy(model(clips[i : i + 100], training=False)), -1)
            for i in range(0, count, 100)
        ]
    )
    keras.backend.clear_session()
    return 100 * np.mean(predicted == labels[:count])


@pytest.mark.parametrize("name", ["c2d_small", "nonlocal_c2d_small"])
def test_shipped_weights_reproduce_their_accuracy_on_the_first_clips(name):
    results = catalog.VIDEO_RESULTS[name]
    # one clip either way: argmax ties may flip between XLA-compiled and plain graphs
    assert (
        abs(
            _reload_accuracy(name, catalog.VIDEO_CHECK_CLIPS)
            - results["test_accuracy_check_clips"].value
        )
        <= 100 / catalog.VIDEO_CHECK_CLIPS
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c2d_small", "nonlocal_c2d_small"])
def test_shipped_weights_reproduce_their_accuracy_on_the_held_out_clips(name):
    results = catalog.VIDEO_RESULTS[name]
    assert abs(_reload_accuracy(name, 1000) - results["test_accuracy"].value) <= 0.1


def test_video_results_agree_with_the_results_file():
    recorded = json.loads((ROOT / "benchmarks/results/video_nonlocal.json").read_text())
    for name, results in catalog.VIDEO_RESULTS.items():
        runs = [recorded[f"{name}:seed{seed}"]["test_accuracy"] for seed in (0, 1, 2)]
        assert results["test_accuracy"].value == round(100 * runs[0], 1)
        assert results["test_accuracy_seeds_mean"].value == round(100 * np.mean(runs), 1)
        assert results["test_accuracy_seeds_std"].value == round(100 * np.std(runs, ddof=1), 1)
        assert recorded[f"{name}:seed0"]["sha256"] == catalog.VIDEO_SHA256[name]
        assert (
            zoo.model_info(name).weights_for("moving_mnist_clips").sha256
            == (catalog.VIDEO_SHA256[name])
        )


_FORWARD = """
import sys, numpy as np, zoo
from zoo import tasks
clips = tasks.moving_mnist_clips("test", seed=0)[0][:4]
model = zoo.load(sys.argv[1], weights="moving_mnist_clips")
np.save(sys.argv[2], np.asarray(model.predict(clips, verbose=0)))
"""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_video_models_run_on_jax_and_torch(backend, tmp_path):
    """The shipped weights give TensorFlow's probabilities on the other backends."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    clips = tasks.moving_mnist_clips("test", seed=0)[0][:4]
    for name in ("c2d_small", "nonlocal_c2d_small"):
        out = tmp_path / f"{name}.{backend}.npy"
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
        subprocess.run(
            [sys.executable, "-c", _FORWARD, name, str(out)], env=env, check=True, cwd=ROOT
        )
        expected = zoo.load(name, weights="moving_mnist_clips").predict(clips, verbose=0)
        np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    keras.backend.clear_session()
