"""Imports point downward only: core ← providers ← sync ← web ← cli (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# package -> top-level modules it must never import
FORBIDDEN = {
    "postroom": {"providers", "sync", "web", "sqlalchemy.orm.session"},
    "providers": {"sync", "web", "postroom.models", "postroom.db", "sqlalchemy", "flask"},
    "sync": {"web", "postroom.cli", "flask"},
    "web": {"postroom.cli"},
    "standins": {"sync", "web", "postroom.models", "postroom.db", "postroom.cli"},
}
EXEMPT = {"postroom/cli.py"}  # the composition root wires every layer


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = [p for pkg in FORBIDDEN for p in sorted((ROOT / pkg).rglob("*.py")) if str(p.relative_to(ROOT)) not in EXEMPT]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    bad = sorted(
        name
        for name in _imports(path)
        for banned in FORBIDDEN[package]
        if name == banned or name.startswith(banned + ".")
    )
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad} from a higher layer"
