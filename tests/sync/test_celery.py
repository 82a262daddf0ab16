"""Scale-out mode: two `postroom celery worker` processes and one `postroom celery beat`, real Redis + PostgreSQL.

Who held which account when is recorded by the database itself: a trigger on
``mail_accounts`` (test scaffolding, installed in this test's scratch database)
logs every change of ``lease_owner`` with ``clock_timestamp()``. From it the
tests check that every claim took a free or expired lease, and that every sync
a worker reports was done under a lease that worker held. The workers' JSON
logs say which syncs happened and which were skipped because the lease was taken.

Webhook deliveries are sent by the ``postroom.deliver_webhooks`` tick beat schedules, on
whichever worker takes it, each delivery claimed in the database first.

Redis is found through ``POSTROOM_TEST_REDIS_URL`` (the Makefile sets
redis://127.0.0.1:6379/15); each test uses a queue of its own, so parallel runs
share the database number without seeing each other's tasks. Like PostgreSQL,
an empty variable skips these tests unless ``POSTROOM_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom.config import Config, load_config
from postroom.models import Base, Email, MailAccount, MessageCopy, WebhookDelivery
from services.orgs import add_org
from services.webhooks import add_subscription, emit
from sync.tasks import SYNC_TASK
from tests.rig.fixtures import Mailbox, make_message
from tests.rig.webhook_receiver import Receiver
from tests.sync.helpers import connect
from web import create_app
from web.celery_app import celery_init_app

POSTROOM = [sys.executable, "-m", "cli"]
REQUIRE_SERVICES = os.environ.get("POSTROOM_TEST_REQUIRE_SERVICES") == "1"

AUDIT = """
CREATE TABLE lease_audit (
    seq serial PRIMARY KEY, account_id int, old_owner text, new_owner text,
    old_expires timestamptz, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION lease_audit() RETURNS trigger AS $$ BEGIN
    IF NEW.lease_owner IS DISTINCT FROM OLD.lease_owner THEN
        INSERT INTO lease_audit (account_id, old_owner, new_owner, old_expires)
        VALUES (NEW.id, OLD.lease_owner, NEW.lease_owner, OLD.lease_expires_at);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER lease_audit AFTER UPDATE ON mail_accounts FOR EACH ROW EXECUTE FUNCTION lease_audit();
"""
UNAUDIT = "DROP TRIGGER IF EXISTS lease_audit ON mail_accounts; DROP FUNCTION IF EXISTS lease_audit; " + (
    "DROP TABLE IF EXISTS lease_audit;"
)


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = os.environ.get("POSTROOM_TEST_REDIS_URL", "")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("POSTROOM_TEST_REDIS_URL is not set but POSTROOM_TEST_REQUIRE_SERVICES=1.")
        pytest.skip("Redis not configured (POSTROOM_TEST_REDIS_URL is empty)")
    try:
        redis.Redis.from_url(url, socket_timeout=5).ping()
    except redis.RedisError as exc:  # configured but unreachable: a failure, never a silent skip
        pytest.fail(f"Redis at {url} is not usable: {exc}")
    return url


@dataclass
class Cluster:
    """Beat and workers as the operator runs them, each logging JSON to a file."""

    env: dict[str, str]
    config: Config
    sessions: sessionmaker[Session]
    queue: str
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (the process keeps it)
        proc = subprocess.Popen(
            [*POSTROOM, "celery", *args, "--queue", self.queue], env=self.env, stdout=log, stderr=log
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log_text(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def records(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text(name).splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def syncs(self) -> list[tuple[str, dict[str, Any]]]:
        """(worker, record) for every pass a worker says it made."""
        return [
            (name, r)
            for name in self.procs
            if name.startswith("worker")
            for r in self.records(name)
            if r.get("logger") == "postroom.tasks" and "; held by " in r["msg"]
        ]

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for name, proc in self.procs.items():
                if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-3000:]}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log_text(n)[-2000:]}" for n in self.procs)
                raise AssertionError(f"{what}: not within {timeout}s\n{logs}")
            time.sleep(0.2)

    def audit(self) -> list[Any]:
        with self.sessions() as s:
            return list(s.execute(text("SELECT * FROM lease_audit ORDER BY seq")))


@pytest.fixture
def cluster(pg_url: str | None, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    if pg_url is None:
        pytest.skip("PostgreSQL not configured (POSTROOM_TEST_POSTGRES_URL is empty)")
    engine = create_engine(pg_url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.exec_driver_sql(UNAUDIT)
        conn.exec_driver_sql(AUDIT)
    engine.dispose()
    config_file = tmp_path / "postroom.toml"
    config_file.write_text(
        "[sync]\ninterval = 3600\njitter = 0\nbatch_size = 20\nconcurrency = 2\nlease_seconds = 10\n"
        "[celery]\ndispatch_interval = 1\nwebhook_interval = 1\n"
        "[webhooks]\nallow_private = true\ntimeout = 5\n"  # the test receiver is on 127.0.0.1
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "POSTROOM_CONFIG": str(config_file),
        "POSTROOM_DATA_DIR": str(tmp_path / "data"),
        "POSTROOM_DATABASE_URL": pg_url,
        "POSTROOM_SECRET_KEY": "test-secret-key-0123456789abcdef",
        "POSTROOM_BROKER_URL": redis_url,
        "POSTROOM_LOG_FORMAT": "json",
        "POSTROOM_LOG_LEVEL": "INFO",
    }
    config = load_config(env=env)
    engine = db.make_engine(config.database)
    c = Cluster(env, config, db.make_sessionmaker(engine), f"postroom-test-{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield c
    finally:
        for proc in c.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in c.procs.items():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{name} did not stop on SIGTERM:\n{c.log_text(name)[-2000:]}") from None
            assert proc.returncode in (0, -signal.SIGKILL), f"{name} exited with {proc.returncode}"
        r = redis.Redis.from_url(redis_url)
        r.delete(c.queue, f"_kombu.binding.{c.queue}", f"_kombu.binding_permanent.{c.queue}")
        with engine.begin() as conn:
            conn.exec_driver_sql(UNAUDIT)
        engine.dispose()


def _copies(sessions: sessionmaker[Session], account_id: int) -> list[tuple[str, tuple[int, str]]]:
    """(Message-ID, provider identity (folder, remote id)) of every indexed copy in the account's mailbox."""
    with sessions() as s:
        rows = s.execute(
            select(Email.message_id, MessageCopy.folder_id, MessageCopy.remote_id)
            .join(MessageCopy, MessageCopy.email_id == Email.id)
            .where(MessageCopy.account_id == account_id)
        ).tuples()
        return sorted((mid, (folder, rid)) for mid, folder, rid in rows)


def _check_leases(c: Cluster, takeovers_allowed: bool = False) -> list[Any]:
    """Every claim took a free (or, if allowed, expired) lease; every reported sync ran under its worker's lease."""
    audit = c.audit()
    for row in audit:
        if row.new_owner is not None and row.old_owner is not None:
            assert takeovers_allowed, f"account {row.account_id} changed hands while held: {row}"
            assert row.old_expires < row.at, f"account {row.account_id} taken from a live lease: {row}"
    held = {(row.account_id, row.new_owner) for row in audit if row.new_owner}
    for worker, r in c.syncs():
        owner = re.search(r"; held by (\S+),", r["msg"]).group(1)  # type: ignore[union-attr]
        assert (r["account_id"], owner) in held, f"{worker} synced account {r['account_id']} without its lease"
    return audit


def test_two_workers_and_beat_sync_every_account_once(cluster: Cluster, new_mailbox: Callable[[], Mailbox]) -> None:
    boxes = [new_mailbox() for _ in range(6)]
    shared = make_message(message_id="<shared@x.test>", subject="To everyone", from_="boss@corp.test")
    expected: dict[int, set[str]] = {}
    for i, box in enumerate(boxes):
        ids = {f"<m{i}-{n}@x.test>" for n in range(12)}
        for mid in sorted(ids):
            box.append(make_message(message_id=mid, subject=f"Mail {mid}"))
        box.append(shared)
        expected[connect(cluster.config, cluster.sessions, box)] = ids | {"<shared@x.test>"}

    cluster.start("beat", "beat")
    cluster.start("worker-a", "worker", "--concurrency", "2")
    cluster.start("worker-b", "worker", "--concurrency", "2")

    def indexed() -> dict[int, list[str]]:
        return {a: [m for m, _ in _copies(cluster.sessions, a)] for a in expected}

    cluster.wait("every account synced", lambda: all(set(v) == expected[a] for a, v in indexed().items()), 45)
    assert any("dispatched" in r["msg"] for n in ("worker-a", "worker-b") for r in cluster.records(n))

    # Round two: new mail everywhere, every account due, and two extra tasks per account sent at once
    # on top of beat's, so the workers race for the same accounts.
    for i, (account_id, box) in enumerate(zip(expected, boxes, strict=True)):
        box.append(make_message(message_id=f"<late{i}@x.test>"))
        expected[account_id].add(f"<late{i}@x.test>")
    celery_app = celery_init_app(create_app(cluster.config))
    celery_app.conf.task_default_queue = cluster.queue
    with cluster.sessions.begin() as s:
        s.execute(update(MailAccount).values(next_sync_at=datetime.now(UTC) - timedelta(seconds=1)))
    for account_id in expected:
        for _ in range(2):
            celery_app.send_task(SYNC_TASK, args=[account_id])
    cluster.wait("the new mail indexed", lambda: all(set(v) == expected[a] for a, v in indexed().items()), 30)
    cluster.wait("every lease released", lambda: not _held(cluster), 15)

    for account_id, message_ids in indexed().items():  # once per Message-ID and per provider id
        assert sorted(message_ids) == sorted(expected[account_id])
        assert len({rid for _, rid in _copies(cluster.sessions, account_id)}) == len(message_ids)
    with cluster.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Email)) == 6 * 13 + 1  # the shared message once
        states = set(s.scalars(select(MailAccount.status)))
        assert states == {"active"}
    _check_leases(cluster)
    syncs = cluster.syncs()
    assert {w for w, _ in syncs} == {"worker-a", "worker-b"}  # both did work
    skipped = [r for n in ("worker-a", "worker-b") for r in cluster.records(n) if "holds the lease" in r["msg"]]
    assert skipped, "the duplicate tasks never raced for a lease, so this test proved nothing about it"


