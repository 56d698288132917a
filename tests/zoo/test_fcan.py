"""FCAN (zoo.fcan): the location distributions, the REINFORCE surrogate against its closed
form, greedy and random locations, the training loss, bad configurations, serialisation,
and the shipped weights against the numbers tools/train_fcan.py recorded."""

import json
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

import zoo
from tests.other_backends import OTHER_BACKENDS, run_pytest_on_backend
from tests.zoo.test_ram import gradients
from zoo import catalog
from zoo.fcan import (
    STRIDE,
    FullyConvolutionalAttention,
    build_fcan,
    cell_centres,
    location_log_prob,
)
from zoo.ram import reinforce_with_baseline_loss

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = dict(num_steps=2, glimpse_size=6, filters=(4, 4, 4), attention_units=4, hidden_units=8)
# H != W: a 5 x 4 feature map (stride 4, "same" padding rounds up)
SHAPE = (20, 14, 1)


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *SHAPE)).astype("float32")


def test_location_distributions_sum_to_one_over_the_feature_map_cells():
    model = build_fcan(SHAPE, 10, seed=0, **TINY)
    _, probabilities, cells = model(images(3), return_attention=True)
    probabilities = ops.convert_to_numpy(probabilities)
    assert probabilities.shape == (3, 2, 5, 4) and ops.convert_to_numpy(cells).shape == (3, 2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=(2, 3)), np.ones((3, 2)), rtol=1e-6)
    assert np.all(probabilities > 0)
    # the two steps have their own part-score maps
    assert np.abs(probabilities[:, 0] - probabilities[:, 1]).max() > 1e-4


def test_greedy_locations_are_the_argmax_of_each_steps_map():
    model = build_fcan(SHAPE, 10, seed=1, **TINY)
    _, probabilities, cells = model(images(6, seed=1), return_attention=True)
    probabilities, cells = (ops.convert_to_numpy(t) for t in (probabilities, cells))
    flat = probabilities.reshape(6, 2, -1).argmax(axis=-1)
    np.testing.assert_array_equal(cells, np.stack(np.unravel_index(flat, (5, 4)), axis=-1))
    # inference is deterministic, whatever the sampler's state
    model.reset_sampling(5)
    again = ops.convert_to_numpy(model(images(6, seed=1), return_attention=True)[2])
    np.testing.assert_array_equal(again, cells)


def test_random_locations_are_uniform_and_repeatable_from_the_sampler_seed():
    model = build_fcan(SHAPE, 10, seed=2, locations="random", **TINY)
    assert not hasattr(model, "part_scores")  # no attention head
    model.reset_sampling(3)
    _, probabilities, first = model(images(200), return_attention=True)
    np.testing.assert_allclose(ops.convert_to_numpy(probabilities), 1 / 20, rtol=1e-6)
    model.reset_sampling(3)
    again = model(images(200), return_attention=True)[2]
    np.testing.assert_array_equal(ops.convert_to_numpy(first), ops.convert_to_numpy(again))
    counts = np.bincount(
        np.ravel_multi_index(ops.convert_to_numpy(first).reshape(-1, 2).T, (5, 4)), minlength=20
    )
    assert counts.min() > 0  # 400 draws over 20 cells all reach every cell


def test_reinforce_surrogate_gradient_is_the_closed_form():
    """Cells c_bt drawn from softmax(s_bt): d/ds of the surrogate is
    -(R_b - b_b) / B (onehot(c_bt) - softmax(s_bt)); the baseline gets 2 (b - R) / B."""
    rng = np.random.default_rng(0)
    batch, steps, cells = 3, 2, 5
    scores = rng.normal(size=(batch, steps, cells)).astype("float32")
    chosen = np.array([[0, 4], [2, 2], [1, 3]])
    baseline = np.array([[0.3], [0.8], [-0.2]], "float32")
    log_probs = np.log(rng.dirichlet(np.ones(4), size=batch)).astype("float32")
    labels = np.argmax(log_probs, axis=1)
    labels[1] = (labels[1] + 1) % 4  # rewards 1, 0, 1
    reward = np.array([[1.0], [0.0], [1.0]], "float32")

    def loss(scores_, baseline_):
        log_pi = location_log_prob(scores_, chosen)
        return reinforce_with_baseline_loss(labels, log_pi, baseline_, log_probs)

    g_scores, g_baseline = gradients(loss, [scores, baseline])
    softmax = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    onehot = np.eye(cells)[chosen]
    advantage = (reward - baseline)[:, :, None]
    np.testing.assert_allclose(g_scores, -advantage / batch * (onehot - softmax), atol=1e-6)
    np.testing.assert_allclose(g_baseline, 2 * (baseline - reward) / batch, rtol=1e-5)
    log_pi = np.log(np.take_along_axis(softmax, chosen[..., None], -1)[..., 0])
    expected = np.mean((baseline - reward)[:, 0] ** 2) - np.mean(
        (reward - baseline)[:, 0] * log_pi.sum(1)
    )
    np.testing.assert_allclose(ops.convert_to_numpy(loss(scores, baseline)), expected, rtol=1e-5)


