"""dasNet's feedback channel gate against its closed form."""

import keras
import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import cases_feedback
from tests.layer_harness import call_layer, harness_test, randomize_weights, to_numpy

test_layer_harness = harness_test(cases_feedback)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(3, 4, 5, 6)).astype("float32")
    observation = rng.normal(size=(3, 7)).astype("float32")
    return [features, observation]


@pytest.mark.parametrize("max_gate", [2.0, 3.5])
def test_fresh_gate_is_the_identity_for_any_observation(max_gate):
    x = _inputs()
    layer = L.FeedbackChannelGate(max_gate=max_gate)
    outputs, gates = call_layer(layer, x, return_attention=True)
    np.testing.assert_allclose(to_numpy(gates), 1.0, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(outputs), x[0], rtol=1e-6)


def test_gates_match_the_closed_form():
    features, observation = _inputs(1)
    layer = L.FeedbackChannelGate(max_gate=3.0)
    layer.build([features.shape, observation.shape])
    randomize_weights(layer, seed=2)
    kernel, bias = (keras.ops.convert_to_numpy(w).astype("float64") for w in layer.weights)
    z = observation.astype("float64") @ kernel + bias
    expected_gates = 3.0 / (1.0 + np.exp(-z))
    outputs, gates = call_layer(layer, [features, observation], return_attention=True)
    np.testing.assert_allclose(to_numpy(gates)[:, 0, 0], expected_gates, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(outputs), features * expected_gates[:, None, None], rtol=1e-5, atol=1e-6
    )
