"""Every harness case, gathered from one module per layer family."""

from tests.keras_attention.cases_channel import CASES as CHANNEL_CASES

CASES = [*CHANNEL_CASES]
