"""The package's architecture, enforced: imports point one way, the standard library at module top.

Layers (CONTRIBUTING.md): ``models`` and ``report`` are the ground floor, ``organisms`` build on
them, the four instruments on both, and no instrument imports another.
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "probity"
INSTRUMENTS = ("scrub", "estimate", "nla", "honesty")
GROUND = ("models", "report")


def imports(path: Path):
    """(line, imported module, inside a function?) for every import in ``path``, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    nested = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, id(node) in nested
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "probity" else [node.module]
            for name in names:
                yield node.lineno, name, id(node) in nested


def sources(*parts: str) -> list[Path]:
    return sorted((PACKAGE.joinpath(*parts)).rglob("*.py"))


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "probity" and len(parts) > 1 else None


def offending(paths: list[Path], bad) -> list[str]:
    """``path:line imports module`` for every import in ``paths`` for which ``bad(module, nested)``."""
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}" + (" inside a function" if nested else "")
        for path in paths
        for line, module, nested in imports(path)
        if bad(module, nested)
    ]


@pytest.mark.parametrize("ground", GROUND)
def test_the_ground_floor_imports_no_instrument_and_no_organism(ground):
    upward = offending(sources(ground), lambda module, _: layer_of(module) in (*INSTRUMENTS, "organisms"))
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_no_instrument_imports_another(instrument):
    sideways = offending(
        sources(instrument), lambda module, _: layer_of(module) in INSTRUMENTS and layer_of(module) != instrument
    )
    assert not sideways, "\n".join(sideways)


def test_standard_library_imports_are_at_module_top():
    files = [*sources(), *sorted((PACKAGE.parent / "bench").glob("*.py"))]
    lazy = offending(files, lambda module, nested: nested and module.split(".")[0] in sys.stdlib_module_names)
    assert not lazy, "\n".join(lazy)
