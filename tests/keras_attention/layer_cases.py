"""Every harness case, gathered from one module per layer family."""

from tests.keras_attention.cases_channel import CASES as CHANNEL_CASES
from tests.keras_attention.cases_mixed import CASES as MIXED_CASES
from tests.keras_attention.cases_residual_attention import CASES as RESIDUAL_ATTENTION_CASES

CASES = [*CHANNEL_CASES, *MIXED_CASES, *RESIDUAL_ATTENTION_CASES]
