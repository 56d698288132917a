"""timm parity cases: relative-position self-attention (see tests/oracle_cases.py)."""

from keras_attention import layers as L
from tests.oracle_cases import OracleCase

# Non-square feature map; dim_head (6) differs from the value head width (16 / 4 = 4) so a
# wrong qkv split cannot pass.
BOT_SHAPE = (2, 4, 5, 16)


def _timm_bot(**kwargs):
    def build():
        from timm.layers.bottleneck_attn import BottleneckAttn

        return BottleneckAttn(16, feat_size=(4, 5), dim_head=6, **kwargs)

    return build


def _keras_bot(**kwargs):
    return lambda: L.BottleneckAttention(feat_size=(4, 5), dim_head=6, **kwargs)


ORACLE_CASES = [
    OracleCase("botnet_timm", _timm_bot(), _keras_bot(), BOT_SHAPE),
    OracleCase(
        "botnet_timm_scale_pos_embed",
        _timm_bot(scale_pos_embed=True),
        _keras_bot(scale_pos_embed=True),
        BOT_SHAPE,
    ),
    OracleCase(
        "botnet_timm_stride2_bias",
        _timm_bot(stride=2, qkv_bias=True, dim_out=24),
        _keras_bot(stride=2, qkv_bias=True, dim_out=24),
        BOT_SHAPE,
    ),
]

# --- HaloAttn: 8x12 map in 4x4 blocks with halo 1 (and 2, strided queries / avg pool) ---
HALO_SHAPE = (2, 8, 12, 16)


def _timm_halo(**kwargs):
    def build():
        from timm.layers.halo_attn import HaloAttn

        return HaloAttn(16, block_size=4, num_heads=2, **kwargs)

    return build


def _keras_halo(**kwargs):
    return lambda: L.HaloAttention(block_size=4, num_heads=2, **kwargs)


ORACLE_CASES += [
    OracleCase(
        "halo_timm",
        _timm_halo(halo_size=1, dim_head=6),
        _keras_halo(halo_size=1, dim_head=6),
        HALO_SHAPE,
    ),
    OracleCase(
        "halo_timm_scale_pos_embed_bias",
        _timm_halo(halo_size=2, scale_pos_embed=True, qkv_bias=True),
        _keras_halo(halo_size=2, scale_pos_embed=True, qkv_bias=True),
        HALO_SHAPE,
    ),
    OracleCase(
        "halo_timm_stride2",
        _timm_halo(halo_size=1, stride=2, dim_out=8),
        _keras_halo(halo_size=1, stride=2, dim_out=8),
        HALO_SHAPE,
    ),
    OracleCase(
        "halo_timm_avg_down",
        _timm_halo(halo_size=1, stride=2, avg_down=True),
        _keras_halo(halo_size=1, stride=2, avg_down=True),
        HALO_SHAPE,
    ),
]

# --- LambdaLayer: local r=5 lambdas; global relative embeddings (r=None, feat_size) ---
LAMBDA_SHAPE = (2, 5, 6, 16)


def _timm_lambda(**kwargs):
    def build():
        from timm.layers.lambda_layer import LambdaLayer

        return LambdaLayer(16, num_heads=2, dim_head=4, **kwargs)

    return build


def _keras_lambda(**kwargs):
    return lambda: L.LambdaLayer(num_heads=2, dim_head=4, **kwargs)


ORACLE_CASES += [
    OracleCase("lambda_timm_r5", _timm_lambda(r=5), _keras_lambda(r=5), LAMBDA_SHAPE),
    OracleCase(
        "lambda_timm_global_stride2",
        _timm_lambda(r=None, feat_size=(5, 6), stride=2, qkv_bias=True),
        _keras_lambda(r=None, feat_size=(5, 6), stride=2, qkv_bias=True),
        LAMBDA_SHAPE,
    ),
]
