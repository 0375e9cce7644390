"""The layout docs/development.md describes: files under 500 lines, `cli` on top of the library."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tfrobust"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imported(path):
    """Every module an import statement of `path` names, at any depth (lazy imports too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_every_module_of_the_package_stays_under_500_lines():
    assert len(MODULES) > 50
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES
            if (n := len(p.read_text().splitlines())) >= 500}
    assert long == {}


# `python -m tfrobust` (__main__.py) is the command line's own entry point.
LIBRARY = [p for p in MODULES
           if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_in_the_library_imports_the_cli(path):
    assert [n for n in _imported(path)
            if n == "tfrobust.cli" or n.startswith("tfrobust.cli.")] == []
