"""Every public layer through the shared harness, on this process's Keras backend."""

import pytest

import keras_attention
from tests.keras_attention.layer_cases import CASES
from tests.layer_harness import CHECKS, run_check


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_layer(case, check, tmp_path):
    run_check(check, case, tmp_path)


def test_every_public_layer_has_a_harness_case():
    covered = {case.cls.__name__ for case in CASES}
    missing = set(keras_attention.layers.__all__) - covered
    assert not missing, f"layers without a harness case: {sorted(missing)}"
