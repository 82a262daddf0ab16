"""Faults provoked for real, against the real Dovecot and database, never by mocking Postroom.

Network faults go through :class:`tests.rig.chaos.ChaosProxy`; expunges and revoked
tokens go through the rig; crashes are ``kill -9`` of real worker processes. Each
test asserts what a user would notice: every message present exactly once, the
account's health state, other accounts unaffected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.utils import parseaddr
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom.config import Config, load_config
from postroom.crypto import SecretBox
from postroom.models import Email, Folder, MailAccount, MessageCopy
from providers.base import RemoteFolder, RemoteMessage
from providers.imap import ImapProvider
from sync.engine import AccountSync
from sync.scheduler import Scheduler
from sync.worker import Worker
from tests.rig.chaos import ChaosProxy
from tests.rig.corpus import generate
from tests.rig.fixtures import Mailbox, make_message
from tests.sync import test_crash_resume as crash
from tests.sync.helpers import connect, copies, database_snapshot

POSTROOM = [sys.executable, "-m", "cli"]


def _tuned(config: Config, **sync: Any) -> Config:
    return replace(config, sync=replace(config.sync, **sync))


def _account(sessions: sessionmaker[Session], account_id: int) -> MailAccount:
    with sessions() as s:
        return s.get_one(MailAccount, account_id)


def _exactly_once(sessions: sessionmaker[Session], account_id: int, box: Mailbox) -> list[str]:
    """The account's Inbox index holds each server message once, by UID and by Message-ID."""
    with sessions() as s:
        rows = s.execute(
            select(MessageCopy.remote_id, Email.message_id)
            .join(Email, Email.id == MessageCopy.email_id)
            .join(Folder, Folder.id == MessageCopy.folder_id)
            .where(MessageCopy.account_id == account_id, Folder.role == "inbox")
        ).all()
    uids = sorted(int(uid) for uid, _ in rows)
    assert uids == box.uids("INBOX"), "copies do not match the server's UIDs one to one"
    mids = [mid for _, mid in rows]
    assert len(mids) == len(set(mids)), "a Message-ID is indexed twice"
    return sorted(mids)


def _through(config: Config, sessions: sessionmaker[Session], box: Mailbox, proxy: ChaosProxy) -> int:
    return connect(config, sessions, box, imap_port=proxy.port)


@pytest.fixture
def imap_proxy(mail_rig) -> Iterator[ChaosProxy]:  # type: ignore[no-untyped-def]
    with ChaosProxy(mail_rig.ports["imap"]) as proxy:
        yield proxy


# --------------------------------------------------------------------------- network faults


