"""The floors of the tree: data flows one way, so no package imports a later one.

config (ground) → simulators → cluster → serve_apps → load_tests → evaluation → easel (CLI,
bench, report: the top, the only package that may import every stage). Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("config", "simulators", "cluster", "serve_apps", "load_tests", "evaluation", "easel")
_RANK = {name: i for i, name in enumerate(FLOORS)}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", FLOORS)
def test_no_package_imports_a_later_floor(package: str) -> None:
    later = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if _RANK.get(top, -1) > _RANK[package]:
                later.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not later, f"{package} imports a later floor:\n" + "\n".join(later)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from easel.bench import run_bench\n")
    assert _imports(bad) == [(2, "easel.bench")]


@pytest.mark.parametrize("package", FLOORS)
def test_every_public_name_of_a_package_resolves(package: str) -> None:
    """`__all__` names what exists: an attribute (lazy or not) or a subpackage."""
    import importlib

    mod = importlib.import_module(package)
    missing = []
    for name in mod.__all__:
        try:
            getattr(mod, name)
        except AttributeError:
            try:
                importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError:
                missing.append(name)
    assert not missing, f"{package}.__all__ names what does not exist: {missing}"
