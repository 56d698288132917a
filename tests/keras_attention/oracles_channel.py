"""timm parity cases: channel-domain layers (see tests/oracle_cases.py)."""

from keras_attention import layers as L
from tests.oracle_cases import OracleCase

SHAPE = (2, 7, 9, 48)


def _timm_se(**kwargs):
    def build():
        from timm.layers.squeeze_excite import SEModule

        return SEModule(48, **kwargs)

    return build


ORACLE_CASES = [
    # timm rounding: make_divisible(48 / 16, 8) = 8
    OracleCase("se_timm_rounding", _timm_se(), lambda: L.SqueezeExcite(), SHAPE),
    # paper rounding: 48 // 16 = 3
    OracleCase(
        "se_paper_rounding", _timm_se(rd_channels=3), lambda: L.SqueezeExcite(divisor=None), SHAPE
    ),
]

# --- ECA: C = 128 gives the adaptive kernel int((log2 128 + 1) / 2) = 4 -> 5 ---
ECA_SHAPE = (2, 7, 9, 128)


def _timm_eca(cls_name, channels=128, **kwargs):
    def build():
        from timm.layers import eca

        return getattr(eca, cls_name)(channels, **kwargs)

    return build


ORACLE_CASES += [
    OracleCase(
        "eca_timm_adaptive_k5",
        _timm_eca("EcaModule"),
        lambda: L.EfficientChannelAttention(),
        ECA_SHAPE,
    ),
    # timm ignores kernel_size when given the channel count: channels=None fixes it
    OracleCase(
        "eca_timm_fixed_k7",
        _timm_eca("EcaModule", channels=None, kernel_size=7),
        lambda: L.EfficientChannelAttention(kernel_size=7),
        SHAPE,
    ),
    OracleCase(
        "ceca_timm_adaptive_k5",
        _timm_eca("CecaModule"),
        lambda: L.EfficientChannelAttention(circular=True),
        ECA_SHAPE,
    ),
]


# --- GlobalContext: timm rounding make_divisible(48 / 8, 1) = 6, LayerNorm2d eps 1e-6 ---
def _timm_gc(**kwargs):
    def build():
        from timm.layers.global_context import GlobalContext

        return GlobalContext(48, **kwargs)

    return build


def _keras_gc(**kwargs):
    return lambda: L.GlobalContext(reduction_ratio=1 / 8, divisor=1, norm_epsilon=1e-6, **kwargs)


ORACLE_CASES += [
    OracleCase("gc_timm_scale", _timm_gc(), _keras_gc(fusion="multiply"), SHAPE),
    OracleCase(
        "gc_timm_add", _timm_gc(fuse_add=True, fuse_scale=False), _keras_gc(fusion="add"), SHAPE
    ),
    OracleCase(
        "gc_timm_scale_avg",
        _timm_gc(use_attn=False),
        _keras_gc(fusion="multiply", pooling="avg"),
        SHAPE,
    ),
    # both fusions (GCNet's fusion_types=("channel_add", "channel_mul")): gate, then add
    OracleCase(
        "gc_timm_scale_and_add",
        _timm_gc(fuse_add=True, fuse_scale=True),
        _keras_gc(fusion=("add", "multiply")),
        SHAPE,
    ),
    # official rounding (int(48 / 16) = 3) through timm's explicit rd_channels
    OracleCase(
        "gc_timm_add_official_width",
        _timm_gc(fuse_add=True, fuse_scale=False, rd_channels=3),
        lambda: L.GlobalContext(fusion="add", norm_epsilon=1e-6),
        SHAPE,
    ),
]
