"""Harness cases: relative-position self-attention (layers/relative_attention.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR
from tests.layer_harness import LayerCase

# Non-square, so a transposed relative table or position order cannot pass.
BOT_SHAPE = (2, 4, 5, 16)
STATIC_TABLES = "relative position tables are sized for feat_size"


def _full_map(heads):
    return lambda shape: (shape[0], heads, shape[1] * shape[2], shape[1] * shape[2])


CASES = [
    LayerCase(
        "botnet_rel",
        L.BottleneckAttention,
        {"feat_size": (4, 5), "dim_head": 6},
        BOT_SHAPE,
        dynamic_hw=STATIC_TABLES,
        attention_shape=_full_map(4),
        invalid=(
            ({"feat_size": (4, 0)}, BOT_SHAPE, "feat_size"),
            ({"feat_size": (5, 5)}, BOT_SHAPE, "feat_size"),
            ({"feat_size": None}, (2, None, None, 16), "feat_size"),
            ({"dim_out": 18}, BOT_SHAPE, "num_heads"),
            ({"stride": 3}, BOT_SHAPE, "stride"),
            ({"dim_head": 0}, BOT_SHAPE, "dim_head"),
            ({"qk_ratio": 0}, BOT_SHAPE, "qk_ratio"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "botnet_scaled_pos_stride2",
        L.BottleneckAttention,
        {"dim_out": 24, "num_heads": 2, "stride": 2, "scale_pos_embed": True, "qkv_bias": True},
        BOT_SHAPE,
        dynamic_hw=STATIC_TABLES,
        attention_shape=_full_map(2),
    ),
]

# --- HaloAttention: 2x2 blocks of 4 on 8x8 (blocks meet the zero padding and each other) ---
HALO_SHAPE = (2, 8, 8, 16)


def _halo_map(heads, query_block, window):
    return lambda shape: (
        shape[0],
        heads,
        (shape[1] // 4) * (shape[2] // 4),
        query_block**2,
        window**2,
    )


CASES += [
    LayerCase(
        "halo_rel",
        L.HaloAttention,
        {"block_size": 4, "halo_size": 1, "num_heads": 2, "dim_head": 6},
        HALO_SHAPE,
        attention_shape=_halo_map(2, 4, 6),
        other_sizes=((4, 12), (12, 8)),
        invalid=(
            ({"block_size": 3}, HALO_SHAPE, "block_size"),
            ({"halo_size": -1}, HALO_SHAPE, "halo_size"),
            ({"num_heads": 3}, HALO_SHAPE, "num_heads"),
            ({"stride": 4}, HALO_SHAPE, "stride"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "halo_strided_queries",
        L.HaloAttention,
        {
            "block_size": 4,
            "halo_size": 2,
            "num_heads": 2,
            "stride": 2,
            "dim_out": 8,
            "scale_pos_embed": True,
            "qkv_bias": True,
        },
        HALO_SHAPE,
        attention_shape=_halo_map(2, 2, 8),
        other_sizes=((4, 12),),
    ),
]

# --- LambdaLayer: local (r) position lambdas and global relative embeddings ---
LAMBDA_SHAPE = (2, 5, 6, 16)

CASES += [
    LayerCase(
        "lambda_local_r3",
        L.LambdaLayer,
        {"num_heads": 2, "dim_head": 4, "r": 3},
        LAMBDA_SHAPE,
        attention_shape=lambda shape: (*shape[:3], 4),
        invalid=(
            ({"r": 4}, LAMBDA_SHAPE, "r"),
            ({"num_heads": 3}, LAMBDA_SHAPE, "num_heads"),
            ({"r": None, "feat_size": (6, 6)}, LAMBDA_SHAPE, "feat_size"),
            ({"r": None}, (2, None, None, 16), "feat_size"),
            ({"stride": 0}, LAMBDA_SHAPE, "stride"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "lambda_global_stride2",
        L.LambdaLayer,
        {"num_heads": 2, "dim_head": 4, "r": None, "feat_size": (5, 6), "stride": 2, "dim_out": 8},
        LAMBDA_SHAPE,
        dynamic_hw=STATIC_TABLES,
        attention_shape=lambda shape: (*shape[:3], 4),
    ),
]

# --- AttentionAugmentedConv2D ---
AA_SHAPE = (2, 4, 5, 8)
AA = {"filters": 12, "kernel_size": 3, "dk": 8, "dv": 4, "num_heads": 2}

CASES += [
    LayerCase(
        "aaconv_relative",
        L.AttentionAugmentedConv2D,
        AA,
        AA_SHAPE,
        dynamic_hw="relative position tables are sized for the input's height and width",
        attention_shape=_full_map(2),
        invalid=(
            ({"dk": 7}, AA_SHAPE, "dk"),
            ({"dv": 3}, AA_SHAPE, "dv"),
            ({"dv": 12}, AA_SHAPE, "dv"),
            ({"filters": None, "dv": 8}, AA_SHAPE, "dv"),
            ({"num_heads": 0}, AA_SHAPE, "num_heads"),
            ({"feat_size": (4, 4)}, AA_SHAPE, "feat_size"),
            ({}, (2, None, None, 8), "feat_size"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "aaconv_plain",
        L.AttentionAugmentedConv2D,
        dict(AA, relative=False, kernel_size=1, filters=None),
        AA_SHAPE,
        attention_shape=_full_map(2),
        other_sizes=((3, 7),),
    ),
]