def test_training_loss_is_cross_entropy_plus_the_recorded_reinforce_terms():
    model = build_fcan(SHAPE, 10, classifier_activation=None, seed=3, **TINY)
    x, y = images(5, seed=3), np.array([0, 1, 2, 3, 4])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y_pred = model(x, training=True)
    log_pi, baseline, log_probs = model._rl_terms
    assert tuple(log_pi.shape) == (5, 2) and tuple(baseline.shape) == (5, 1)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, y_pred)
    rl = model.reinforce_loss(y, log_pi, baseline, log_probs)
    total = model.compute_loss(x, y, y_pred, training=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(total), ops.convert_to_numpy(cross_entropy + rl), rtol=1e-5
    )
    assert model._rl_terms is None  # consumed
    # the random baseline records nothing: cross-entropy alone
    random = build_fcan(SHAPE, 10, classifier_activation=None, locations="random", **TINY)
    random(x, training=True)
    assert random._rl_terms is None


@pytest.mark.slow
def test_one_fit_step_moves_the_attention_head_and_the_classifier():
    keras.utils.set_random_seed(4)
    model = build_fcan(SHAPE, 10, classifier_activation=None, seed=4, **TINY)
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = {w.path: np.array(w) for w in model.trainable_weights}
    model.fit(images(8, seed=4), np.arange(8) % 10, batch_size=8, epochs=1, verbose=0)
    moved = {w.path for w in model.trainable_weights if not np.array_equal(before[w.path], w)}
    kernels = [
        model.part_scores.kernel,
        model.baseline.kernel,
        model.feature_convs[0].kernel,
        model.glimpse_hidden.kernel,
        model.classifier.kernel,
    ]
    assert all(k.path in moved for k in kernels), sorted(set(before) - moved)


@pytest.mark.slow
@pytest.mark.parametrize("locations", ["attention", "random"])
def test_fit_under_mixed_bfloat16(locations):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_fcan(
            SHAPE, 10, classifier_activation=None, seed=6, locations=locations, **TINY
        )
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(images(8, seed=6), np.arange(8), epochs=2, verbose=0)
        outputs, probabilities, _ = model(images(2), return_attention=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    dtypes = {keras.backend.standardize_dtype(t.dtype) for t in (outputs, probabilities)}
    assert dtypes == {"float32"}
    assert model.feature_convs[0].compute_dtype == "bfloat16"


def test_cell_centres_are_the_middle_pixel_of_each_cells_stride():
    np.testing.assert_array_equal(cell_centres(np.array([[0, 0], [3, 9]])), [[2, 2], [14, 38]])
    assert STRIDE == 4


def test_in_box_counts_the_glimpse_centres_inside_each_box():
    from tools.train_fcan import in_box  # noqa: PLC0415

    cells = np.array([[[0, 0], [2, 3], [2, 2]], [[9, 9], [0, 9], [4, 4]]])  # centres 4 i + 2
    boxes = np.array([[0, 0, 12, 12], [18, 19, 39, 40]])  # bottom and right exclusive
    expected = [[True, False, True], [True, False, False]]
    np.testing.assert_array_equal(in_box(cells, boxes), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_steps": 0}, r"`num_steps` must be a positive integer, got num_steps=0"),
        ({"glimpse_size": 2.5}, r"`glimpse_size` must be a positive integer"),
        ({"filters": (8, 8)}, r"`filters` must give 3 widths"),
        ({"filters": (8, 0, 8)}, r"`filters` must be a positive integer"),
        ({"locations": "uniform"}, r"`locations` must be one of \('attention', 'random'\)"),
        ({"reward": "accuracy"}, r"`reward` must be one of"),
        ({"classifier_activation": "sigmoid"}, r"`classifier_activation` must be 'softmax'"),
    ],
)
def test_bad_configuration_is_rejected_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FullyConvolutionalAttention(**kwargs)


