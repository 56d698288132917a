"""The pose scheme: stick figures (zoo.pose_data), the small stacked hourglass with and without
multi-context attention (zoo/backbones/pose.py), PCK, and the shipped weights."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
from keras_attention.layers import MultiContextAttention
from tests.other_backends import OTHER_BACKENDS
from zoo import catalog, pose_data

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def figures():
    return pose_data.stick_figures("test", seed=0, count=16)


def test_same_seed_same_figures_other_seed_other_figures(figures):
    images, joints, meta = figures
    again, joints_again, meta_again = pose_data.stick_figures("test", seed=0, count=16)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(joints, joints_again)
    np.testing.assert_array_equal(meta["torso"], meta_again["torso"])
    other, other_joints, _ = pose_data.stick_figures("test", seed=1, count=16)
    train, train_joints, _ = pose_data.stick_figures("train", seed=0, count=16)
    for changed in (other_joints, train_joints):
        assert np.all(np.any(np.abs(changed - joints) > 0.5, axis=(1, 2)))
    # a prefix of a larger set is the smaller set
    first, first_joints, _ = pose_data.stick_figures("test", seed=0, count=7)
    np.testing.assert_array_equal(first, images[:7])
    np.testing.assert_array_equal(first_joints, joints[:7])
    assert images.shape == (16, 64, 64, 1) and images.dtype == np.float32
    assert joints.shape == (16, len(pose_data.JOINTS), 2) and joints.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_every_joint_lies_on_the_drawn_figure_inside_the_canvas(figures):
    images, joints, meta = figures
    pixels = np.floor(joints).astype(int)  # (x, y) -> the pixel containing the joint
    ink = meta["clean"][np.arange(len(joints))[:, None], pixels[..., 1], pixels[..., 0]]
    # a segment ending at the joint covers the pixel's centre, at most sqrt(1/2) away, with
    # at least brightness * (width / 2 + 1/2 - sqrt(1/2)) (the anti-aliasing ramp)
    sides = {1: 0, 2: 0}
    sides.update({b: side for a, b, side in pose_data.LIMBS if b not in sides})
    bound = [
        pose_data.SIDE_INK[sides.get(j, 0)][0]
        * min(1.0, pose_data.SIDE_INK[sides.get(j, 0)][1] / 2 + 0.5 - np.sqrt(0.5))
        for j in range(len(pose_data.JOINTS))
    ]
    assert np.all(ink >= np.array(bound) - 1e-6)
    assert np.all(ink[:, :3] >= 0.8 - 1e-6)  # head disc, neck and pelvis: fully inked
    assert joints.min() >= pose_data.MARGIN and joints.max() <= 64 - pose_data.MARGIN
    torso = np.linalg.norm(joints[:, 1] - joints[:, 2], axis=-1)
    np.testing.assert_allclose(meta["torso"], torso, rtol=1e-5)
    assert torso.min() >= 14 and torso.max() <= 20
    # the clutter and noise leave the figure's pixels where they were or brighter
    assert np.mean(images[..., 0] >= meta["clean"] - 0.2) > 0.99


def test_generator_rejects_bad_arguments():
    for kwargs, word in (
        ({"split": "val"}, "split"),
        ({"size": 32}, "size"),
        ({"seed": -1}, "seed"),
        ({"count": 0}, "count"),
    ):
        with pytest.raises(ValueError, match=f"`{word}`"):
            pose_data.stick_figures(**kwargs)


def test_heatmaps_peak_at_the_joint_cells_and_decode_back():
    joints = np.array([[[14.0, 10.0], [33.0, 50.0]]], np.float32)
    maps = pose_data.heatmaps(joints)
    assert maps.shape == (1, 16, 16, 2)
    # (14, 10) lies in cell (row 2, col 3); its centre (14, 10) is exactly the joint
    assert np.unravel_index(np.argmax(maps[0, ..., 0]), (16, 16)) == (2, 3)
    assert maps[0, 2, 3, 0] == pytest.approx(1.0)
    # one cell (one SD) away: exp(-1/2)
    assert maps[0, 2, 4, 0] == pytest.approx(np.exp(-0.5), rel=1e-6)
    decoded = pose_data.decode(maps)
    np.testing.assert_allclose(decoded[0, 0], [14.0, 10.0])
    # (33, 50): cell (12, 8), centre (34, 50); the left neighbour is larger: x - 1 pixel
    np.testing.assert_allclose(decoded[0, 1], [33.0, 50.0])


def test_decode_moves_a_quarter_cell_towards_the_larger_neighbour():
    maps = np.zeros((1, 6, 5, 1), np.float32)
    maps[0, 2, 3] = 1.0
    maps[0, 2, 4] = 0.5  # right
    maps[0, 1, 3] = 0.2  # above
    maps[0, 3, 3] = 0.1  # below
    x, y = pose_data.decode(maps, stride=4)[0, 0]
    assert (x, y) == (4 * (3.5 + 0.25), 4 * (2.5 - 0.25))


def test_pck_by_hand():
    truth = np.array([[[10.0, 10.0], [20.0, 20.0]], [[0.0, 0.0], [5.0, 5.0]]])
    predicted = truth + np.array([[[3.0, 0.0], [3.0, 4.0]], [[0.0, 2.0], [0.0, 2.1]]])
    torso = np.array([20.0, 10.0])  # thresholds 4 and 2 pixels
    value, correct = pose_data.pck(predicted, truth, torso)
    np.testing.assert_array_equal(correct, [[True, False], [True, False]])
    assert value == 0.5


def _copy_by_name(source, target):
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in target.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            copied += 1
    return copied


@pytest.mark.slow
def test_attention_model_with_every_map_at_one_is_the_baseline():
    keras.utils.set_random_seed(0)
    baseline = zoo.build("hourglass_pose", input_shape=(32, 64, 1), intermediate_outputs=True)
    attention = zoo.build("mca_hourglass_pose", input_shape=(32, 64, 1), intermediate_outputs=True)
    rng = np.random.default_rng(0)
    for layer in baseline.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    baseline_layers = sum(1 for layer in baseline.layers if layer.weights)
    assert _copy_by_name(baseline, attention) == baseline_layers
    mca = [layer for layer in attention.layers if isinstance(layer, MultiContextAttention)]
    assert [layer.mode for layer in mca] == ["holistic"] * 4 + ["part"]
    images = rng.uniform(size=(2, 32, 64, 1)).astype("float32")
    # maps of (almost exactly) 1: sigmoid(30) rounds to 1 in float32
    for layer in mca:
        layer.unary.kernel.assign(np.zeros(layer.unary.kernel.shape))
        layer.unary.bias.assign(np.full(layer.unary.bias.shape, 30.0))
    expected = baseline.predict(images, verbose=0)
    got = attention.predict(images, verbose=0)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # and the maps matter: a map of 1/2 halves the part-attended heatmaps
    for layer in mca:
        layer.unary.bias.assign(np.zeros(layer.unary.bias.shape))
        layer.pairwise.kernel.assign(np.zeros(layer.pairwise.kernel.shape))
    assert np.abs(attention.predict(images, verbose=0)[-1] - expected[-1]).max() > 1e-2


def test_registry_and_build_arguments():
    for name in ("hourglass_pose", "mca_hourglass_pose"):
        spec = zoo.model_info(name)
        assert (spec.kind, spec.family, spec.num_classes) == ("model", "pose", 9)
        assert spec.default_input_shape == (64, 64, 1)
    model = zoo.build("hourglass_pose")
    assert model.output.shape == (None, 16, 16, 9)
    with pytest.raises(ValueError, match="classifier_activation"):
        zoo.build("hourglass_pose", classifier_activation="relu")
    with pytest.raises(ValueError, match="multiples of 32"):
        zoo.build("hourglass_pose", input_shape=(60, 64, 1))


def _reload_pck(name, count):
    images, joints, meta = pose_data.stick_figures("test", seed=0, count=count)
    model = zoo.load(name, weights="stick_figures")
    assert model.input_shape == (None, 64, 64, 1)
    maps = np.concatenate(
        [
            keras.ops.convert_to_numpy(model(images[i : i + 100], training=False))
            for i in range(0, count, 100)
        ]
    )
    keras.backend.clear_session()
    return 100 * pose_data.pck(pose_data.decode(maps), joints, meta["torso"])[0]


@pytest.mark.parametrize(
    "name",
    # the baseline's reload costs as much again; its full check is `slow` anyway
    [pytest.param("hourglass_pose", marks=pytest.mark.slow), "mca_hourglass_pose"],
)
def test_shipped_weights_reproduce_their_pck_on_the_first_figures(name):
    results = catalog.POSE_RESULTS[name]
    # one joint either way: argmax ties may flip between graphs
    assert (
        abs(_reload_pck(name, catalog.POSE_CHECK_FIGURES) - results["test_pck_check_figures"].value)
        <= 100 / (9 * catalog.POSE_CHECK_FIGURES) + 0.05
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hourglass_pose", "mca_hourglass_pose"])
def test_shipped_weights_reproduce_their_pck_on_the_held_out_figures(name):
    results = catalog.POSE_RESULTS[name]
    assert abs(_reload_pck(name, 500) - results["test_pck"].value) <= 0.1


def test_pose_results_agree_with_the_results_file():
    recorded = json.loads((ROOT / "benchmarks/results/pose_mca.json").read_text())
    for name, results in catalog.POSE_RESULTS.items():
        runs = [recorded[f"{name}:seed{seed}"]["test_pck"] for seed in (0, 1, 2)]
        assert results["test_pck"].value == round(100 * runs[0], 1)
        assert results["test_pck_seeds_mean"].value == round(100 * np.mean(runs), 1)
        assert results["test_pck_seeds_std"].value == round(100 * np.std(runs, ddof=1), 1)
        seed0 = recorded[f"{name}:seed0"]
        assert results["test_pck_check_figures"].value == round(
            100 * seed0["test_pck_check_figures"], 1
        )
        assert results["test_pck_standard_error"].value == round(
            100 * seed0["test_pck_standard_error"], 1
        )
        assert seed0["sha256"] == catalog.POSE_SHA256[name]
        assert zoo.model_info(name).weights_for("stick_figures").sha256 == catalog.POSE_SHA256[name]


_FORWARD = """
import sys, numpy as np, zoo
from zoo import pose_data
images = pose_data.stick_figures("test", seed=0, count=4)[0]
model = zoo.load(sys.argv[1], weights="stick_figures")
np.save(sys.argv[2], np.asarray(model.predict(images, verbose=0)))
"""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_pose_models_run_on_jax_and_torch(backend, tmp_path):
    """The shipped weights give TensorFlow's heatmaps on the other backends."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    images = pose_data.stick_figures("test", seed=0, count=4)[0]
    for name in ("hourglass_pose", "mca_hourglass_pose"):
        out = tmp_path / f"{name}.{backend}.npy"
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
        subprocess.run(
            [sys.executable, "-c", _FORWARD, name, str(out)], env=env, check=True, cwd=ROOT
        )
        expected = zoo.load(name, weights="stick_figures").predict(images, verbose=0)
        np.testing.assert_allclose(np.load(out), expected, atol=1e-4)
    keras.backend.clear_session()