def test_connection_cut_mid_fetch_backs_off_then_the_next_pass_completes_without_duplicates(
    config: Config, sessions, new_mailbox, imap_proxy: ChaosProxy
) -> None:  # type: ignore[no-untyped-def]
    config = _tuned(config, batch_size=100, backoff_base=30, jitter=0)
    other, box = new_mailbox(), new_mailbox()
    other.seed_corpus(500, seed=3)
    box.seed_corpus(500, seed=4)
    other_id = _through(config, sessions, other, imap_proxy)
    box_id = _through(config, sessions, box, imap_proxy)
    scheduler = Scheduler(config, sessions)

    # A complete pass over a mailbox like it tells how many bytes a pass takes ...
    assert scheduler.sync(other_id).ok
    full_pass = imap_proxy.server_bytes
    # ... so cutting at half of it lands in the middle of the header batches.
    imap_proxy.cut_after(full_pass // 2)
    started = datetime.now(UTC)
    result = scheduler.sync(box_id)
    assert imap_proxy.cuts == 1
    assert not result.ok and result.error_class == "TransientError"
    assert "connection lost during UID" in (result.error or "")  # the header FETCH, not login or listing
    acct = _account(sessions, box_id)
    assert (acct.status, acct.failure_count) == ("backing-off", 1)
    assert acct.next_sync_at is not None and acct.next_sync_at >= started + timedelta(seconds=29)
    partial = copies(sessions, box_id)
    assert 0 < len(partial) < 500  # the batches before the cut were kept

    imap_proxy.pass_through()
    assert scheduler.sync(box_id).ok
    assert len(_exactly_once(sessions, box_id, box)) == 500
    acct = _account(sessions, box_id)
    assert (acct.status, acct.failure_count, acct.last_error) == ("active", 0, None)
    assert len(_exactly_once(sessions, other_id, other)) == 500  # the other account is untouched
    assert _account(sessions, other_id).status == "active"


def test_server_unavailable_backs_off_exponentially_up_to_the_cap_then_recovers(
    config: Config, sessions, new_mailbox, imap_proxy: ChaosProxy
) -> None:  # type: ignore[no-untyped-def]
    config = _tuned(config, backoff_base=10, backoff_max=50, jitter=0)
    box, bystander = new_mailbox(), new_mailbox()
    for i in range(5):
        box.append(make_message(message_id=f"<down-{i}@x.test>"))
        bystander.append(make_message(message_id=f"<by-{i}@x.test>"))
    box_id = _through(config, sessions, box, imap_proxy)
    bystander_id = connect(config, sessions, bystander)  # direct: not behind the failing proxy
    scheduler = Scheduler(config, sessions)
    assert scheduler.sync(box_id).ok

    imap_proxy.refuse()
    delays = []
    for _ in range(5):
        before = datetime.now(UTC)
        result = scheduler.sync(box_id)
        after = datetime.now(UTC)
        assert not result.ok and result.error_class == "TransientError"
        acct = _account(sessions, box_id)
        assert acct.status == "backing-off" and acct.next_sync_at is not None
        assert before + timedelta(seconds=9) < acct.next_sync_at  # never retried at once
        delays.append(round((acct.next_sync_at - after).total_seconds()))
        assert scheduler.sync(bystander_id).ok  # the outage is one server's, the others go on
    assert imap_proxy.refused == 5
    assert delays == [10, 20, 40, 50, 50]  # base · 2^(n-1), capped at backoff_max
    assert _account(sessions, box_id).failure_count == 5

    imap_proxy.pass_through()  # the server is back
    box.append(make_message(message_id="<while-down@x.test>"))
    assert scheduler.sync(box_id).ok
    assert "<while-down@x.test>" in _exactly_once(sessions, box_id, box)
    acct = _account(sessions, box_id)
    assert (acct.status, acct.failure_count) == ("active", 0)
    assert acct.next_sync_at is not None and acct.next_sync_at > datetime.now(UTC)


# --------------------------------------------------------------------------- mailbox changes mid-pass


class ExpungeAfterHeaders(ImapProvider):
    """The real IMAP backend; once the engine has the headers, another client expunges one message."""

    def __init__(self, box: Mailbox, victim: int) -> None:
        super().__init__(box.settings())
        self.box, self.victim, self.fired = box, victim, False

    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        yield from super().fetch_headers(folder, remote_ids)
        if folder.name == "INBOX" and not self.fired:
            self.fired = True
            self.box.expunge(self.victim)  # a separate, real IMAP connection


def test_message_expunged_between_header_and_body_fetch_does_not_block_the_others(
    config: Config, sessions, mailbox: Mailbox
) -> None:  # type: ignore[no-untyped-def]
    config = _tuned(config, body_policy="all")
    uids = [mailbox.append(make_message(message_id=f"<race-{i}@x.test>", body=f"body {i}")) for i in range(12)]
    victim = uids[5]
    account_id = connect(config, sessions, mailbox)

    provider = ExpungeAfterHeaders(mailbox, victim)
    with provider:
        result = AccountSync(config, sessions, account_id, provider=provider).run()
    assert provider.fired
    assert result.ok, result.error
    assert not [f for f in result.folders if f.error]
    inbox = next(f for f in result.folders if f.name == "INBOX")
    assert (inbox.new, inbox.bodies) == (12, 11)  # indexed before the expunge; its body could not be had
    with sessions() as s:
        bodies = dict(s.execute(select(Email.message_id, Email.body_id)).tuples().all())
    assert bodies.pop("<race-5@x.test>") is None
    assert all(b is not None for b in bodies.values()) and len(bodies) == 11

    with ImapProvider(mailbox.settings()) as plain:  # the next ordinary pass
        again = AccountSync(config, sessions, account_id, provider=plain).run()
    assert again.ok and sum(f.removed for f in again.folders) == 1
    mids = _exactly_once(sessions, account_id, mailbox)
    assert len(mids) == 11 and "<race-5@x.test>" not in mids


# --------------------------------------------------------------------------- credentials


def _oauth_lookups(box: Mailbox) -> int:
    path = Path(box.rig.p("etc", "tokens.json.log"))
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if json.loads(line).get("token") == box.token)


