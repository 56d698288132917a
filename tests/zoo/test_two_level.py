"""Two-level attention (zoo/two_level.py): spectral clustering of filters, object-level
window filtering, part-level features at the parts' peaks, the sum of the two levels, and
the shipped cluttered-MNIST weights."""

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
from zoo import catalog
from zoo.two_level import (
    activation_affinity,
    build_two_level_mnist,
    spectral_clustering,
    window_grid,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _first_appearance(labels):
    """Labels renumbered 0, 1, ... in order of first appearance."""
    order = {}
    return np.array([order.setdefault(label, len(order)) for label in labels])


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    built = build_two_level_mnist((40, 48, 1), 10)
    built.set_part_clusters(np.random.default_rng(0).integers(0, 4, 64))
    return built


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((3, 40, 48, 1)).astype("float32")


@pytest.mark.parametrize("sizes", [(7, 5), (4, 6, 3)])
def test_spectral_clustering_recovers_planted_clusters(sizes):
    rng = np.random.default_rng(len(sizes))
    planted = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    same = planted[:, None] == planted[None, :]
    weights = rng.uniform(0.5, 1.0, same.shape)
    affinity = np.where(same, (weights + weights.T) / 2, 0.0)
    labels = spectral_clustering(affinity, len(sizes), seed=0)
    np.testing.assert_array_equal(labels, _first_appearance(planted))
    # weak links between the blocks do not change the partition
    noise = rng.uniform(0.0, 0.05, same.shape)
    noisy = np.where(same, affinity, (noise + noise.T) / 2)
    np.testing.assert_array_equal(spectral_clustering(noisy, len(sizes), seed=5), labels)


def test_activation_affinity_is_the_cosine_similarity_of_the_channels():
    activations = np.random.default_rng(0).random((2, 3, 3, 4))
    activations[..., 3] = 0  # a channel that never fires
    columns = activations.reshape(-1, 4)
    affinity = activation_affinity(activations)
    for i in range(3):
        for j in range(3):
            expected = columns[:, i] @ columns[:, j]
            expected /= np.linalg.norm(columns[:, i]) * np.linalg.norm(columns[:, j])
            assert affinity[i, j] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(affinity[3], 0.0)


def test_window_grid_spans_the_image_at_each_scale():
    windows = window_grid((40, 48), (24, 32), 3)
    assert windows.shape == (18, 4)
    np.testing.assert_array_equal(windows[:3], [[0, 0, 24, 24], [0, 12, 24, 36], [0, 24, 24, 48]])
    np.testing.assert_array_equal(windows[8], [16, 24, 40, 48])
    np.testing.assert_array_equal(windows[9], [0, 0, 32, 32])
    np.testing.assert_array_equal(windows[17], [8, 16, 40, 48])


def test_object_level_keeps_the_most_confident_windows(model, images):
    levels = {k: keras.ops.convert_to_numpy(v) for k, v in model.levels(images).items()}
    # the FilterNet's confidence on each window, computed here from the crops
    for index, (top, left, bottom, right) in enumerate(model.windows):
        crop = keras.ops.image.resize(images[:, top:bottom, left:right], (28, 28))
        logits = keras.ops.convert_to_numpy(model.filter_net(crop))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(levels["window_scores"][:, index], probs.max(-1), rtol=1e-5)
    expected = np.argsort(-levels["window_scores"], axis=1, kind="stable")[:, : model.top_k]
    np.testing.assert_array_equal(levels["kept"], expected)
    patches = keras.ops.convert_to_numpy(model.window_patches(images))
    kept = np.take_along_axis(patches, expected[:, :, None, None, None], axis=1)
    np.testing.assert_array_equal(levels["kept_patches"], kept)


def test_levels_and_their_sum(model, images):
    levels = {k: keras.ops.convert_to_numpy(v) for k, v in model.levels(images).items()}
    np.testing.assert_allclose(levels["combined"], levels["object"] + levels["part"], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), levels["combined"])
    np.testing.assert_allclose(levels["combined"].sum(-1), 2.0, rtol=1e-5)

    patches = levels["kept_patches"].reshape((-1, 28, 28, 1))
    logits, part_maps, features = (keras.ops.convert_to_numpy(t) for t in model.domain_net(patches))

    def mean_softmax(scores):
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        return (probs / probs.sum(-1, keepdims=True)).reshape(3, model.top_k, -1).mean(1)

    np.testing.assert_allclose(levels["object"], mean_softmax(logits), rtol=1e-5, atol=1e-7)
    # part level: each part's peak of its filters' summed conv2 maps (14x14), conv3 (7x7) read
    # at half the coordinates, parts concatenated, then the part classifier
    clusters = model.part_clusters()
    picked = []
    for n in range(len(patches)):
        row = []
        for part in range(model.num_parts):
            score = part_maps[n][..., clusters == part].sum(-1)
            r, c = np.unravel_index(np.argmax(score), score.shape)
            row.append(features[n, r // 2, c // 2])
        picked.append(np.concatenate(row))
    picked = np.array(picked)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.part_features(part_maps, features)), picked, rtol=1e-6
    )
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.part_classifier.weights)
    np.testing.assert_allclose(
        levels["part"], mean_softmax(picked @ kernel + bias), rtol=1e-5, atol=1e-7
    )


