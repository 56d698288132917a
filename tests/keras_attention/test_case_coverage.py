"""Every public layer has a harness case, and every family's case modules are run by its test
module (`cases_<family>` / `oracles_<family>` by `test_<family>`), found by name: a new family
file that no test module runs fails here."""

import keras_attention
from tests.keras_attention import all_harness_cases, family_modules

CASE_PREFIXES = ("cases_", "oracles_")


def _family(module, prefix):
    return module.__name__.rpartition(".")[2].removeprefix(prefix)


def _runners():
    """{case module name: [test module names whose collected tests run it]}."""
    runners = {}
    for test_module in family_modules("test_"):
        for name, test in vars(test_module).items():
            if name.startswith("test") and hasattr(test, "runs_cases_of"):
                runners.setdefault(test.runs_cases_of, set()).add(test_module.__name__)
    return runners


def test_every_public_layer_has_a_harness_case():
    covered = {case.cls.__name__ for case in all_harness_cases()}
    missing = set(keras_attention.layers.__all__) - covered
    assert not missing, f"layers without a harness case: {sorted(missing)}"


def test_every_case_module_is_run_by_its_family_test_module():
    runners = _runners()
    expected = {}
    for prefix in CASE_PREFIXES:
        modules = family_modules(prefix)
        assert modules, f"no {prefix}* module found in tests.keras_attention"
        for module in modules:
            package, _, _ = module.__name__.rpartition(".")
            expected[module.__name__] = {f"{package}.test_{_family(module, prefix)}"}
    assert {name: runners.get(name, set()) for name in expected} == expected
    # and nothing runs a module that the pattern does not find
    assert set(runners) <= set(expected), sorted(set(runners) - set(expected))


def test_each_case_module_defines_cases_with_unique_ids():
    # Oracle fixtures are files named by case id, so ids are unique across families.
    for prefix, attribute in zip(CASE_PREFIXES, ("CASES", "ORACLE_CASES")):
        ids = []
        for module in family_modules(prefix):
            cases = getattr(module, attribute, None)
            assert cases, f"{module.__name__} defines no {attribute}"
            ids += [case.id for case in cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        assert not duplicates, f"{prefix}* case ids used twice: {duplicates}"
