"""Every timm parity case of keras_attention, gathered from one module per layer family."""

from tests.keras_attention.oracles_channel import ORACLE_CASES as CHANNEL
from tests.keras_attention.oracles_mixed import ORACLE_CASES as MIXED
from tests.keras_attention.oracles_relative_attention import ORACLE_CASES as RELATIVE_ATTENTION
from tests.keras_attention.oracles_self_attention import ORACLE_CASES as SELF_ATTENTION

ORACLE_CASES = [*SELF_ATTENTION, *CHANNEL, *MIXED, *RELATIVE_ATTENTION]
