"""`postroom serve`: the web app and the worker in one process, as `make run` starts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.rig.fixtures import Mailbox, make_message

POSTROOM = [sys.executable, "-m", "cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    """Status and body; status 0 while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def test_serve_answers_the_web_and_syncs_until_sigterm(env: dict[str, str], mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.append(make_message(message_id="<served@x.test>", subject="Served"))
    full = {**os.environ, **env, "BOX_PASSWORD": mailbox.password, "POSTROOM_LOG_LEVEL": "INFO"}
    subprocess.run([*POSTROOM, *mailbox.add_imap_args("BOX_PASSWORD")], env=full, check=True, capture_output=True)
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*POSTROOM, "serve", "--port", str(port)], env=full, stdout=fh, stderr=fh)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(base + "/healthz")[0] == 200 if proc.poll() is None else True, 20, "web app up")
        assert proc.poll() is None, log.read_text()
        assert json.loads(_get(base + "/healthz")[1]) == {"database": "ok", "status": "ok"}

        def synced() -> bool:
            out = subprocess.run([*POSTROOM, "threads", "--account", "1", "--json"], env=full, capture_output=True)
            return out.returncode == 0 and b"<served@x.test>" in out.stdout

        _wait(synced, 30, "the in-process worker's first pass")
        status, body = _get(base + "/connect/google")  # the pages need a signed-in user: the sign-in page
        assert status == 200 and b"Sign in to Postroom" in body and b"Traceback" not in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text
    assert "web app stopped" in text and "worker stopped" in text


def test_serve_on_a_port_in_use_says_so_in_one_sentence(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [*POSTROOM, "serve", "--port", str(port)], env={**os.environ, **env}, capture_output=True, text=True
        )
    assert out.returncode == 1
    assert out.stderr.strip().startswith(f"postroom: error: Cannot listen on 127.0.0.1:{port}")
    assert len(out.stderr.strip().splitlines()) == 1
