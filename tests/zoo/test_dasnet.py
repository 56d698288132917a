"""dasNet (zoo.dasnet): the SNES trainer against closed-form optima, the feedback model's
identity at initialisation, and the shipped MNIST weights.

Runs on the configured Keras backend.
"""

import json
import math
import pathlib

import keras
import numpy as np
import pytest

import zoo
from zoo import catalog, dasnet, datasets, registry
from zoo.stn_cnn import build_mnist_cnn


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# --------------------------------------------------------------------------------------
# SNES


def test_snes_utilities_follow_the_rank_formula():
    u = dasnet.snes_utilities(6)
    raw = np.array([max(0.0, math.log(4) - math.log(k)) for k in range(1, 7)])
    np.testing.assert_allclose(u, raw / raw.sum() - 1 / 6, atol=1e-15)
    assert abs(u.sum()) < 1e-12 and np.all(np.diff(u) <= 0)
    assert dasnet.snes_population_size(4160) == 4 + int(3 * math.log(4160)) == 28


def test_snes_converges_to_the_optimum_of_a_quadratic():
    # f(x) = -sum_i a_i (x_i - c_i)^2: maximum at x = c, ill-conditioned (a from 1 to 100)
    centre = np.array([1.5, -2.0, 0.25, 3.0, -0.75])
    scales = np.array([1.0, 3.0, 10.0, 30.0, 100.0])

    def fitness(candidates):
        return -np.sum(scales * (candidates - centre) ** 2, axis=1)

    mean, sigma, history = dasnet.snes_maximize(
        fitness, np.zeros(5), sigma=1.0, generations=300, seed=0
    )
    np.testing.assert_allclose(mean, centre, atol=1e-4)
    # the search distribution contracts, more along the steeper axes
    assert np.all(sigma < 1e-3) and sigma[-1] < sigma[0]
    assert history[-1] > history[0]


def test_snes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mean must be a non-empty vector"):
        dasnet.snes_maximize(lambda c: c[:, 0], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="sigma must be positive"):
        dasnet.snes_maximize(lambda c: c[:, 0], np.zeros(3), sigma=0.0)
    with pytest.raises(ValueError, match=r"fitness returned shape \(1,\)"):
        dasnet.snes_maximize(lambda c: c[:1, 0], np.zeros(3), population=4)


# --------------------------------------------------------------------------------------
# The feedback model


