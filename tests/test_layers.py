"""Imports flow one way: no module imports one of a higher layer (TYPE_CHECKING-only imports,
which never run, excepted). A new module must be given a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS: dict[str, tuple[str, ...]] = {
    "ground": ("model", "clock", "errors", "display", "fileio", "logsetup", "environment", "fanout",
               "__init__", "__version__", "dns"),
    "dane": ("dane",),
    "core": ("core",),
    "config": ("config",),
    "edges": ("state", "edges", "sources", "providers", "hooks"),
    "monitor": ("monitor",),
    "engine": ("engine",),
    "face": ("cli", "__main__"),
}
ORDER = list(LAYERS)


def layer_of(module: str) -> str:
    """'rollover.core.schemes.base' -> 'core'."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for layer, names in LAYERS.items():
        for name in names:
            if head == name or (name.endswith("*") and head.startswith(name[:-1])):
                return layer
    raise AssertionError(f"{module} has no layer in tests/test_layers.py")


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in (("rollover", "rollover"), ("providers", "rollover.providers"),
                            ("hooks", "rollover.hooks")):
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = [p for p in f.relative_to(REPO / folder).with_suffix("").parts
                     if p != "__init__"]
            out[".".join([package, *parts])] = f
    return out


def _imports(tree: ast.AST) -> set[str]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rollover"):
            found.add(node.module)
            if node.module == "rollover":
                found |= {f"rollover.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rollover")}
    return found


def test_no_lower_layer_imports_a_higher_one() -> None:
    wrong = []
    for module, path in modules().items():
        mine = ORDER.index(layer_of(module))
        for imported in _imports(ast.parse(path.read_text())):
            theirs = ORDER.index(layer_of(imported))
            if theirs > mine:
                wrong.append(f"{module} ({ORDER[mine]}) imports {imported} ({ORDER[theirs]})")
    assert wrong == []


def test_the_rule_would_catch_an_upward_import() -> None:
    tree = ast.parse("from rollover.engine.loop import Engine\n")
    assert ORDER.index(layer_of(next(iter(_imports(tree))))) > ORDER.index(layer_of(
        "rollover.core.machine"))
