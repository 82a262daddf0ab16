"""`postroom` run in-process, as the CLI tests drive it."""

from __future__ import annotations

import json
import os

import pytest

from cli.main import main
from tests.rig.fixtures import Mailbox


class Cli:
    """Runs `postroom` in-process (the real argument parsing, wiring and output)."""

    def __init__(self, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.env = env
        self.capsys = capsys
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    def __call__(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: --help and usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        if ok:
            assert code == 0, f"postroom {' '.join(args)} -> {code}\n{out}\n{err}"
        return code, out, err

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json")[1])

    def add_imap(self, box: Mailbox, *extra: str) -> int:
        os.environ["BOX_PASSWORD"] = box.password
        data = self.json(*box.add_imap_args("BOX_PASSWORD"), *extra)
        assert isinstance(data, dict)
        return int(data["id"])