def _held(c: Cluster) -> list[int]:
    with c.sessions() as s:
        return list(s.scalars(select(MailAccount.id).where(MailAccount.lease_owner.is_not(None))))


def test_a_killed_workers_account_is_finished_by_the_other_after_the_lease_expires(
    cluster: Cluster, mailbox: Mailbox
) -> None:
    n = mailbox.seed_corpus(1500)
    account_id = connect(cluster.config, cluster.sessions, mailbox)
    workers = {
        "worker-a": cluster.start("worker-a", "worker", "--concurrency", "1"),
        "worker-b": cluster.start("worker-b", "worker", "--concurrency", "1"),
    }
    cluster.start("beat", "beat")

    def owner() -> str | None:
        with cluster.sessions() as s:
            return s.scalar(select(MailAccount.lease_owner).where(MailAccount.id == account_id))

    cluster.wait("a worker part-way through", lambda: owner() is not None and len(_copies_fast(cluster)) > 0, 40)
    victim_owner = owner()
    assert victim_owner is not None
    pid = int(victim_owner.split(":")[1])
    victim = next(name for name, p in workers.items() if p.pid == pid)
    killed_at = len(_copies_fast(cluster))
    os.kill(pid, signal.SIGKILL)
    workers[victim].wait(10)
    survivor = next(name for name in workers if name != victim)

    def done() -> bool:
        with cluster.sessions() as s:
            acc = s.get(MailAccount, account_id)
            return acc is not None and acc.lease_owner is None and acc.last_success_at is not None

    cluster.wait("the survivor finishing the account", done, 45)
    copies = _copies(cluster.sessions, account_id)
    assert killed_at < n, "the first worker finished before it was killed; nothing was taken over"
    assert len(copies) == n
    assert len({m for m, _ in copies}) == n and len({r for _, r in copies}) == n  # no duplicates
    audit = _check_leases(cluster, takeovers_allowed=True)
    takeover = [r for r in audit if r.old_owner == victim_owner and r.new_owner]
    assert takeover and takeover[0].new_owner.split(":")[1] == str(workers[survivor].pid)
    finished = [r for w, r in cluster.syncs() if w == survivor and r["account_id"] == account_id]
    assert finished and " 0 new" not in finished[-1]["msg"]  # it synced what the victim had not
    assert not [r for w, r in cluster.syncs() if w == victim]  # the victim never got to report


