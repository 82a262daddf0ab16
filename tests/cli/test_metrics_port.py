"""Issue 9, item 5: /metrics can be kept off the web app and served only on the workers' own port,
which `postroom serve` opens too, and which answers only scrapes that bring metrics.token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

POSTROOM = [sys.executable, "-m", "cli"]
TOKEN = "scrape-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """Status and body; status 0 while nothing listens yet."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""


@pytest.mark.parametrize("command", [["serve", "--no-worker"], ["serve"], ["worker"]])
def test_metrics_only_on_their_own_port_and_only_with_the_token(command: list[str], tmp_path: Path) -> None:
    config = tmp_path / "postroom.toml"
    config.write_text("[metrics]\nweb_endpoint = false\n[demo]\nenabled = false\n")  # an empty database stays empty
    metrics_port, web_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "POSTROOM_CONFIG": str(config),
        "POSTROOM_METRICS_PORT": str(metrics_port),
        "POSTROOM_METRICS_TOKEN": TOKEN,
    }
    for name in ("POSTROOM_DATA_DIR", "POSTROOM_DATABASE_URL", "POSTROOM_SECRET_KEY"):
        env.pop(name, None)
    args = [*command, "--port", str(web_port)] if command[0] == "serve" else command
    log = tmp_path / "postroom.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*POSTROOM, *args], env=env, stdout=fh, stderr=fh)
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while _get(metrics)[0] == 0:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        status, body = _get(metrics)
        assert status == 401 and b"postroom_accounts" not in body
        assert _get(metrics, "not-the-token-0123456789")[0] == 401
        status, body = _get(metrics, TOKEN)
        assert status == 200 and b'postroom_accounts{status="active"} 0.0' in body
        if command[0] == "serve":
            assert _get(f"http://127.0.0.1:{web_port}/healthz")[0] == 200
            assert _get(f"http://127.0.0.1:{web_port}/metrics", TOKEN)[0] == 404  # not on the public address
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in log.read_text()


def test_a_metrics_port_in_use_is_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "HOME": str(tmp_path), "POSTROOM_METRICS_PORT": str(port)}
        for name in ("POSTROOM_CONFIG", "POSTROOM_DATA_DIR", "POSTROOM_DATABASE_URL", "POSTROOM_SECRET_KEY"):
            env.pop(name, None)
        out = subprocess.run([*POSTROOM, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"postroom: error: Cannot serve metrics on 127.0.0.1:{port} (metrics.host, metrics.port): "
        "Address already in use."
    ]
