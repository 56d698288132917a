"""Every harness case, gathered from one module per layer family."""

from tests.keras_attention.cases_channel import CASES as CHANNEL_CASES
from tests.keras_attention.cases_context_attention import CASES as CONTEXT_ATTENTION_CASES
from tests.keras_attention.cases_generalized_san import CASES as GENERALIZED_SAN_CASES
from tests.keras_attention.cases_hard_attention import CASES as HARD_ATTENTION_CASES
from tests.keras_attention.cases_local_attention import CASES as LOCAL_ATTENTION_CASES
from tests.keras_attention.cases_mixed import CASES as MIXED_CASES
from tests.keras_attention.cases_pyramid_attention import CASES as PYRAMID_ATTENTION_CASES
from tests.keras_attention.cases_relative_attention import CASES as RELATIVE_ATTENTION_CASES
from tests.keras_attention.cases_residual_attention import CASES as RESIDUAL_ATTENTION_CASES
from tests.keras_attention.cases_self_attention import CASES as SELF_ATTENTION_CASES
from tests.keras_attention.cases_spatial_transformer import CASES as SPATIAL_TRANSFORMER_CASES

CASES = [
    *SELF_ATTENTION_CASES,
    *CHANNEL_CASES,
    *MIXED_CASES,
    *CONTEXT_ATTENTION_CASES,
    *RESIDUAL_ATTENTION_CASES,
    *RELATIVE_ATTENTION_CASES,
    *LOCAL_ATTENTION_CASES,
    *GENERALIZED_SAN_CASES,
    *SPATIAL_TRANSFORMER_CASES,
    *HARD_ATTENTION_CASES,
]
CASES += PYRAMID_ATTENTION_CASES
