"""A lease means one worker: a worker whose lease ran out during one slow server call stops and
writes nothing more; lease times come from the database's clock; lease owners match exactly.
Real Dovecot behind a slow TCP proxy, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from postroom.config import Config
from postroom.models import Folder, MailAccount, MessageCopy
from sync.engine import AccountResult
from sync.scheduler import Scheduler
from tests.rig.chaos import ChaosProxy
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, copies


def _short_lease(config: Config, seconds: float) -> Config:
    return dataclasses.replace(config, sync=dataclasses.replace(config.sync, lease_seconds=seconds))


def _folders(sessions) -> list[tuple[str, str | None, str, datetime | None]]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return sorted(s.execute(select(Folder.name, Folder.cursor, Folder.state, Folder.last_synced_at)).tuples())


def test_a_worker_whose_lease_ran_out_during_a_slow_call_stops_and_writes_nothing(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    for i in range(3):
        mailbox.append(make_message(message_id=f"<m{i}@x.test>"))
    config = _short_lease(config, 2.0)
    with ChaosProxy(mailbox.rig.ports["imap"]) as proxy:
        account_id = connect(config, sessions, mailbox, imap_port=proxy.port)
        # Worker A's connection is slow where it hurts: the header fetch outlives its lease.
        proxy.delay(4.0, when=lambda data: b"BODY[HEADER" in data)
        slow = Scheduler(config, sessions, owner=f"{socket.gethostname()}:{os.getpid()}:worker-a")
        results: dict[str, AccountResult] = {}
        a = threading.Thread(target=lambda: results.setdefault("a", slow.sync(account_id)))
        a.start()
        deadline = time.monotonic() + 10
        with sessions() as s:  # wait until A holds the lease, then until it has run out
            while s.scalar(select(MailAccount.lease_owner).where(MailAccount.id == account_id)) != slow.owner:
                assert time.monotonic() < deadline
                time.sleep(0.02)
                s.expire_all()
        time.sleep(2.2)
        proxy.delay(0)  # worker B's connection is fast
        fast = Scheduler(config, sessions, owner=f"{socket.gethostname()}:{os.getpid()}:worker-b")
        results["b"] = fast.sync(account_id)
        after_b = _folders(sessions)
        a.join(timeout=30)
    assert results["b"].ok and not results["b"].skipped, results["b"].summary()
    assert results["a"].lease_lost and not results["a"].ok, results["a"].summary()
    assert "lease ran out" in results["a"].summary()
    assert _folders(sessions) == after_b  # A wrote no cursor and no state after B took over
    assert copies(sessions, account_id) == ["<m0@x.test>", "<m1@x.test>", "<m2@x.test>"]
    with sessions() as s:
        account = s.get(MailAccount, account_id)
        assert (account.status, account.lease_owner) == ("active", None)  # B's outcome stands


def test_a_removal_sweep_needs_the_lease(config: Config, sessions, mailbox: Mailbox) -> None:
    """A worker that lost its lease cannot delete copies another worker has just indexed."""
    uid = mailbox.append(make_message(message_id="<kept@x.test>"))
    account_id = connect(config, sessions, mailbox)
    first = Scheduler(config, sessions, owner="host-a:1:a")
    assert first.sync(account_id).ok
    mailbox.expunge(uid)
    # A claims, then loses the lease to B before its sweep runs.
    assert first.claim(account_id) is not None
    with sessions.begin() as s:
        s.execute(update(MailAccount).values(lease_owner="host-b:2:b"))
    from sync.engine import AccountSync
    from sync.scheduler import AccountLease

    result = AccountSync(config, sessions, account_id, lease=AccountLease(first, account_id)).run(record=False)
    assert result.lease_lost
    with sessions() as s:
        assert s.scalar(select(MessageCopy.remote_id)) == str(uid)  # not removed by the worker without a lease


def test_lease_owners_match_exactly(config: Config, sessions, mailbox: Mailbox, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reaper frees leases of dead workers on *this* host only: a hostname with an "_" is not
    a pattern that matches another machine's name."""
    account_id = connect(config, sessions, mailbox)
    other_machine = "ciXworker:999999:abc"  # a live worker elsewhere; its pid means nothing here
    with sessions.begin() as s:
        s.execute(
            update(MailAccount).values(
                lease_owner=other_machine, lease_expires_at=datetime.now(UTC) + timedelta(minutes=5), status="syncing"
            )
        )
    monkeypatch.setattr(socket, "gethostname", lambda: "ci_worker")
    assert Scheduler(config, sessions).reap_dead_local_leases() == 0
    with sessions() as s:
        assert s.scalar(select(MailAccount.lease_owner).where(MailAccount.id == account_id)) == other_machine
    # while a dead worker of this host is freed
    with sessions.begin() as s:
        s.execute(update(MailAccount).values(lease_owner="ci_worker:999999:abc"))
    assert Scheduler(config, sessions).reap_dead_local_leases() == 1


FAKETIME = shutil.which("faketime")


@pytest.mark.skipif(
    FAKETIME is None and os.environ.get("POSTROOM_TEST_REQUIRE_SERVICES") != "1", reason="needs faketime"
)
def test_a_worker_with_a_fast_clock_does_not_take_a_held_lease(
    config: Config, sessions, mailbox: Mailbox, env: dict[str, str], database_url: str
) -> None:
    """Lease times come from the database: a worker on a machine whose clock runs 20 minutes
    ahead does not think a fresh 10-minute lease has run out."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's clock is the worker's own clock: one machine, nothing to disagree on")
    assert FAKETIME is not None, "faketime is missing: .ci/install-mail-servers installs it"
    account_id = connect(config, sessions, mailbox)
    holder = Scheduler(config, sessions, owner="elsewhere:1:holder")
    assert holder.claim(account_id) is not None
    out = subprocess.run(
        [FAKETIME, "-f", "+20m", sys.executable, "-m", "cli", "sync", "--once", "--json"],
        env={**os.environ, **env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["skipped"] is True, result
    with sessions() as s:
        assert s.scalar(select(MailAccount.lease_owner).where(MailAccount.id == account_id)) == "elsewhere:1:holder"
