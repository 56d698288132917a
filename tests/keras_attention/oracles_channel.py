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
    OracleCase("se_paper_rounding", _timm_se(rd_channels=3),
               lambda: L.SqueezeExcite(divisor=None), SHAPE),
]