def test_revoked_token_needs_reconnect_at_once_and_is_not_retried_while_others_sync(
    config: Config, sessions, new_mailbox
) -> None:  # type: ignore[no-untyped-def]
    config = _tuned(config, interval=1, jitter=0, backoff_base=1)
    oauth, good = new_mailbox(), new_mailbox()
    oauth.append(make_message(message_id="<before-revoke@x.test>"))
    oauth_id, good_id = connect(config, sessions, oauth), connect(config, sessions, good)
    with sessions.begin() as s:  # the account holds an access token, not a password
        s.get_one(MailAccount, oauth_id).secret = SecretBox(config.security.secret_key).seal(
            {"username": oauth.address, "access_token": oauth.token, "oauth_mechanism": "XOAUTH2"}
        )
    assert Scheduler(config, sessions).sync(oauth_id).ok  # the token works ...
    assert _oauth_lookups(oauth) >= 1

    oauth.rig.revoke_token(oauth.token)  # ... until the user revokes the grant
    lookups_before = _oauth_lookups(oauth)
    worker = Worker(config, sessions)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while _account(sessions, oauth_id).status != "reconnect-needed" and time.monotonic() < deadline:
            time.sleep(0.05)
        good.append(make_message(message_id="<after-revoke@x.test>"))
        time.sleep(3.5)  # several intervals
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    attempts = [r.account_id for r in worker.completed]
    assert attempts.count(oauth_id) == 1  # refused once, then left alone: no retry storm
    assert attempts.count(good_id) >= 3  # the other account kept its schedule
    logins = _oauth_lookups(oauth) - lookups_before
    assert 1 <= logins <= 2, f"{logins} token lookups after the revocation"
    acct = _account(sessions, oauth_id)
    assert (acct.status, acct.next_sync_at, acct.lease_owner) == ("reconnect-needed", None, None)
    assert "refused the credentials" in (acct.last_error or "")
    assert copies(sessions, oauth_id) == ["<before-revoke@x.test>"]  # what was synced stays
    assert "<after-revoke@x.test>" in _exactly_once(sessions, good_id, good)


# --------------------------------------------------------------------------- the database goes away


def test_worker_survives_the_database_going_away_and_indexes_what_arrived_meanwhile(
    config: Config, sessions, mailbox: Mailbox
) -> None:  # type: ignore[no-untyped-def]
    if config.database.url.startswith("sqlite"):
        pytest.skip("a SQLite file cannot become unreachable over the network")
    url = make_url(config.database.url)
    with ChaosProxy(url.port or 5432, url.host or "127.0.0.1") as pg:
        proxied = url.set(host="127.0.0.1", port=pg.port).render_as_string(hide_password=False)
        wcfg = _tuned(
            replace(config, database=replace(config.database, url=proxied)), interval=0.5, jitter=0, backoff_base=1
        )
        engine = db.make_engine(wcfg.database)
        for i in range(10):
            mailbox.append(make_message(message_id=f"<pre-{i}@x.test>"))
        account_id = connect(config, sessions, mailbox)
        worker = Worker(wcfg, db.make_sessionmaker(engine))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            _wait(lambda: len(copies(sessions, account_id)) == 10, 15, "first sync")
            pg.refuse()
            pg.drop_all()  # every pooled connection dies; new ones are reset
            outage_end = time.monotonic() + 3
            for i in range(10):
                mailbox.append(make_message(message_id=f"<during-{i}@x.test>"))
            time.sleep(max(0.0, outage_end - time.monotonic()))
            assert thread.is_alive(), "the worker died with the database"
            assert pg.refused > 0  # it did try to reach the database meanwhile
            pg.pass_through()
            _wait(lambda: len(copies(sessions, account_id)) == 20, 30, "recovery")
            time.sleep(1.5)  # a few more passes: nothing gets doubled
            assert thread.is_alive()
        finally:
            worker.stop()
            thread.join(timeout=30)
            engine.dispose()
    mids = _exactly_once(sessions, account_id, mailbox)
    assert len(mids) == 20 and "<during-9@x.test>" in mids
    acct = _account(sessions, account_id)
    assert acct.status == "active" and acct.lease_owner is None
    assert worker.completed and worker.completed[-1].ok


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- worker processes


