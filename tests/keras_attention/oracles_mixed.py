"""timm parity cases: CBAM and its two gates (see tests/oracle_cases.py).

40 channels: timm's rd_divisor=1 gives round(40 / 16) = 3 bottleneck channels where the
official code's floor would give 2, so a wrong rounding fails on shapes.
"""

from keras_attention import layers as L
from tests.oracle_cases import OracleCase

SHAPE = (2, 7, 9, 40)
SPATIAL_KEY = "spatial.conv.conv.weight"


def _timm(name, *args, **kwargs):
    def build():
        from timm.layers import cbam

        return getattr(cbam, name)(*args, **kwargs)

    return build


def _swap_pooling_order(key):
    """timm's spatial convolution reads [mean, max]; a layer with the official [max, mean]
    order computes the same function with the kernel's input-channel axis reversed."""

    def adapt(state):
        state[key] = state[key][:, ::-1].copy()
        return state

    return adapt


ORACLE_CASES = [
    OracleCase(
        "cbam_timm",
        _timm("CbamModule", 40),
        lambda: L.CBAM(use_bias=False, pooling_order="mean_max"),
        SHAPE,
    ),
    OracleCase(
        "cbam_timm_mlp_bias",
        _timm("CbamModule", 40, mlp_bias=True),
        lambda: L.CBAM(use_bias=True, pooling_order="mean_max"),
        SHAPE,
    ),
    OracleCase(
        "cbam_official_order_mlp_bias",
        _timm("CbamModule", 40, mlp_bias=True),
        lambda: L.CBAM(),
        SHAPE,
        adapt_state=_swap_pooling_order(SPATIAL_KEY),
    ),
    OracleCase(
        "cbam_official_order_no_bias_k3",
        _timm("CbamModule", 40, spatial_kernel_size=3),
        lambda: L.CBAM(use_bias=False, kernel_size=3),
        SHAPE,
        adapt_state=_swap_pooling_order(SPATIAL_KEY),
    ),
    OracleCase(
        "channel_gate_timm",
        _timm("ChannelAttn", 40, rd_channels=5, mlp_bias=True),
        lambda: L.ChannelGate(reduced_channels=5),
        SHAPE,
    ),
    OracleCase(
        "spatial_gate_timm",
        _timm("SpatialAttn", 7),
        lambda: L.SpatialGate(pooling_order="mean_max"),
        SHAPE,
    ),
]
