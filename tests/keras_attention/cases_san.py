"""Harness cases: SAN's pairwise and patchwise self-attention (keras_attention/layers/san.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, SMALL
from tests.layer_harness import LayerCase


def _san_map(kernel_size, groups):
    return lambda shape: (*shape[:3], kernel_size * kernel_size, groups)


# SAN: the projections' biases feed a BatchNormalization (their training-mode gradient is
# exactly zero, the official code keeps them), so the gradient checks run in inference mode;
# test_san.py checks the training-mode forward pass in closed form.
CASES = [
    LayerCase(
        "san_pairwise_k3",
        L.PairwiseSelfAttention,
        {"kernel_size": 3, "relation_channels": 4},
        SMALL,
        attention_shape=_san_map(3, 2),
        training=False,
        invalid=(
            ({"kernel_size": 4}, SMALL, "kernel_size"),
            ({"kernel_size": 0}, SMALL, "kernel_size"),
            ({"dilation": 0}, SMALL, "dilation"),
            ({"share_planes": 0}, SMALL, "share_planes"),
            ({"share_planes": 5}, SMALL, "share_planes"),
            ({"relation_channels": 0}, SMALL, "relation_channels"),
            ({"value_channels": 12}, SMALL, "value_channels"),
            ({"kernel_size": 7}, (2, 3, 8, 16), "kernel_size"),
            ({"kernel_size": 3, "dilation": 3}, (2, 8, 3, 16), "dilation"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "san_pairwise_dilated_no_position",
        L.PairwiseSelfAttention,
        {
            "kernel_size": 3,
            "dilation": 2,
            "position_encoding": False,
            "value_channels": 8,
            "share_planes": 4,
        },
        SMALL,
        attention_shape=_san_map(3, 2),
        training=False,
    ),
    LayerCase(
        "san_patchwise_k3",
        L.PatchwiseSelfAttention,
        {"kernel_size": 3, "relation_channels": 2},
        SMALL,
        attention_shape=_san_map(3, 2),
        training=False,
        invalid=(
            ({"kernel_size": 2}, SMALL, "kernel_size"),
            ({"share_planes": 3}, SMALL, "share_planes"),
            ({"value_channels": 4, "share_planes": 8}, SMALL, "value_channels"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "san_patchwise_k7",
        L.PatchwiseSelfAttention,
        {"value_channels": 8, "share_planes": 2},
        SMALL,
        attention_shape=_san_map(7, 4),
        training=False,
    ),
    # Unnormalised weights (the official code's patchwise form) make large outputs with
    # random weights; a 3x3 footprint keeps XLA's float32 reordering within the dynamic
    # size check's 1e-5 tolerance.
    LayerCase(
        "san_patchwise_dilated_no_softmax",
        L.PatchwiseSelfAttention,
        {
            "kernel_size": 3,
            "dilation": 2,
            "relation_channels": 2,
            "softmax": False,
            "value_channels": 8,
            "share_planes": 2,
        },
        SMALL,
        attention_shape=_san_map(3, 4),
        training=False,
    ),
]
