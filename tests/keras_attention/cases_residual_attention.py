"""Harness cases: Residual Attention Network (keras_attention/layers/residual_attention.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, full_map
from tests.layer_harness import LayerCase

# Small: every case runs 7 checks on 3 backends on a 2-core machine.
SHAPE = (2, 8, 8, 16)
# Odd and unequal sizes: 'same' pooling rounds up, upsampling must land on the exact size.
ODD_SIZES = ((7, 9), (5, 6))

_COMMON_INVALID = (
    ({"units_per_level": 0}, SHAPE, "units_per_level"),
    ({"num_downsamples": 0}, SHAPE, "num_downsamples"),
    ({"num_downsamples": 1.5}, SHAPE, "num_downsamples"),
    ({"mask_activation": "softmax"}, SHAPE, "mask_activation"),
    # 3 poolings need sides of at least 5 (4 -> 2 -> 1 -> 1 would pool a single pixel).
    ({"num_downsamples": 3}, (2, 4, 4, 16), r"num_downsamples=3.*input_shape=\(2, 4, 4, 16\)"),
    ({"num_downsamples": 1}, (2, 1, 8, 16), r"num_downsamples=1.*input_shape=\(2, 1, 8, 16\)"),
    RANK_ERROR,
)

CASES = [
    LayerCase(
        "residual_attention",
        L.ResidualAttention,
        {},
        SHAPE,
        attention_shape=full_map,
        other_sizes=ODD_SIZES,
        invalid=(
            ({"pre_units": -1}, SHAPE, "pre_units"),
            ({"trunk_units": 1.0}, SHAPE, "trunk_units"),
            ({"trunk_units": True}, SHAPE, "trunk_units"),
            *_COMMON_INVALID,
        ),
    ),
    LayerCase(
        "residual_attention_channel_mask_2_downsamples",
        L.ResidualAttention,
        {"num_downsamples": 2, "mask_activation": "channel"},
        SHAPE,
        attention_shape=full_map,
        other_sizes=ODD_SIZES,
    ),
    LayerCase(
        "residual_attention_spatial_mask_2_downsamples_lean",
        L.ResidualAttention,
        {"num_downsamples": 2, "mask_activation": "spatial", "pre_units": 0, "trunk_units": 1},
        SHAPE,
        attention_shape=full_map,
        other_sizes=ODD_SIZES,
    ),
    LayerCase(
        "soft_mask_branch",
        L.SoftMaskBranch,
        {},
        SHAPE,
        attention_shape=full_map,
        other_sizes=ODD_SIZES,
        invalid=_COMMON_INVALID,
    ),
    LayerCase(
        "soft_mask_branch_channel_2_downsamples",
        L.SoftMaskBranch,
        {"num_downsamples": 2, "mask_activation": "channel"},
        SHAPE,
        attention_shape=full_map,
        other_sizes=ODD_SIZES,
    ),
    LayerCase(
        "soft_mask_branch_spatial_2_downsamples_2_units",
        L.SoftMaskBranch,
        {"num_downsamples": 2, "units_per_level": 2, "mask_activation": "spatial"},
        SHAPE,
        attention_shape=full_map,
        other_sizes=ODD_SIZES,
    ),
]