def test_fresh_dasnet_predicts_exactly_as_its_cnn_and_gates_change_that():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(size=(4, 28, 20, 1)).astype("float32")
    cnn = build_mnist_cnn((28, 20, 1), classifier_activation=None)
    model = dasnet.build_dasnet_cnn(
        (28, 20, 1), gated_layers=("conv2", "conv3"), classifier_activation=None
    )
    dasnet.copy_cnn_weights(cnn, model)
    expected = _numpy(cnn(x))
    np.testing.assert_allclose(_numpy(model(x)), expected, rtol=1e-5, atol=1e-6)
    # two gates, each (64 + 64) -> 64: the policy's parameters in one vector
    policy = dasnet.get_policy(model)
    assert policy.size == 2 * (128 * 64 + 64)
    dasnet.set_policy(model, np.random.default_rng(1).normal(0, 0.05, policy.size))
    assert np.abs(_numpy(model(x)) - expected).max() > 1e-3
    dasnet.reset_policy(model)
    np.testing.assert_allclose(_numpy(model(x)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"the policy has 16512 parameters, got a vector of shape \(3,\)"
    ):
        dasnet.set_policy(model, np.zeros(3))


def test_bad_architecture_arguments_name_the_argument():
    with pytest.raises(ValueError, match="passes must be a positive integer, got passes=0"):
        dasnet.build_dasnet_cnn(passes=0)
    with pytest.raises(ValueError, match="gated_layers must be a non-empty tuple"):
        dasnet.build_dasnet_cnn(gated_layers=("fc1",))
    with pytest.raises(ValueError, match="max_gate"):
        dasnet.build_dasnet_cnn(max_gate=0.5)


# --------------------------------------------------------------------------------------
# The shipped weights


@pytest.fixture(scope="module")
def shipped():
    model = zoo.load("dasnet_mnist_cnn", weights="mnist", classifier_activation=None)
    x, y = datasets.mnist_subset("test")
    return model, x[: catalog.DASNET_CHECK_DIGITS], y[: catalog.DASNET_CHECK_DIGITS]


def test_shipped_weights_reproduce_their_recorded_accuracy(shipped):
    model, x, y = shipped
    results = catalog.DASNET_RESULTS
    spec = registry.get_spec("dasnet_mnist_cnn").weights_for("mnist")
    assert spec.sha256 and spec.input_size == (28, 28)
    correct = int((_numpy(model.predict(x, verbose=0)).argmax(1) == y).sum())
    assert correct == results["check_correct"].value
    # the same weights with the identity policy are the CNN alone
    policy = dasnet.get_policy(model)
    dasnet.reset_policy(model)
    try:
        cnn_correct = int((_numpy(model.predict(x, verbose=0)).argmax(1) == y).sum())
    finally:
        dasnet.set_policy(model, policy)
    assert cnn_correct == results["cnn_check_correct"].value


def test_gates_change_the_predictions_on_the_cnns_mistakes(shipped):
    model, _, _ = shipped
    x, y = datasets.mnist_subset("test")
    features = dasnet.trunk_features(model, x)
    feedback = model.get_layer("feedback")
    gated = _numpy(feedback.predict_on_batch(features))
    policy = dasnet.get_policy(model)
    dasnet.reset_policy(model)
    try:
        plain = _numpy(feedback.predict_on_batch(features))
    finally:
        dasnet.set_policy(model, policy)
    wrong = plain.argmax(1) != y
    # every mistake's class scores move; the recorded number of them become right (and of
    # right answers become wrong)
    assert np.all(np.abs(gated[wrong] - plain[wrong]).max(axis=1) > 1e-3)
    corrected = int((wrong & (gated.argmax(1) == y)).sum())
    broken = int((~wrong & (gated.argmax(1) != y)).sum())
    assert corrected == catalog.DASNET_RESULTS["corrected"].value > 0
    assert broken == catalog.DASNET_RESULTS["broken"].value


def test_snes_raises_the_fitness_on_a_fixed_batch(shipped):
    model, _, _ = shipped
    x, y = datasets.mnist_subset("train")
    x, y = x[:128], y[:128]
    policy = dasnet.get_policy(model)
    dasnet.reset_policy(model)  # from the CNN alone
    try:
        features = dasnet.trunk_features(model, x)
        start = dasnet.get_policy(model)
        before = dasnet.policy_fitness(model, features, y, start)

        def fitness(candidates):
            return [dasnet.policy_fitness(model, features, y, c) for c in candidates]

        widths = dasnet.policy_sigma(model, features, 0.05)
        mean, _, _ = dasnet.snes_maximize(
            fitness, start, sigma=widths, generations=10, population=12, seed=0
        )
        assert dasnet.policy_fitness(model, features, y, mean) > before + 0.01
    finally:
        dasnet.set_policy(model, policy)


def test_static_training_evolves_the_biases_alone(shipped):
    model, x, y = shipped
    policy = dasnet.get_policy(model)
    try:
        _, history = dasnet.train_policy(
            model, x[:64], y[:64], generations=2, batch_size=32, population=6, static=True
        )
        (gate,) = dasnet.policy_gates(model)
        assert len(history) == 2
        assert not np.any(_numpy(gate.policy.kernel))
        assert np.any(_numpy(gate.policy.bias) != gate.neutral_bias)
    finally:
        dasnet.set_policy(model, policy)


def test_recorded_figures_are_the_benchmark_results():
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks/results/dasnet.json"
    recorded = json.loads(path.read_text())
    results = catalog.DASNET_RESULTS
    (seed0,) = [run for run in recorded["runs"] if run["seed"] == 0]
    assert results["accuracy"].value == seed0["dasnet"]["accuracy"]
    assert results["cnn_accuracy"].value == seed0["cnn"]["accuracy"]
    assert results["corrected"].value == seed0["corrected"]
    assert results["broken"].value == seed0["broken"]
    assert results["check_correct"].value == seed0["check_slice"]["dasnet_correct"]
    assert results["cnn_check_correct"].value == seed0["check_slice"]["cnn_correct"]
    assert seed0["check_slice"]["digits"] == catalog.DASNET_CHECK_DIGITS
    for key, side in (("accuracy_seeds", "dasnet"), ("cnn_accuracy_seeds", "cnn")):
        summary = recorded["summary"][side]
        assert results[f"{key}_mean"].value == round(summary["accuracy_mean"], 4)
        assert results[f"{key}_std"].value == round(summary["accuracy_sd"], 4)
    spec = registry.get_spec("dasnet_mnist_cnn").weights_for("mnist")
    assert spec.sha256 == recorded["weights"]["sha256"]
