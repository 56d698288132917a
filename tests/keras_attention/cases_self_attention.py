"""Harness cases: self-attention over positions (keras_attention/layers/self_attention.py)."""

import math

from keras_attention import layers as L
from tests.layer_harness import LayerCase

MHSA_SHAPE = (2, 4, 5, 16)


def mhsa_map(heads):
    return lambda shape: (shape[0], heads, shape[1] * shape[2], shape[1] * shape[2])


def nonlocal_map(windows=None):
    def shape_of(shape):
        spatial = shape[1:-1]
        pooled = spatial if windows is None else [s // w for s, w in zip(spatial, windows)]
        return (shape[0], math.prod(spatial), math.prod(pooled))

    return shape_of


CASES = [
    LayerCase(
        "mhsa_heads4",
        L.MultiHeadSelfAttention2D,
        {"num_heads": 4},
        MHSA_SHAPE,
        attention_shape=mhsa_map(4),
        invalid=(
            ({"num_heads": 0}, MHSA_SHAPE, "num_heads"),
            ({"key_dim": 0}, MHSA_SHAPE, "key_dim"),
            ({"num_heads": 32}, MHSA_SHAPE, "key_dim"),
            ({"num_key_value_heads": 3}, MHSA_SHAPE, "num_key_value_heads"),
            ({"num_key_value_heads": 0}, MHSA_SHAPE, "num_key_value_heads"),
            ({"output_dim": 0}, MHSA_SHAPE, "output_dim"),
            ({"scale": -1.0}, MHSA_SHAPE, "scale"),
            ({}, (2, 4, 16), r"input_shape=\(2, 4, 16\)"),
        ),
    ),
    # grouped-query attention with its own key_dim, output width and scale
    LayerCase(
        "mhsa_gqa_output_dim",
        L.MultiHeadSelfAttention2D,
        {"num_heads": 4, "num_key_value_heads": 2, "key_dim": 6, "output_dim": 12, "scale": 0.3},
        MHSA_SHAPE,
        attention_shape=mhsa_map(4),
    ),
    # multi-query attention (one key/value head), no biases
    LayerCase(
        "mhsa_mqa_no_bias",
        L.MultiHeadSelfAttention2D,
        {"num_heads": 2, "num_key_value_heads": 1, "use_bias": False},
        MHSA_SHAPE,
        attention_shape=mhsa_map(2),
    ),
]

# --- NonLocal: checked with training=False (the `out` bias before the BatchNorm has no
# training-mode gradient by construction) ---
NL_SHAPE_2D = (2, 4, 6, 16)
NL_SHAPE_1D = (2, 10, 8)
NL_SHAPE_3D = (2, 3, 4, 4, 8)

CASES += [
    LayerCase(
        "nonlocal_embedded_2d",
        L.NonLocal,
        {},
        NL_SHAPE_2D,
        attention_shape=nonlocal_map(),
        training=False,
        invalid=(
            ({"pairwise": "softmax"}, NL_SHAPE_2D, "pairwise"),
            ({"inner_channels": 0}, NL_SHAPE_2D, "inner_channels"),
            ({"reduction_ratio": 0}, NL_SHAPE_2D, "reduction_ratio"),
            ({"divisor": 0}, NL_SHAPE_2D, "divisor"),
            ({"scale": "output"}, NL_SHAPE_2D, "scale"),
            ({"subsample": True}, (2, 4, 1, 16), "subsample"),
            ({}, (2, 16), r"input_shape=\(2, 16\)"),
            ({}, (2, 2, 3, 4, 5, 16), r"input_shape=\(2, 2, 3, 4, 5, 16\)"),
            ({}, (2, 4, 6, None), "channel"),
        ),
    ),
    LayerCase(
        "nonlocal_timm_like_2d",
        L.NonLocal,
        {"reduction_ratio": 1 / 8, "divisor": 8, "scale": "input"},
        NL_SHAPE_2D,
        attention_shape=nonlocal_map(),
        training=False,
    ),
    # default scale="auto": no temperature in the Gaussian mode (mmcv)
    LayerCase(
        "nonlocal_gaussian_auto_2d",
        L.NonLocal,
        {"pairwise": "gaussian"},
        NL_SHAPE_2D,
        attention_shape=nonlocal_map(),
        training=False,
    ),
    LayerCase(
        "nonlocal_gaussian_subsample_2d",
        L.NonLocal,
        {"pairwise": "gaussian", "subsample": True, "scale": "input"},
        NL_SHAPE_2D,
        attention_shape=nonlocal_map((2, 2)),
        training=False,
    ),
    LayerCase(
        "nonlocal_dot_product_subsample_1d",
        L.NonLocal,
        {"pairwise": "dot_product", "subsample": True},
        NL_SHAPE_1D,
        attention_shape=nonlocal_map((2,)),
        training=False,
        other_sizes=((9,), (13,)),
    ),
    LayerCase(
        "nonlocal_concatenation_subsample_3d",
        L.NonLocal,
        {"pairwise": "concatenation", "subsample": True, "inner_channels": 6},
        NL_SHAPE_3D,
        attention_shape=nonlocal_map((1, 2, 2)),
        training=False,
        other_sizes=((3, 5, 6),),
    ),
    LayerCase(
        "nonlocal_embedded_3d",
        L.NonLocal,
        {"scale": None},
        NL_SHAPE_3D,
        attention_shape=nonlocal_map(),
        training=False,
        other_sizes=((2, 5, 3),),
    ),
]
