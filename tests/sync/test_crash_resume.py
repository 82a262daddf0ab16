"""kill -9 at random moments of an initial and an incremental sync: nothing lost, nothing doubled.

The reference is the same mailbox synced once, uninterrupted, into a second
database: after the crashes and a final clean run, both databases must hold the
same copies, the same emails, the same threads and the same applicant history.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from email import message_from_bytes
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy import func, select

from postroom import db
from postroom.config import load_config
from postroom.models import MessageCopy
from tests.rig.corpus import generate
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import database_snapshot

POSTROOM = [sys.executable, "-m", "cli"]


def _run(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*POSTROOM, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _setup(env: dict[str, str], box: Mailbox, applicant: str) -> None:
    for args in (
        box.add_imap_args("BOX_PW"),
        ["applicants", "add", "--name", "A", "--email", applicant],
    ):
        subprocess.run([*POSTROOM, *args], env=env, check=True, capture_output=True)


def _indexed(env: dict[str, str]) -> int:
    engine = db.make_engine(load_config(env=env).database)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(MessageCopy)).scalar_one())
    finally:
        engine.dispose()


def _crash_repeatedly(env: dict[str, str], rng: random.Random, kills: int) -> int:
    """Start `postroom sync --once` and kill -9 it soon after it has committed some progress."""
    interrupted = 0
    for _ in range(kills):
        before = _indexed(env)
        proc = _run(env, "sync", "--once")
        deadline = time.monotonic() + 30
        while proc.poll() is None and _indexed(env) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere in the following batches, bodies or cursor commits
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            interrupted += 1
        proc.wait()
    return interrupted


def test_kill_minus_nine_during_initial_and_incremental_sync_loses_and_doubles_nothing(
    env: dict[str, str], new_mailbox, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    box: Mailbox = new_mailbox()
    items = list(generate(2000, seed=11))
    box.seed(items[:1600])
    # The corpus's most frequent sender becomes an applicant, so bodies are fetched too.
    senders = Counter(parseaddr(message_from_bytes(i.raw)["From"])[1] for i in items)
    applicant = senders.most_common(1)[0][0]
    cfg_file = tmp_path / "small-batches.toml"
    cfg_file.write_text("[sync]\nbatch_size = 25\n")
    crash_env = {**os.environ, **env, "BOX_PW": box.password, "POSTROOM_CONFIG": str(cfg_file)}
    _setup(crash_env, box, applicant)
    rng = random.Random(20261122)

    interrupted = _crash_repeatedly(crash_env, rng, 5)
    assert subprocess.run([*POSTROOM, "sync", "--once"], env=crash_env, capture_output=True).returncode == 0

    box.seed(items[1600:])  # new mail: the next passes are incremental
    interrupted += _crash_repeatedly(crash_env, rng, 3)
    final = subprocess.run([*POSTROOM, "sync", "--once"], env=crash_env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert interrupted >= 4, "too few kills landed while a sync was running to prove anything"

    # Reference: the same mailbox synced once, without interruption, into a fresh SQLite database.
    ref_env = {
        **crash_env,
        "POSTROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'reference.db'}",
        "POSTROOM_DATA_DIR": str(tmp_path / "ref-data"),
    }
    _setup(ref_env, box, applicant)
    assert subprocess.run([*POSTROOM, "sync", "--once"], env=ref_env, capture_output=True).returncode == 0

    crashed = database_snapshot(load_config(env=crash_env))
    reference = database_snapshot(load_config(env=ref_env))
    server_uids = sorted(str(u) for u in box.uids("INBOX"))
    assert sorted(uid for _, uid, _ in crashed["copies"]) == server_uids  # type: ignore[union-attr]
    assert len(crashed["emails"]) == len(set(crashed["emails"])) == 2000  # type: ignore[arg-type]
    assert crashed == reference
    assert len(crashed["history"]) > 0 and crashed["bodies"] == crashed["history"]  # type: ignore[arg-type]
