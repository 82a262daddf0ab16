"""Issue 9, item 5: the files that hold credentials and mail are created private (0600, in 0700
directories) whatever the umask, and files an older version left readable are tightened; a
directory that is not Postroom's own keeps its mode.

Every test runs under umask 022 (files 0644 unless Postroom says otherwise) and looks at the
files as `ls -l` would after the real `postroom` commands."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.harness import Cli
from tests.rig.fixtures import Mailbox, make_message

POSTROOM = [sys.executable, "-m", "cli"]


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(root: Path) -> dict[str, str]:
    """Mode of everything under ``root`` (itself included), as octal strings by relative path."""
    out = {".": oct(_mode(root))}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        out[
            "blobs/.../*.eml" if path.suffix == ".eml" else "blobs/<shard>" if rel.parent.name == "blobs" else str(rel)
        ] = oct(_mode(path))
    return out


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    """A home directory (0755, as most are) and no configuration: the embedded default."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    for name in (
        "POSTROOM_CONFIG",
        "POSTROOM_DATA_DIR",
        "POSTROOM_DATABASE_URL",
        "POSTROOM_SECRET_KEY",
        "XDG_DATA_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    yield home


def _cli(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str) -> Cli:
    return Cli({"HOME": str(home), "POSTROOM_LOG_LEVEL": "WARNING", **env}, monkeypatch, capsys)


def test_embedded_database_key_and_data_directory_are_private(
    home: Path, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = _cli(home, monkeypatch, capsys)
    cli("db", "upgrade")
    cli.add_imap(mailbox)
    mailbox.append(make_message(message_id="<private@x.test>", from_="Jane <jane@example.org>"))
    cli("applicants", "add", "--name", "Jane", "--email", "jane@example.org")
    cli("sync", "--once")  # her message's body is stored
    data = home / ".local" / "share" / "postroom"
    db = data / "postroom.db"
    # what a worker has open while it runs: SQLite gives -wal and -shm the database file's mode
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("UPDATE mail_accounts SET failure_count = failure_count")
        modes = _modes(data)
    assert modes == {
        ".": "0o700",
        "blobs": "0o700",
        "blobs/<shard>": "0o700",
        "blobs/.../*.eml": "0o600",
        "postroom.db": "0o600",
        "postroom.db-shm": "0o600",
        "postroom.db-wal": "0o600",
        "secret.key": "0o600",
    }
    assert _mode(home) == 0o755  # the home directory is not Postroom's to change


def test_what_an_older_version_left_readable_is_tightened(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = home / ".local" / "share" / "postroom"
    data.mkdir(parents=True, mode=0o755)
    key = data / "secret.key"
    key.write_text("a-key-from-an-older-install-0123\n")  # 0644, as restored from a backup
    conn = sqlite3.connect(data / "postroom.db")  # 0644, with -wal and -shm: a worker still has it open
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE scratch (x)")
    conn.commit()
    try:
        assert _modes(data)["postroom.db-wal"] == "0o644"
        _cli(home, monkeypatch, capsys)("status")
        assert _modes(data) == {
            ".": "0o700",
            "postroom.db": "0o600",
            "postroom.db-shm": "0o600",
            "postroom.db-wal": "0o600",
            "secret.key": "0o600",
        }
    finally:
        conn.close()


def test_a_configured_path_gets_a_private_file_but_its_directory_keeps_its_mode(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "srv"
    shared.mkdir(mode=0o755)  # made by someone else (an administrator, a package)
    cli = _cli(home, monkeypatch, capsys, POSTROOM_DATA_DIR=str(shared))
    cli("db", "upgrade")
    cli("keys", "rotate")  # the first command that needs the key generates it
    modes = _modes(shared)
    assert modes.pop(".") == "0o755"
    assert {"postroom.db", "secret.key"} <= set(modes) and set(modes.values()) == {"0o600"}, modes  # and -wal, -shm

    db = home / "postroom.db"  # straight into the home directory
    cli = _cli(home, monkeypatch, capsys, POSTROOM_DATA_DIR=str(shared), POSTROOM_DATABASE_URL=f"sqlite:///{db}")
    cli("db", "upgrade")
    assert (_mode(home), _mode(db)) == (0o755, 0o600)

    nested = tmp_path / "new" / "deeper" / "postroom.db"  # directories Postroom creates are its own
    cli = _cli(home, monkeypatch, capsys, POSTROOM_DATA_DIR=str(shared), POSTROOM_DATABASE_URL=f"sqlite:///{nested}")
    cli("db", "upgrade")
    assert (_mode(nested.parent), _mode(nested)) == (0o700, 0o600)


def test_celery_beat_schedule_is_private(pg_url: str | None, tmp_path: Path) -> None:
    if pg_url is None:
        pytest.skip("PostgreSQL not configured (POSTROOM_TEST_POSTGRES_URL is empty)")
    redis_url = os.environ.get("POSTROOM_TEST_REDIS_URL", "")
    if not redis_url:
        pytest.skip("Redis not configured (POSTROOM_TEST_REDIS_URL is empty)")
    import redis

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "celerybeat-schedule").write_bytes(b"")  # left group-readable by an older version
    queue = f"postroom-test-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "POSTROOM_DATA_DIR": str(data),
        "POSTROOM_DATABASE_URL": pg_url,
        "POSTROOM_SECRET_KEY": "test-secret-key-0123456789abcdef",
        "POSTROOM_BROKER_URL": redis_url,
    }
    env.pop("POSTROOM_CONFIG", None)
    log = tmp_path / "beat.log"
    with open(log, "wb") as fh:  # the child inherits umask 022
        proc = subprocess.Popen([*POSTROOM, "celery", "beat", "--queue", queue], env=env, stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 30
        while len(list(data.glob("celerybeat-schedule*"))) < 2 and "Writing entries" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        r = redis.Redis.from_url(redis_url)
        r.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    modes = _modes(data)
    assert modes.pop(".") == "0o755"  # POSTROOM_DATA_DIR was there before: not Postroom's to change
    assert modes and set(modes.values()) == {"0o600"}, modes
