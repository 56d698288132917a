"""Harness cases: channel-domain layers (keras_attention/layers/channel.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, SHAPE, channel_map, spatial_map
from tests.layer_harness import LayerCase

CASES = [
    LayerCase(
        "se",
        L.SqueezeExcite,
        {},
        SHAPE,
        attention_shape=channel_map,
        invalid=(
            ({"reduction_ratio": 0}, SHAPE, "reduction_ratio"),
            ({"reduced_channels": -4}, SHAPE, "reduced_channels"),
            ({"divisor": 0}, SHAPE, "divisor"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "se_floor_no_bias",
        L.SqueezeExcite,
        {"divisor": None, "use_bias": False},
        SHAPE,
        attention_shape=channel_map,
    ),
]

# --- EfficientChannelAttention: C = 32 gives the adaptive kernel 3 ---
CASES += [
    LayerCase(
        "eca_adaptive",
        L.EfficientChannelAttention,
        {},
        SHAPE,
        attention_shape=channel_map,
        invalid=(
            ({"kernel_size": 4}, SHAPE, "kernel_size"),
            ({"kernel_size": 0}, SHAPE, "kernel_size"),
            ({"kernel_size": 3.0}, SHAPE, "kernel_size"),
            ({"kernel_size": 67, "circular": True}, SHAPE, "kernel_size"),
            ({"gamma": 0}, SHAPE, "gamma"),
            ({"beta": "1"}, SHAPE, "beta"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "eca_fixed_k7_hard_sigmoid",
        L.EfficientChannelAttention,
        {"kernel_size": 7, "gate_activation": "hard_sigmoid"},
        SHAPE,
        attention_shape=channel_map,
    ),
    LayerCase(
        "eca_circular_k5",
        L.EfficientChannelAttention,
        {"kernel_size": 5, "circular": True},
        SHAPE,
        attention_shape=channel_map,
    ),
    LayerCase(
        "eca_circular_adaptive",
        L.EfficientChannelAttention,
        {"circular": True},
        SHAPE,
        attention_shape=channel_map,
    ),
]

# --- GlobalContext: bottlenecks of at least 4 channels, so LayerNorm passes gradients; the
# attention bias shifts every logit of the spatial softmax alike, so it has no gradient ---
GC_NO_GRADIENT = ("attention/bias",)
CASES += [
    LayerCase(
        "gc_add",
        L.GlobalContext,
        {"reduction_ratio": 1 / 4},
        SHAPE,
        attention_shape=spatial_map,
        no_weight_gradient=GC_NO_GRADIENT,
        invalid=(
            ({"reduction_ratio": 0}, SHAPE, "reduction_ratio"),
            ({"reduced_channels": -4}, SHAPE, "reduced_channels"),
            ({"divisor": 0}, SHAPE, "divisor"),
            ({"fusion": "concat"}, SHAPE, "fusion"),
            ({"fusion": ()}, SHAPE, "fusion"),
            ({"fusion": ("add", "add")}, SHAPE, "fusion"),
            ({"fusion": ("add", "scale")}, SHAPE, "fusion"),
            ({"pooling": "max"}, SHAPE, "pooling"),
            ({"norm_epsilon": 0}, SHAPE, "norm_epsilon"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "gc_multiply_timm",
        L.GlobalContext,
        {
            "fusion": "multiply",
            "reduction_ratio": 1 / 8,
            "divisor": 1,
            "norm_epsilon": 1e-6,
            "zero_init_last": False,
        },
        SHAPE,
        attention_shape=spatial_map,
        no_weight_gradient=GC_NO_GRADIENT,
    ),
    # GCNet's fusion_types=("channel_add", "channel_mul"): the gate, then the addition
    LayerCase(
        "gc_multiply_and_add",
        L.GlobalContext,
        {"fusion": ("add", "multiply"), "reduced_channels": 4, "zero_init_last": False},
        SHAPE,
        attention_shape=spatial_map,
        no_weight_gradient=GC_NO_GRADIENT,
    ),
    LayerCase(
        "gc_avg_pooling",
        L.GlobalContext,
        {"pooling": "avg", "reduced_channels": 4, "fusion": "multiply"},
        SHAPE,
        attention_shape=spatial_map,
    ),
]

# --- DualChannelAttention (DANet CAM) ---
CASES += [
    LayerCase(
        "cam_official",
        L.DualChannelAttention,
        {},
        SHAPE,
        attention_shape=lambda shape: (shape[0], shape[-1], shape[-1]),
        invalid=(
            ({"energy": "softmax"}, SHAPE, "energy"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "cam_paper",
        L.DualChannelAttention,
        {"energy": "paper"},
        SHAPE,
        attention_shape=lambda shape: (shape[0], shape[-1], shape[-1]),
    ),
]