def _worker_env(env: dict[str, str], tmp_path: Path, name: str, toml: str, **extra: str) -> dict[str, str]:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(toml)
    return {**os.environ, **env, "POSTROOM_CONFIG": str(cfg), **extra}


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen([*POSTROOM, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=fh)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _passes(log: Path) -> int:
    """How many account syncs a running worker has started so far (its log is being written)."""
    return log.read_text().count('"sync started"') if log.exists() else 0


def _holds(log: Path) -> dict[int, list[tuple[datetime, datetime]]]:
    """Per account, the (start, end) of every sync in one worker's JSON log.

    "sync started" is logged after the lease is taken and the engine's summary
    before it is given back, so the intervals lie inside the real holds."""
    started: dict[int, datetime] = {}
    holds: dict[int, list[tuple[datetime, datetime]]] = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        acct = rec.get("account_id")
        if acct is None:
            continue
        ts = datetime.fromisoformat(rec["ts"])
        if rec["logger"] == "postroom.scheduler" and rec["msg"] == "sync started":
            assert acct not in started, f"account {acct} started twice by one worker"
            started[acct] = ts
        elif rec["logger"] == "postroom.sync" and rec["msg"].startswith(f"account {acct} "):
            holds.setdefault(acct, []).append((started.pop(acct), ts))
    return holds


def test_two_worker_processes_never_sync_one_account_at_the_same_time(
    env: dict[str, str], config: Config, sessions, new_mailbox, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    boxes = [new_mailbox() for _ in range(6)]
    for n, box in enumerate(boxes):
        box.seed_corpus(60, seed=20 + n)
    ids = [connect(config, sessions, box) for box in boxes]
    wenv = _worker_env(
        env,
        tmp_path,
        "race",
        "[sync]\ninterval = 1\njitter = 0.1\nbatch_size = 20\n",
        POSTROOM_LOG_FORMAT="json",
        POSTROOM_LOG_LEVEL="DEBUG",
    )
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    procs = [_start_worker(wenv, log) for log in logs]
    try:
        # new mail keeps arriving, so passes overlap with real work; at least 6 rounds, and more
        # on a busy machine until both workers have synced a few times (the race needs them)
        rounds = 0
        while rounds < 6 or (rounds < 30 and not all(_passes(log) >= 4 for log in logs)):
            time.sleep(1.0)
            for n, box in enumerate(boxes):
                box.append(make_message(message_id=f"<race-{n}-{rounds}@x.test>"))
            rounds += 1
        time.sleep(2.0)
    finally:
        codes = [_stop(p) for p in procs]
    assert codes == [0, 0]
    holds = [_holds(log) for log in logs]
    assert all(sum(len(v) for v in h.values()) >= 3 for h in holds), "a worker hardly synced: no race tested"
    both = [a for a in ids if a in holds[0] and a in holds[1]]
    assert len(both) >= 2, "the workers never shared an account"
    for account_id in both:
        for s1, e1 in holds[0][account_id]:
            for s2, e2 in holds[1][account_id]:
                assert e1 <= s2 or e2 <= s1, f"account {account_id} synced by both workers at once"
    for box, account_id in zip(boxes, ids, strict=True):
        mids = _exactly_once(sessions, account_id, box)
        assert len(mids) == 60 + rounds
    with sessions() as s:
        assert s.scalar(select(func.count()).where(MailAccount.lease_owner.is_not(None))) == 0


def _index_size(cfg: Config) -> int:
    engine = db.make_engine(cfg.database)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(MessageCopy)).scalar_one())
    finally:
        engine.dispose()


