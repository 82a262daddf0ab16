"""The embedded scheduler: leases, persisted due times with jitter, bounded concurrency, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from postroom.config import Config
from postroom.models import Folder, MailAccount, MessageCopy
from sync.scheduler import Scheduler
from sync.worker import Worker
from tests.rig.fixtures import make_message
from tests.sync.helpers import connect, run_until_idle

POSTROOM = [sys.executable, "-m", "cli"]


def _fast(config: Config, **sync: object) -> Config:
    return replace(config, sync=replace(config.sync, **sync))  # type: ignore[arg-type]


def test_lease_lets_only_one_worker_hold_an_account(config: Config, sessions, mailbox) -> None:  # type: ignore[no-untyped-def]
    account_id = connect(config, sessions, mailbox)
    a, b = Scheduler(config, sessions, owner="worker-a"), Scheduler(config, sessions, owner="worker-b")
    assert a.claim(account_id) and not b.claim(account_id)
    assert b.sync(account_id).skipped  # B leaves it alone while A holds it
    assert a.due(datetime.now(UTC), 10) == []  # held accounts are not due for anyone

    # A dies: once its lease has expired, B takes over; A's late release must not clobber B's lease.
    with sessions.begin() as s:
        s.execute(update(MailAccount).values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert b.claim(account_id)
    with sessions() as s:
        assert s.get(MailAccount, account_id).lease_owner == "worker-b"


def test_due_times_are_persisted_and_spread_so_a_restart_does_not_resync_everything(
    config: Config, sessions, new_mailbox
) -> None:  # type: ignore[no-untyped-def]
    config = _fast(config, interval=600, jitter=0.2)
    ids = [connect(config, sessions, new_mailbox()) for _ in range(6)]
    first = run_until_idle(Worker(config, sessions))
    assert sorted(r.account_id for r in first) == ids and all(r.ok for r in first)

    with sessions() as s:
        due = [d for d in s.scalars(select(MailAccount.next_sync_at))]
    now = datetime.now(UTC)
    assert all(timedelta(seconds=480 - 5) <= d - now <= timedelta(seconds=720) for d in due)  # 600 s ± 20 %
    assert len({round((d - now).total_seconds()) for d in due}) > 1  # spread, not in lockstep

    restarted = Worker(config, sessions)  # a new process: nothing is due yet
    assert run_until_idle(restarted) == []


def test_concurrency_is_bounded_and_every_account_synced_once_per_round(config: Config, sessions, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    config = _fast(config, concurrency=2, interval=600)
    boxes = [new_mailbox() for _ in range(6)]
    for box in boxes:
        for i in range(30):
            box.append(make_message(message_id=f"<{box.address}.{i}@x.test>"))
    ids = [connect(config, sessions, box) for box in boxes]
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with sessions() as s:
                peak[0] = max(peak[0], s.scalar(select(func.count()).where(MailAccount.status == "syncing")) or 0)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = run_until_idle(Worker(config, sessions))
    finally:
        stop.set()
        watcher.join()
    assert sorted(r.account_id for r in results) == ids
    assert 1 <= peak[0] <= 2
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(MessageCopy)) == 6 * 30


def test_sigterm_finishes_the_account_in_hand(env: dict[str, str], mailbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mailbox.seed_corpus(800, seed=5)
    cfg = tmp_path / "slow.toml"
    cfg.write_text("[sync]\nbatch_size = 20\n")
    full = {
        **os.environ,
        **env,
        "BOX_PASSWORD": mailbox.password,
        "POSTROOM_CONFIG": str(cfg),
        "POSTROOM_LOG_LEVEL": "INFO",
    }
    subprocess.run([*POSTROOM, *mailbox.add_imap_args("BOX_PASSWORD")], env=full, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*POSTROOM, "worker"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    from postroom import db
    from postroom.config import load_config

    engine = db.make_engine(load_config(env=full).database)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(select(func.count()).select_from(MessageCopy)).scalar_one() > 0:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # mid initial sync
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()  # type: ignore[union-attr]
        assert "finishing 1 account(s) in hand" in err and "Traceback" not in err
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(MessageCopy)).scalar_one() == 800
            states = set(conn.execute(select(Folder.state)).scalars())
            assert states == {"incremental"}  # every folder finished and its cursor committed
            owner = conn.execute(select(MailAccount.lease_owner)).scalar_one()
            assert owner is None  # the lease was given back
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()


def test_reconnect_needed_accounts_are_not_retried_by_the_worker(config: Config, sessions, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    config = _fast(config, interval=1, jitter=0)
    good, bad = new_mailbox(), new_mailbox()
    good_id = connect(config, sessions, good)
    bad.password = "wrong"
    bad_id = connect(config, sessions, bad)
    worker = Worker(config, sessions)
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(3.5)
    worker.stop()
    thread.join(timeout=30)
    attempts = [r.account_id for r in worker.completed]
    assert attempts.count(bad_id) == 1  # refused once, then left for the user to reconnect
    assert attempts.count(good_id) >= 2  # the others keep their schedule
    with sessions() as s:
        assert s.get(MailAccount, bad_id).status == "reconnect-needed"


def test_leases_of_dead_local_workers_are_freed_but_not_live_or_remote_ones(
    config: Config, sessions, new_mailbox
) -> None:  # type: ignore[no-untyped-def]
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    host = socket.gethostname()
    owners = [f"{host}:{dead.pid}:killed", f"{host}:{os.getpid()}:alive", f"elsewhere:{dead.pid}:remote"]
    ids = []
    for owner in owners:
        account_id = connect(config, sessions, new_mailbox())
        assert Scheduler(config, sessions, owner=owner).claim(account_id)
        ids.append(account_id)
    me = Scheduler(config, sessions, owner="me")
    assert me.reap_dead_local_leases() == 1
    assert me.claim(ids[0]) and not me.claim(ids[1]) and not me.claim(ids[2])