def _assert_same_predictions(clone, model):
    x = images(4, seed=5)
    want, want_probabilities, want_cells = model(x, return_attention=True)
    got, got_probabilities, got_cells = clone(x, return_attention=True)
    np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want), 1e-6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got_probabilities), ops.convert_to_numpy(want_probabilities), 1e-6
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(got_cells), ops.convert_to_numpy(want_cells))


def test_config_round_trip_keeps_the_architecture():
    model = build_fcan(SHAPE, 7, seed=5, reward="probability", **TINY)
    clone = FullyConvolutionalAttention.from_config(model.get_config())
    clone(images(1))
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    _assert_same_predictions(clone, model)


@pytest.mark.slow
def test_keras_file_round_trip_keeps_config_weights_and_predictions(tmp_path):
    model = build_fcan(SHAPE, 10, seed=5, reward="probability", **TINY)
    path = tmp_path / "fcan.keras"
    model.save(path)
    clone = keras.saving.load_model(path)
    assert isinstance(clone, FullyConvolutionalAttention)
    assert clone.get_config() == model.get_config()
    _assert_same_predictions(clone, model)


# -- shipped weights -------------------------------------------------------------------------


def _reload_check(count):
    from tools.train_fcan import evaluate, task_data  # noqa: PLC0415

    model = zoo.load("fcan_mnist", weights="cluttered_mnist")
    x, y, boxes = task_data("test", seed=0)
    correct, shares = evaluate(model, x[:count], y[:count], boxes[:count])
    return float(np.mean(correct)), float(np.mean(shares))


def test_shipped_weights_reproduce_the_recorded_numbers_on_the_first_images():
    recorded = catalog.FCAN_RESULTS
    accuracy, in_box = _reload_check(catalog.FCAN_CHECK_IMAGES)
    assert 100 * accuracy == pytest.approx(recorded["test_accuracy_check_images"].value, abs=1e-6)
    assert in_box == pytest.approx(recorded["in_box_check_images"].value, abs=1e-4)


@pytest.mark.slow
def test_shipped_weights_reproduce_the_recorded_numbers_on_all_held_out_digits():
    recorded = catalog.FCAN_RESULTS
    accuracy, in_box = _reload_check(1000)
    assert 100 * accuracy == pytest.approx(recorded["test_accuracy"].value, abs=1e-6)
    assert in_box == pytest.approx(recorded["in_box"].value, abs=1e-4)


def test_results_file_agrees_with_the_registry():
    from tools.train_fcan import CHECK_IMAGES  # noqa: PLC0415

    assert catalog.FCAN_CHECK_IMAGES == CHECK_IMAGES
    results = json.loads((ROOT / "benchmarks" / "results" / "fcan.json").read_text())
    shipped = results["fcan_mnist:seed0"]
    spec = zoo.model_info("fcan_mnist").weights_for("cluttered_mnist")
    assert spec.sha256 == shipped["sha256"]
    recorded = catalog.FCAN_RESULTS
    assert recorded["test_accuracy"].value == pytest.approx(100 * shipped["test_accuracy"])
    assert recorded["in_box"].value == pytest.approx(shipped["in_box"], abs=5e-5)
    runs = [results[f"fcan_mnist:seed{s}"] for s in (0, 1, 2)]
    for key, scale in (("test_accuracy", 100), ("in_box", 1)):
        values = [scale * r[key] for r in runs]
        assert recorded[f"{key}_seeds_mean"].value == pytest.approx(np.mean(values), abs=5e-3)
        assert recorded[f"{key}_seeds_std"].value == pytest.approx(np.std(values, ddof=1), abs=5e-3)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_model_tests_pass_on_jax_and_torch(backend, tmp_path):
    """This file's default-suite model tests (distributions, greedy and random cells, the
    REINFORCE gradient, the loss, configurations) on the other backends."""
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    selection = ["-m", "not slow and not oracle", "-k", "not shipped and not results_file"]
    result = run_pytest_on_backend(backend, [*selection, __file__], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