def test_part_clusters_are_set_and_read_back(model):
    labels = np.arange(64) // 16
    before = model.part_clusters()
    model.set_part_clusters(labels)
    np.testing.assert_array_equal(model.part_clusters(), labels)
    model.set_part_clusters(before)
    with pytest.raises(ValueError, match="`labels` must be 64 integers in"):
        model.set_part_clusters(np.full(64, 4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, r"`top_k` must be an integer in \[1, 18\]"),
        ({"top_k": 19}, r"`top_k` must be an integer in \[1, 18\]"),
        ({"num_parts": 65}, r"`num_parts` must be an integer in \[1, 64\]"),
        ({"window_sizes": (24, 41)}, r"`window_sizes` must be integers in \[1, 40\]"),
        ({"windows_per_side": 0}, "`windows_per_side` must be an integer >= 1"),
        ({"patch_size": 2}, "`patch_size` must be an integer >= 4"),
        ({"classifier_activation": None}, "`classifier_activation` must be 'softmax'"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_two_level_mnist((40, 40, 1), 10, **kwargs)


def test_spectral_clustering_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"`num_clusters` must be an integer in \[1, 2\]"):
        spectral_clustering(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="`affinity` must be symmetric and non-negative"):
        spectral_clustering(np.array([[0.0, 1.0], [0.5, 0.0]]), 1)
    with pytest.raises(ValueError, match="`activations` must be non-negative"):
        activation_affinity(-np.ones((2, 3)))


def _check_shipped(n):
    from tools.train_two_level import CHECK_IMAGES, evaluate, task_data  # noqa: PLC0415

    recorded = catalog.TWO_LEVEL_RESULTS
    model = zoo.load("two_level_mnist", weights="cluttered_mnist")
    images, labels, boxes = task_data("test", seed=0)
    correct, _ = evaluate(model, images[:n], labels[:n], boxes[:n])
    suffix = "_check_images" if n == CHECK_IMAGES else ""
    accuracy = recorded[f"test_accuracy{suffix}"].value
    baseline = recorded[f"baseline_test_accuracy{suffix}"].value
    assert 100 * np.mean(correct["combined"]) == pytest.approx(accuracy, abs=1e-6)
    assert 100 * np.mean(correct["baseline"]) == pytest.approx(baseline, abs=1e-6)
    if n == len(labels):
        for level in ("object", "part"):
            value = recorded[f"{level}_test_accuracy"].value
            assert 100 * np.mean(correct[level]) == pytest.approx(value, abs=1e-6)


def test_shipped_weights_reproduce_the_recorded_accuracy_on_the_first_images():
    from tools.train_two_level import CHECK_IMAGES  # noqa: PLC0415

    assert catalog.TWO_LEVEL_CHECK_IMAGES == CHECK_IMAGES
    _check_shipped(CHECK_IMAGES)


@pytest.mark.slow
def test_shipped_weights_reproduce_the_recorded_accuracy_on_the_held_out_set():
    _check_shipped(1000)


def test_recorded_numbers_are_the_results_file_s():
    """zoo.catalog's numbers for the shipped weights, rounded, are those
    tools/train_two_level.py wrote to benchmarks/results/two_level.json."""
    from tools.experiments import mean_sd, sha256  # noqa: PLC0415

    root = ROOT
    runs = json.loads((root / "benchmarks" / "results" / "two_level.json").read_text())
    runs = [runs[f"two_level_mnist:seed{seed}"] for seed in (0, 1, 2)]
    recorded = catalog.TWO_LEVEL_RESULTS
    for prefix, key in (("", "accuracy"), ("baseline_", "baseline_accuracy")):
        mean, sd = mean_sd([100 * r[key] for r in runs])
        assert recorded[f"{prefix}test_accuracy"].value == round(100 * runs[0][key], 1)
        assert recorded[f"{prefix}test_accuracy_seeds_mean"].value == round(mean, 1)
        assert recorded[f"{prefix}test_accuracy_seeds_std"].value == round(sd, 1)
    for level in ("object", "part"):
        value = recorded[f"{level}_test_accuracy"].value
        assert value == round(100 * runs[0][f"{level}_accuracy"], 1)
    spec = zoo.model_info("two_level_mnist").weights_for("cluttered_mnist")
    weights = root / "zoo" / "data" / "weights" / "two_level_mnist.cluttered_mnist.weights.h5"
    assert spec.sha256 == runs[0]["sha256"] == sha256(weights)


_ON_BACKEND = """
import json, sys
import numpy as np
import zoo
from tools.train_two_level import CHECK_IMAGES, evaluate, task_data
model = zoo.load("two_level_mnist", weights="cluttered_mnist")
images, labels, boxes = task_data("test", seed=0)
n = CHECK_IMAGES
correct, kept = evaluate(model, images[:n], labels[:n], boxes[:n])
json.dump({"correct": {k: v.tolist() for k, v in correct.items()}, "kept": kept.tolist()},
          open(sys.argv[1], "w"))
"""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_shipped_pipeline_gives_the_same_answers_on_jax_and_torch(backend, tmp_path):
    """The TensorFlow-trained weights on another backend: the same kept windows and the same
    right and wrong answers of every level on the first held-out images."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    from tools.train_two_level import CHECK_IMAGES, evaluate, task_data  # noqa: PLC0415

    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "answers.json"
    subprocess.run(
        [sys.executable, "-c", _ON_BACKEND, str(out)], env=env, cwd=ROOT, check=True, timeout=600
    )
    other = json.loads(out.read_text())
    model = zoo.load("two_level_mnist", weights="cluttered_mnist")
    images, labels, boxes = task_data("test", seed=0)
    n = CHECK_IMAGES
    correct, kept = evaluate(model, images[:n], labels[:n], boxes[:n])
    np.testing.assert_array_equal(other["kept"], kept)
    for level, answers in correct.items():
        np.testing.assert_array_equal(other["correct"][level], answers, err_msg=level)