def _settled(cfg: Config, expected: int) -> bool:
    """Every message indexed, every folder's cursor committed, no lease held."""
    engine = db.make_engine(cfg.database)
    try:
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(MessageCopy)).scalar_one()
            states = set(conn.execute(select(Folder.state)).scalars())
            holders = conn.execute(select(func.count()).where(MailAccount.lease_owner.is_not(None))).scalar_one()
            return bool(n == expected and states == {"incremental"} and holders == 0)
    finally:
        engine.dispose()


def _leases_held(cfg: Config) -> int:
    engine = db.make_engine(cfg.database)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(MailAccount.lease_owner.is_not(None))).scalar_one())
    finally:
        engine.dispose()


def _kill_mid_sync(wenv: dict[str, str], cfg: Config, log: Path) -> bool:
    """Start a worker and kill -9 it right after it has committed some progress.

    True if it died holding the lease, i.e. in the middle of a sync."""
    before = _index_size(cfg)
    proc = _start_worker(wenv, log)
    try:
        _wait(lambda: _index_size(cfg) > before or proc.poll() is not None, 30, "worker progress")
        time.sleep(0.05)  # a few batches further
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return _leases_held(cfg) == 1


def test_kill_minus_nine_of_a_worker_mid_initial_and_incremental_sync_then_restart(
    env: dict[str, str], new_mailbox, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    box: Mailbox = new_mailbox()
    items = list(generate(1500, seed=17))
    box.seed(items[:1000])
    senders = Counter(parseaddr(message_from_bytes(i.raw)["From"])[1] for i in items)
    applicant = senders.most_common(1)[0][0]  # so bodies and history are compared too
    toml = "[sync]\nbatch_size = 20\ninterval = 1\nlease_seconds = 10\n"
    wenv = _worker_env(env, tmp_path, "killed", toml, BOX_PW=box.password)
    cfg = load_config(env=wenv)
    crash._setup(wenv, box, applicant)
    log = tmp_path / "worker.log"

    # kill -9 during the initial sync: the lease stays behind, held by a dead worker
    assert _kill_mid_sync(wenv, cfg, log), "the kill did not land during the initial sync"
    assert 0 < _index_size(cfg) < 1000
    restarted = _start_worker(wenv, log)
    try:  # the dead worker's lease expires (10 s) and the new one resumes
        _wait(lambda: _settled(cfg, 1000), 40, "resume of the initial sync")
    finally:
        assert _stop(restarted) == 0

    box.seed(items[1000:])  # new mail: the next pass is incremental
    assert _kill_mid_sync(wenv, cfg, log), "the kill did not land during the incremental sync"
    assert 1000 <= _index_size(cfg) < 1500
    restarted = _start_worker(wenv, log)
    try:
        _wait(lambda: _settled(cfg, 1500), 40, "resume of the incremental sync")
    finally:
        assert _stop(restarted) == 0
    assert "Traceback" not in log.read_text()

    ref_env = {
        **wenv,
        "POSTROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'reference.db'}",
        "POSTROOM_DATA_DIR": str(tmp_path / "ref-data"),
    }
    crash._setup(ref_env, box, applicant)
    assert subprocess.run([*POSTROOM, "sync", "--once"], env=ref_env, capture_output=True).returncode == 0
    killed, reference = database_snapshot(cfg), database_snapshot(load_config(env=ref_env))
    killed_copies = cast(list[tuple[str, str, str]], killed["copies"])
    killed_emails = cast(list[str], killed["emails"])
    assert sorted(int(uid) for _, uid, _ in killed_copies) == box.uids("INBOX")
    assert len(killed_emails) == len(set(killed_emails)) == 1500
    assert killed == reference
