"""Harness cases: neighbourhood attention (keras_attention/layers/local_attention.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR
from tests.layer_harness import LayerCase

# Small maps: JAX is slow per op and the window is k * k shifted views.
LOCAL_SHAPE = (2, 6, 6, 8)
PAIR = [LOCAL_SHAPE, LOCAL_SHAPE]
_SIZES = ((5, 7), (3, 4))


def window_map(kernel_size, num_heads):
    def shape(input_shape):
        query_shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        return (*query_shape[:3], num_heads, kernel_size**2)

    return shape


CASES = [
    LayerCase(
        "localattn_self_k3_heads2",
        L.LocalSelfAttention2D,
        {"num_heads": 2, "kernel_size": 3},
        LOCAL_SHAPE,
        attention_shape=window_map(3, 2),
        other_sizes=_SIZES,
        invalid=(
            ({"kernel_size": 4}, LOCAL_SHAPE, "kernel_size"),
            ({"kernel_size": 0}, LOCAL_SHAPE, "kernel_size"),
            ({"dilation": 0}, LOCAL_SHAPE, "dilation"),
            ({"num_heads": 0}, LOCAL_SHAPE, "num_heads"),
            ({"num_heads": 3}, LOCAL_SHAPE, "num_heads"),
            ({"key_dim": -1}, LOCAL_SHAPE, "key_dim"),
            ({"value_dim": 0}, LOCAL_SHAPE, "value_dim"),
            ({}, (2, 6, 6), r"input_shape=\(2, 6, 6\)"),
        ),
    ),
    LayerCase(
        "localattn_self_k5_dilated_no_bias",
        L.LocalSelfAttention2D,
        {"kernel_size": 5, "dilation": 2, "key_dim": 4, "value_dim": 6, "use_bias": False},
        LOCAL_SHAPE,
        attention_shape=window_map(5, 1),
        other_sizes=_SIZES,
    ),
    LayerCase(
        "localattn_cross_k3",
        L.LocalCrossAttention2D,
        {"num_heads": 2, "kernel_size": 3},
        PAIR,
        attention_shape=window_map(3, 2),
        other_sizes=_SIZES,
        invalid=(
            ({"kernel_size": 2}, PAIR, "kernel_size"),
            ({}, LOCAL_SHAPE, "inputs"),
            ({}, [LOCAL_SHAPE, (2, 6, 5, 8)], "inputs"),
            ({}, [LOCAL_SHAPE, (2, 6, 8)], r"input_shape=\(2, 6, 8\)"),
        ),
    ),
]

# --- InteractionAwareAttention (keras_attention/layers/interaction_aware.py) ---
# A three-scale pyramid: a 6 x 6 map, a 3 x 3 map (upsampled) and a 12 x 12 map
# (downsampled), with different channel counts.
PYRAMID = [(2, 6, 6, 8), (2, 3, 3, 12), (2, 12, 12, 4)]


def pyramid_map(input_shape):
    target = input_shape[0] if isinstance(input_shape, list) else input_shape
    return (target[0], target[1], target[2], target[1], target[2])


CASES += [
    LayerCase(
        "interaction_aware_pyramid",
        L.InteractionAwareAttention,
        {"projection_dim": 3},
        PYRAMID,
        attention_shape=pyramid_map,
        other_sizes=(((5, 7), (3, 4), (10, 14)), ((4, 4), (8, 8), (2, 2))),
        invalid=(
            ({"projection_dim": 0}, PYRAMID, "projection_dim"),
            ({"projection_dim": 5}, PYRAMID, "projection_dim"),
            ({"target_index": 3}, PYRAMID, "target_index"),
            ({"target_index": -1}, PYRAMID, "target_index"),
            ({"interpolation": "bicubic"}, PYRAMID, "interpolation"),
            ({"loss_weight": -1.0}, PYRAMID, "loss_weight"),
            ({}, [PYRAMID[0], (2, 3, 12)], r"input_shape=\(2, 3, 12\)"),
        ),
    ),
    LayerCase(
        "interaction_aware_nearest_target1",
        L.InteractionAwareAttention,
        {"projection_dim": 2, "target_index": 1, "interpolation": "nearest", "loss_weight": 0.5},
        PYRAMID[:2],
        attention_shape=lambda s: pyramid_map(s[1:]),
        other_sizes=(((6, 8), (3, 4)),),
    ),
    LayerCase(
        "interaction_aware_single_map",
        L.InteractionAwareAttention,
        {},
        LOCAL_SHAPE,
        attention_shape=pyramid_map,
        other_sizes=_SIZES,
        invalid=(RANK_ERROR,),
    ),
]
