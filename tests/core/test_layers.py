"""Imports point downward only, with no exemptions (docs/architecture.md):

    postroom (core) ← providers ← sync ← services ← web, cli

cli and web reach into sync/ only for the worker's entry points (starting a worker, a pass
over the accounts, the Celery tasks, the metrics); everything a user does goes through services.
The CLI alone may start the demo's mail server (standins.demo), the one stand-in the product runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PROJECT = {"postroom", "providers", "sync", "services", "web", "cli", "standins", "migrations", "tests", "bench"}
WORKER_ENTRY_POINTS = {"sync.worker", "sync.scheduler", "sync.tasks", "sync.metrics"}
DEMO_MAIL_SERVER = "standins.demo"  # `postroom serve` runs it while a demo exists (cli/demo.py, docs/demo.md)

# package -> the project packages (or modules) its modules may import
ALLOWED = {
    "postroom": {"postroom"},
    "providers": {"postroom", "providers"},
    "sync": {"postroom", "providers", "sync"},
    "services": {"postroom", "providers", "sync", "services"},
    "web": {"postroom", "services", "web", *WORKER_ENTRY_POINTS},
    "cli": {"postroom", "services", "web", "cli", *WORKER_ENTRY_POINTS, DEMO_MAIL_SERVER},
    "standins": {"standins", "providers.errors", "postroom.mime"},
}
# package -> third-party modules it must not use
FORBIDDEN = {
    "postroom": {"flask", "sqlalchemy.orm.session"},
    "providers": {"sqlalchemy", "flask", "postroom.models", "postroom.db"},
    "sync": {"flask"},
    "services": {"flask"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _within(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


MODULES = [p for pkg in ALLOWED for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    imports = _imports(path)
    upward = sorted(n for n in imports if n.split(".")[0] in PROJECT and not _within(n, ALLOWED[package]))
    banned = sorted(n for n in imports if _within(n, FORBIDDEN.get(package, set())))
    assert upward == [] and banned == [], f"{path.relative_to(ROOT)} imports {upward + banned}: not a lower layer"


def test_every_top_level_package_has_a_layer() -> None:
    """A new top-level package is placed in the layers before it can be used."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - set(ALLOWED) <= {"tests", "migrations", "bench"}
