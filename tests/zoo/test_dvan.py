"""zoo.dvan: the regions against their area-average closed form, attention distributions,
the diversity penalty against its closed form and inside the training loss, the uniform
baseline as DVAN with its scorer zeroed, bad configurations, serialisation, and the
shipped weights (TensorFlow here; JAX and PyTorch give the same scores in a subprocess)."""

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
from zoo import catalog, dvan, tasks

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPE = (40, 36, 1)  # H != W: the boxes scale each axis on its own


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _images(n=4, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).random((n, *shape), np.float32)


def randomise(model, seed=0, scale=0.3):
    """Every weight drawn from N(0, scale^2): fresh ones leave the attention near uniform."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(0, scale, w.shape).astype(np.float32) for w in model.get_weights()]
    )


def test_regions_are_the_area_averages_of_their_boxes():
    """On 8x12 images, 4x4 regions of the whole image average 2x3 pixel blocks and those of
    the 4x6 quarter boxes average 1x1.5 pixel blocks: the mean of the half-pixel blocks of
    the image upsampled 2x."""
    image = np.random.default_rng(1).random((2, 8, 12, 3), np.float32)
    layer = dvan.MultiScaleRegions(4, grids=((1.0, 1), (0.5, 2)))
    regions = _numpy(layer(image))
    assert regions.shape == (2, 5, 4, 4, 3) and layer.num_regions == 5
    fine = image.repeat(2, axis=1).repeat(2, axis=2)  # (2, 16, 24, 3), half-pixel grid

    def block_means(x, rows, cols):
        n, h, w, c = x.shape
        return x.reshape(n, h // rows, rows, w // cols, cols, c).mean(axis=(2, 4))

    np.testing.assert_allclose(regions[:, 0], block_means(fine, 4, 6), rtol=1e-5)
    corners = [(0, 0), (0, 12), (8, 0), (8, 12)]  # quarter boxes, row by row, half-pixels
    for index, (top, left) in enumerate(corners, start=1):
        box = fine[:, top : top + 8, left : left + 12]
        np.testing.assert_allclose(regions[:, index], block_means(box, 2, 3), rtol=1e-5)
    # the default boxes: 1 + 9 + 4, the 0.7 grid edge to edge
    boxes = dvan.region_boxes(40, 40)
    assert len(boxes) == 14 and boxes[0] == (0.0, 0.0, 40.0, 40.0)
    assert [b[:2] for b in boxes[1:4]] == [(0.0, 0.0), (0.0, 6.0), (0.0, 12.0)]
    assert boxes[9][:2] == (12.0, 12.0) and boxes[13] == (20.0, 20.0, 20.0, 20.0)


def test_attention_is_a_distribution_over_the_regions_at_every_step():
    keras.utils.set_random_seed(0)
    model = zoo.build("dvan_mnist", input_shape=SHAPE, return_attention=True)
    randomise(model)
    scores, attention = (_numpy(t) for t in model(_images(), training=False))
    assert scores.shape == (4, 10) and attention.shape == (4, 3, 14)
    assert attention.min() > 0
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    # the scores depend on the image and on the step's state: no two rows alike
    assert np.abs(attention[:, 1] - attention[:, 2]).max() > 1e-4
    assert np.abs(attention[0] - attention[1]).max() > 1e-4
    # attention_model reads the same weights from the model without the extra output
    plain = zoo.build("dvan_mnist", input_shape=SHAPE)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(_numpy(dvan.attention_model(plain)(_images())), attention, 1e-5)
    keras.backend.clear_session()


def test_diversity_penalty_is_the_mean_overlap_of_consecutive_steps():
    attention = np.array(
        [
            [[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.6, 0.4, 0.0]],  # overlaps 0.6 and 0.4
            [[0.2, 0.2, 0.6], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0]],  # overlaps 1.0 and 0.6
        ],
        np.float32,
    )
    assert float(dvan.diversity_penalty(attention)) == pytest.approx(0.65, rel=1e-6)
    assert float(dvan.diversity_penalty(attention[:, :1])) == 0.0
    disjoint = np.eye(3, dtype=np.float32)[None]
    assert float(dvan.diversity_penalty(disjoint)) == 0.0


def test_the_penalty_is_in_the_training_loss_with_its_weight():
    """`test_on_batch`'s loss (what `fit` minimises, without the update) is the cross
    entropy of the logits plus diversity_weight times the penalty of the attention."""
    keras.utils.set_random_seed(0)
    weight = 2.5
    kwargs = dict(input_shape=SHAPE, classifier_activation=None, diversity_weight=weight)
    model = zoo.build("dvan_mnist", **kwargs)
    randomise(model)
    probe = zoo.build("dvan_mnist", return_attention=True, **kwargs)
    probe.set_weights(model.get_weights())
    images, labels = _images(6), np.array([0, 1, 2, 3, 4, 5])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits, attention = (_numpy(t) for t in probe(images, training=False))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    cross_entropy = -log_probs[np.arange(6), labels].mean()
    overlap = np.minimum(attention[:, 1:], attention[:, :-1]).sum(-1).mean()
    loss = model.test_on_batch(images, labels)
    assert loss == pytest.approx(cross_entropy + weight * overlap, rel=1e-5)
    assert weight * overlap > 0.1  # the term is not negligible: the check can fail
    keras.backend.clear_session()


def test_uniform_baseline_is_dvan_with_its_scorer_zeroed():
    """With the score vector v = 0 every region scores the same, the softmax is uniform and
    DVAN computes the baseline's function given the same encoder, LSTM and classifier."""
    keras.utils.set_random_seed(0)
    model = zoo.build("dvan_mnist", input_shape=SHAPE, classifier_activation=None)
    randomise(model)
    baseline = zoo.build("dvan_uniform_mnist", input_shape=SHAPE, classifier_activation=None)
    attention_layer = model.get_layer("attention")
    for layer in baseline.layers:
        if layer.name == "attention":
            layer.cell.set_weights(attention_layer.cell.get_weights())
        else:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    images = _images()
    expected = _numpy(baseline(images))
    assert np.abs(_numpy(model(images)) - expected).max() > 1e-3  # scoring on: differs
    kernel = attention_layer.score.kernel
    kernel.assign(np.zeros(kernel.shape, np.float32))
    np.testing.assert_allclose(_numpy(model(images)), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        _numpy(dvan.attention_model(baseline)(images)), np.full((4, 3, 14), 1 / 14), rtol=1e-6
    )
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"steps": 0}, "steps"),
        ({"units": 2.5}, "units"),
        ({"attention_units": -1}, "attention_units"),
        ({"diversity_weight": -0.5}, "diversity_weight"),
        ({"diversity_weight": "high"}, "diversity_weight"),
        ({"region_size": 0}, "region_size"),
        ({"grids": ((1.5, 1),)}, "grids"),
        ({"grids": ((0.5, 0),)}, "grids"),
        ({"grids": ()}, "grids"),
        ({"encoder_widths": ()}, "encoder_widths"),
        ({"encoder_units": 0}, "encoder_units"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` must be"):
        zoo.build("dvan_mnist", **kwargs)


def test_bad_shapes_and_uniform_with_a_penalty_are_refused():
    with pytest.raises(ValueError, match="`diversity_weight` must be 0 when uniform=True"):
        zoo.build("dvan_uniform_mnist", diversity_weight=1.0)
    with pytest.raises(ValueError, match="input_shape: dvan_mnist needs a fixed height"):
        zoo.build("dvan_mnist", input_shape=(None, None, 1))
    with pytest.raises(ValueError, match="known height and width"):
        dvan.MultiScaleRegions()(keras.Input((None, 40, 1)))
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        dvan.build_dvan((8, 40, 40, 1))


def test_serialisation_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = zoo.build("dvan_mnist", input_shape=SHAPE, diversity_weight=0.25, steps=2)
    path = tmp_path / "dvan.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = _images()
    np.testing.assert_allclose(_numpy(loaded(images)), _numpy(model(images)), rtol=1e-6)
    config = loaded.get_layer("attention").get_config()
    assert (config["steps"], config["diversity_weight"], config["uniform"]) == (2, 0.25, False)
    regions = loaded.get_layer("regions").get_config()
    assert regions["region_size"] == 16 and regions["grids"] == [[1.0, 1], [0.7, 3], [0.5, 2]]
    keras.backend.clear_session()


def _reload_accuracy(name, count):
    images, labels, _ = tasks.cluttered_mnist("test", seed=0, **catalog.DVAN_TASK)
    model = zoo.load(name, weights="cluttered_mnist")
    predicted = np.concatenate(
        [
            np.argmax(_numpy(model(images[i : i + 100], training=False)), -1)
            for i in range(0, count, 100)
        ]
    )
    keras.backend.clear_session()
    return 100 * np.mean(predicted == labels[:count])


@pytest.mark.parametrize(
    "name",
    # the baseline's case in the slow run only: the default suite's time is short
    ["dvan_mnist", pytest.param("dvan_uniform_mnist", marks=pytest.mark.slow)],
)
def test_shipped_weights_reproduce_their_accuracy_on_the_first_images(name):
    results = catalog.DVAN_RESULTS[name]
    expected = results[f"test_accuracy_check_{catalog.DVAN_CHECK[0]}"].value
    # one image either way: argmax ties may flip between graphs
    got = _reload_accuracy(name, catalog.DVAN_CHECK[1])
    assert abs(got - expected) <= 100 / catalog.DVAN_CHECK[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dvan_mnist", "dvan_uniform_mnist"])
def test_shipped_weights_reproduce_their_accuracy_on_the_held_out_images(name):
    results = catalog.DVAN_RESULTS[name]
    assert abs(_reload_accuracy(name, 1000) - results["test_accuracy"].value) <= 0.1


def test_dvan_results_agree_with_the_results_file():
    recorded = json.loads((ROOT / "benchmarks/results/dvan.json").read_text())
    for name, results in catalog.DVAN_RESULTS.items():
        runs = [recorded[f"{name}:seed{seed}"]["test_accuracy"] for seed in (0, 1, 2)]
        assert results["test_accuracy"].value == round(100 * runs[0], 1)
        assert results["test_accuracy_seeds_mean"].value == round(100 * np.mean(runs), 1)
        assert results["test_accuracy_seeds_std"].value == round(100 * np.std(runs, ddof=1), 1)
        assert recorded[f"{name}:seed0"]["sha256"] == catalog.DVAN_SHA256[name]
        spec = zoo.model_info(name).weights_for("cluttered_mnist")
        assert spec.sha256 == catalog.DVAN_SHA256[name]
        assert spec.input_size == (40, 40)


_FORWARD = """
import sys, numpy as np, zoo
from zoo import catalog, tasks
images = tasks.cluttered_mnist("test", seed=0, **catalog.DVAN_TASK)[0][:4]
for name, out in zip(sys.argv[1::2], sys.argv[2::2]):
    model = zoo.load(name, weights="cluttered_mnist")
    np.save(out, np.asarray(model.predict(images, verbose=0)))
"""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_dvan_models_run_on_jax_and_torch(backend, tmp_path):
    """The shipped weights give TensorFlow's probabilities on the other backends."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    images = tasks.cluttered_mnist("test", seed=0, **catalog.DVAN_TASK)[0][:4]
    names = ("dvan_mnist", "dvan_uniform_mnist")
    outputs = [tmp_path / f"{name}.{backend}.npy" for name in names]
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
    arguments = [str(a) for pair in zip(names, outputs) for a in pair]
    subprocess.run([sys.executable, "-c", _FORWARD, *arguments], env=env, check=True, cwd=ROOT)
    for name, out in zip(names, outputs):
        expected = zoo.load(name, weights="cluttered_mnist").predict(images, verbose=0)
        np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    keras.backend.clear_session()


_LOSS = """
import sys, keras, numpy as np, zoo
saved = np.load(sys.argv[1])
model = zoo.build("dvan_mnist", input_shape=(40, 36, 1), classifier_activation=None,
                  diversity_weight=2.5)
model.set_weights([saved[f"w{i}"] for i in range(len(model.weights))])
model.compile(keras.optimizers.SGD(0.01),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
losses = [model.test_on_batch(saved["images"], saved["labels"])]
losses.append(model.train_on_batch(saved["images"], saved["labels"]))  # the loss before the step
losses.append(model.test_on_batch(saved["images"], saved["labels"]))  # after one SGD step
np.save(sys.argv[2], np.asarray(losses))
"""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_penalty_trains_on_jax_and_torch(backend, tmp_path):
    """The penalty reaches the loss `fit` minimises on the other backends too: the same
    weights and batch give TensorFlow's loss before and after one SGD step."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    keras.utils.set_random_seed(0)
    images, labels = _images(6), np.array([0, 1, 2, 3, 4, 5])
    model = zoo.build(
        "dvan_mnist", input_shape=SHAPE, classifier_activation=None, diversity_weight=2.5
    )
    randomise(model)
    saved = tmp_path / "batch.npz"
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(saved, images=images, labels=labels, **weights)
    out = tmp_path / f"losses.{backend}.npy"
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-c", _LOSS, str(saved), str(out)], env=env, check=True, cwd=ROOT
    )
    model.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    expected = [model.test_on_batch(images, labels), model.train_on_batch(images, labels)]
    expected.append(model.test_on_batch(images, labels))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4)
    assert expected[2] < expected[0]
    keras.backend.clear_session()
