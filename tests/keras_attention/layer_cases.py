"""One `LayerCase` per public layer configuration: what the shared harness runs."""

from keras_attention import layers as L
from tests.layer_harness import LayerCase

B, H, W, C = 2, 6, 6, 32
SHAPE = (B, H, W, C)


def channel_map(shape):
    return (shape[0], 1, 1, shape[-1])


def spatial_map(shape):
    return (shape[0], shape[1], shape[2], 1)


def full_map(shape):
    return tuple(shape)


RANK_ERROR = ({}, (B, H, C), r"input_shape=\(2, 6, 32\)")

CASES = [
    LayerCase(
        "se", L.SqueezeExcite, {}, SHAPE, attention_shape=channel_map,
        invalid=(
            ({"reduction_ratio": 0}, SHAPE, "reduction_ratio"),
            ({"reduced_channels": -4}, SHAPE, "reduced_channels"),
            ({"divisor": 0}, SHAPE, "divisor"),
            RANK_ERROR,
        ),
    ),
    LayerCase("se_floor_no_bias", L.SqueezeExcite, {"divisor": None, "use_bias": False}, SHAPE,
              attention_shape=channel_map),
]
