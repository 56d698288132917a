"""Harness cases: CBAM's gates, CBAM and BAM (keras_attention/layers/spatial.py, mixed.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import (
    RANK_ERROR,
    SHAPE,
    channel_map,
    full_map,
    spatial_map,
)
from tests.layer_harness import LayerCase

_REDUCTION_INVALID = (
    ({"reduction_ratio": 0}, SHAPE, "reduction_ratio"),
    ({"reduction_ratio": 1.5}, SHAPE, "reduction_ratio"),
    ({"reduced_channels": -4}, SHAPE, "reduced_channels"),
    ({"divisor": 0}, SHAPE, "divisor"),
)
_SPATIAL_INVALID = (
    ({"kernel_size": 4}, SHAPE, "kernel_size"),
    ({"kernel_size": 0}, SHAPE, "kernel_size"),
    ({"pooling_order": "avg_max"}, SHAPE, "pooling_order"),
)

CASES = [
    LayerCase(
        "spatial_gate_official_order",
        L.SpatialGate,
        {},
        SHAPE,
        attention_shape=spatial_map,
        invalid=(*_SPATIAL_INVALID, RANK_ERROR),
    ),
    LayerCase(
        "spatial_gate_timm_order_k3",
        L.SpatialGate,
        {"pooling_order": "mean_max", "kernel_size": 3},
        SHAPE,
        attention_shape=spatial_map,
    ),
    LayerCase(
        "channel_gate_bias",
        L.ChannelGate,
        {},
        SHAPE,
        attention_shape=channel_map,
        invalid=(*_REDUCTION_INVALID, RANK_ERROR),
    ),
    LayerCase(
        "channel_gate_no_bias_floor",
        L.ChannelGate,
        {"use_bias": False, "divisor": None},
        SHAPE,
        attention_shape=channel_map,
    ),
    LayerCase(
        "cbam_official",
        L.CBAM,
        {},
        SHAPE,
        attention_shape=spatial_map,
        invalid=(*_REDUCTION_INVALID, *_SPATIAL_INVALID, RANK_ERROR),
    ),
    LayerCase(
        "cbam_timm",
        L.CBAM,
        {"use_bias": False, "pooling_order": "mean_max"},
        SHAPE,
        attention_shape=spatial_map,
    ),
    # Dense / conv biases feeding a BatchNormalization get an exactly zero gradient with batch
    # statistics (the official code keeps them anyway), so the gradient checks run in
    # inference mode; test_mixed.py checks the training-mode forward pass in closed form.
    LayerCase(
        "bam_product",
        L.BAM,
        {},
        SHAPE,
        attention_shape=full_map,
        training=False,
        invalid=(
            *_REDUCTION_INVALID,
            ({"num_dilated_convs": -1}, SHAPE, "num_dilated_convs"),
            ({"dilation_rate": 0}, SHAPE, "dilation_rate"),
            ({"combine": "mean"}, SHAPE, "combine"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "bam_sum", L.BAM, {"combine": "sum"}, SHAPE, attention_shape=full_map, training=False
    ),
    LayerCase(
        "bam_sum_one_dilated_conv_rate2",
        L.BAM,
        {"combine": "sum", "num_dilated_convs": 1, "dilation_rate": 2, "reduced_channels": 4},
        SHAPE,
        attention_shape=full_map,
        training=False,
    ),
]
