"""The ``cli`` fixture: `postroom` run in-process against this test's database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.cli.harness import Cli


@pytest.fixture
def cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(env, monkeypatch, capsys)
