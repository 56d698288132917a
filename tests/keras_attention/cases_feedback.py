"""Harness cases: dasNet's feedback channel gate (keras_attention/layers/feedback.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import SMALL, B
from tests.layer_harness import LayerCase

FEATURES = SMALL
OBSERVATION = (B, 5)
INPUT = [FEATURES, OBSERVATION]

CASES = [
    LayerCase(
        "feedback_gate",
        L.FeedbackChannelGate,
        {},
        INPUT,
        attention_shape=lambda shape: (shape[0][0], 1, 1, shape[0][-1]),
        other_sizes=(((5, 7), ()), ((11, 6), ())),
        invalid=(
            ({"max_gate": 1.0}, INPUT, "max_gate"),
            ({"max_gate": "2"}, INPUT, "max_gate"),
            ({}, [FEATURES, (B, 3, 5)], "observation"),
            ({}, [FEATURES, (B, None)], "observation"),
            ({}, [(B, 6, 16), OBSERVATION], r"input_shape=\(2, 6, 16\)"),
            ({}, FEATURES, "inputs"),
        ),
    ),
]
