"""The layer tests, one family at a time.

Each family `<family>` (a module of `keras_attention/layers/`, or a few of them) has
`cases_<family>.py` (its shared-harness cases, `CASES`), `test_<family>.py` (its closed-form and
official-code checks, and the line that runs those cases through the harness) and, where timm
has the module, `oracles_<family>.py` (its timm parity cases, `ORACLE_CASES`), run by the same
test module. `test_case_coverage.py` checks that every such module is run there.
"""

import importlib
import pkgutil


def family_modules(prefix):
    """The modules of this package whose name starts with `prefix`, imported, sorted by name."""
    return [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
        if info.name.startswith(prefix)
    ]


def all_harness_cases():
    """Every shared-harness case of every family."""
    return [case for module in family_modules("cases_") for case in module.CASES]


def all_oracle_cases():
    """Every timm parity case of every family (fixture generation, converter tests)."""
    return [case for module in family_modules("oracles_") for case in module.ORACLE_CASES]
