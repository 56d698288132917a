"""Parity with timm: committed fixtures everywhere, live timm under the `oracle` marker."""

import pytest

from tests.keras_attention.oracle_registry import ORACLE_CASES
from tests.oracle_cases import assert_matches, load_fixture, timm_run

ids = [case.id for case in ORACLE_CASES]


@pytest.mark.parametrize("case", ORACLE_CASES, ids=ids)
def test_matches_committed_timm_fixture(case):
    assert_matches(case, load_fixture(case))


@pytest.mark.oracle
@pytest.mark.parametrize("case", ORACLE_CASES, ids=ids)
def test_matches_live_timm(case):
    pytest.importorskip("timm", reason="live oracle needs the `oracle` extra (timm, torch)")
    assert_matches(case, timm_run(case, seed=1))