def test_sigterm_lets_a_worker_finish_the_account_in_hand(cluster: Cluster, mailbox: Mailbox) -> None:
    n = mailbox.seed_corpus(1000)
    account_id = connect(cluster.config, cluster.sessions, mailbox)
    worker = cluster.start("worker", "worker", "--concurrency", "1")
    cluster.start("beat", "beat")
    cluster.wait("the worker part-way through", lambda: bool(_held(cluster)) and len(_copies_fast(cluster)) > 0, 40)
    assert len(_copies_fast(cluster)) < n
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(40) == 0
    with cluster.sessions() as s:
        account = s.get(MailAccount, account_id)
        assert account is not None and account.lease_owner is None and account.status == "active"
    assert len(_copies(cluster.sessions, account_id)) == n
    assert [r["account_id"] for _, r in cluster.syncs()] == [account_id]  # finished by the worker told to stop


def _copies_fast(c: Cluster) -> list[int]:
    with c.sessions() as s:
        return list(s.scalars(select(MessageCopy.id)))


def test_beat_and_two_workers_deliver_webhooks_signed_each_once_at_a_time(cluster: Cluster, receiver: Receiver) -> None:
    with cluster.sessions.begin() as s:
        org = add_org(s, "Acme").id
        _, secret = add_subscription(s, cluster.config, org, receiver.url, ["message.bounced"])
        for n in range(5):
            emit(s, org, "message.bounced", {"recipient": f"r{n}@example.org", "status": "5.1.1"})
    receiver.secrets = [secret]
    receiver.answers = [503]  # the first request fails: retried 5 s later by whichever worker runs the tick
    receiver.delay = 0.05
    cluster.start("beat", "beat")
    cluster.start("worker-a", "worker", "--concurrency", "2")
    cluster.start("worker-b", "worker", "--concurrency", "2")

    def delivered() -> list[str]:
        with cluster.sessions() as s:
            return list(s.scalars(select(WebhookDelivery.status)))

    cluster.wait("every delivery delivered", lambda: delivered() == ["delivered"] * 5, 40)
    assert receiver.bad_signatures == []
    ids = receiver.ids()
    assert len(set(ids)) == 5 and len(ids) == 6  # one retry, and no delivery ever sent twice at once
    assert {(t, d["recipient"]) for t, d in receiver.events()} == {
        ("message.bounced", f"r{n}@example.org") for n in range(5)
    }
    with cluster.sessions() as s:
        assert sorted(s.scalars(select(WebhookDelivery.attempts))) == [1, 1, 1, 1, 2]


def test_scale_out_mode_refuses_sqlite_in_one_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "POSTROOM_DATA_DIR": str(tmp_path / "d")}
    env.pop("POSTROOM_DATABASE_URL", None)
    env.pop("POSTROOM_CONFIG", None)
    for command in ("worker", "beat"):
        proc = subprocess.run([*POSTROOM, "celery", command], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            "postroom: error: Scale-out mode (postroom celery) needs PostgreSQL: set database.url or "
            "POSTROOM_DATABASE_URL to a postgresql:// URL, or run 'postroom worker' for the embedded mode."
        ]


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_celery_commands_have_help(command: str) -> None:
    out = subprocess.run([*POSTROOM, "celery", command, "--help"], capture_output=True, text=True, check=True).stdout
    assert f"usage: postroom celery {command}" in out and "--loglevel" in out
