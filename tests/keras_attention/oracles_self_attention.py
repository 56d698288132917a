"""timm parity cases: self-attention layers (see tests/oracle_cases.py)."""

from keras_attention import layers as L
from tests.oracle_cases import OracleCase


def _timm_non_local(channels, **kwargs):
    def build():
        from timm.layers.non_local_attn import NonLocalAttn

        return NonLocalAttn(channels, **kwargs)

    return build


ORACLE_CASES = [
    # timm defaults: make_divisible(48 / 8, 8) = 8 inner channels, scale 48 ** -0.5
    OracleCase(
        "nonlocal_timm_default",
        _timm_non_local(48),
        lambda: L.NonLocal(reduction_ratio=1 / 8, divisor=8, scale="input"),
        (2, 7, 9, 48),
    ),
    # explicit width, no scale
    OracleCase(
        "nonlocal_timm_rd12_noscale",
        _timm_non_local(32, rd_channels=12, use_scale=False),
        lambda: L.NonLocal(inner_channels=12, scale=None),
        (2, 5, 6, 32),
    ),
]
