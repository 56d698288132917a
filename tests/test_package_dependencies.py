"""The packages import each other one way only (docs/design.md), read from the source: the
layers import neither the zoo nor serving, serving imports neither of the others (but for the
attention signature, which reads keras_attention's maps), only the command line joins zoo and
serving, and `attention_zoo_common` (which all three share) needs
the standard library alone. Plus the shared argument checks."""

import ast
import pathlib
import sys

import pytest

from attention_zoo_common.checks import check_positive_int, is_positive_int

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("attention_zoo_common", "keras_attention", "zoo", "serving")
FORBIDDEN = {
    "attention_zoo_common": {"keras_attention", "zoo", "serving"},
    "keras_attention": {"zoo", "serving"},
    "serving": {"keras_attention", "zoo"},
    "zoo": {"serving"},
}
# the modules that join two packages, and what each may import besides its own package's rules:
# the command line joins the zoo and serving; the attention signature reads the maps of
# keras_attention's layers (imported inside its functions, only when such a signature is asked)
JOINS = {"zoo/cli.py": {"serving"}, "serving/attention.py": {"keras_attention"}}


def _imported_packages(path):
    """Top-level names of every module `path` imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.partition(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_design_allows(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no source found for {package}"
    violations = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        forbidden = FORBIDDEN[package] - JOINS.get(relative, set())
        imported = _imported_packages(path)
        violations += [f"{relative} imports {name}" for name in sorted(imported & forbidden)]
        if package == "attention_zoo_common":
            outside = imported - set(sys.stdlib_module_names) - {package}
            violations += [f"{relative} imports {name}" for name in sorted(outside)]
    assert not violations


@pytest.mark.parametrize("value", [1, 2, 10**12])
def test_positive_ints_pass(value):
    assert is_positive_int(value)
    check_positive_int("units", value)


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "1", None, (1,)])
def test_everything_else_is_rejected_naming_the_argument(value):
    assert not is_positive_int(value)
    with pytest.raises(ValueError) as error:
        check_positive_int("units", value)
    assert str(error.value) == f"`units` must be a positive integer, got units={value!r}."


def test_none_passes_only_where_allowed():
    check_positive_int("units", None, allow_none=True)
    with pytest.raises(ValueError, match="`units` must be a positive integer"):
        check_positive_int("units", 0, allow_none=True)
