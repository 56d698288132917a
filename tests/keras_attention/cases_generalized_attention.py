"""Harness cases: generalized attention (keras_attention/layers/generalized_attention.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, SMALL
from tests.layer_harness import LayerCase


def _generalized_map(heads, stride=1):
    def shape(input_shape):
        b, h, w, _ = input_shape
        return (b, heads, h * w, -(-h // stride) * -(-w // stride))

    return shape


CASES = [
    LayerCase(
        "generalized_attention_1111",
        L.GeneralizedAttention,
        {"num_heads": 2},
        SMALL,
        attention_shape=_generalized_map(2),
        invalid=(
            ({"attention_type": "0000"}, SMALL, "attention_type"),
            ({"attention_type": "111"}, SMALL, "attention_type"),
            ({"attention_type": "1121"}, SMALL, "attention_type"),
            ({"attention_type": 1111}, SMALL, "attention_type"),
            ({"num_heads": 0}, SMALL, "num_heads"),
            ({"num_heads": 32}, SMALL, "num_heads"),
            ({"position_embedding_dim": 6}, SMALL, "position_embedding_dim"),
            ({}, (2, 6, 6, 18), "position_embedding_dim"),
            ({"position_magnitude": 0}, SMALL, "position_magnitude"),
            ({"kv_stride": 0}, SMALL, "kv_stride"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "generalized_attention_0010_kv_stride2",
        L.GeneralizedAttention,
        {"num_heads": 2, "attention_type": "0010", "kv_stride": 2},
        SMALL,
        attention_shape=_generalized_map(2, 2),
    ),
    LayerCase(
        "generalized_attention_0101_kv_stride3",
        L.GeneralizedAttention,
        {
            "num_heads": 4,
            "attention_type": "0101",
            "position_embedding_dim": 8,
            "position_magnitude": 2.0,
            "kv_stride": 3,
        },
        SMALL,
        attention_shape=_generalized_map(4, 3),
    ),
]
