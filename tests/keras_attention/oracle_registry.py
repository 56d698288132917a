"""Every timm parity case of keras_attention, gathered from one module per layer family."""

from tests.keras_attention.oracles_channel import ORACLE_CASES as CHANNEL
from tests.keras_attention.oracles_mixed import ORACLE_CASES as MIXED

ORACLE_CASES = [*CHANNEL, *MIXED]
