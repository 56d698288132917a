"""Harness cases: channel-domain layers (keras_attention/layers/channel.py)."""

from keras_attention import layers as L
from tests.keras_attention.cases_common import RANK_ERROR, SHAPE, channel_map
from tests.layer_harness import LayerCase

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
