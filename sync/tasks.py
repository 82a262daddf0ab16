"""The scale-out mode's Celery tasks: beat dispatches due accounts, any number of workers sync them.

::

    beat ──every celery.dispatch_interval──▶ postroom.dispatch_due      (runs on some worker)
        due accounts (Scheduler.due) ──one UPDATE──▶ dispatched_at = now,
                                                     next_sync_at = now + sync.lease_seconds
        send postroom.sync_account(id) for each
    worker ──▶ postroom.sync_account(id) = Scheduler.sync(id): claim the lease, sync, release
    beat ──every inbound.interval──▶ postroom.inbound_run: one run over the processing mailboxes
        (sync.inbound; two runs at once are safe: each message is recorded once, by UID)
    beat ──every celery.webhook_interval──▶ postroom.deliver_webhooks  (runs on some worker)
        sync.webhooks.deliver_due: claim due deliveries (compare-and-set), send, record;
        again while batches come full, for at most one interval

Correctness rests on the database, not on the broker:

* The lease (sync.scheduler) makes sure no account is synced by two workers at
  once, whatever the broker delivers twice (a redelivered late-acked task, two
  beats by mistake, a task sent by hand): the loser's result is ``skipped``.
* Pushing ``next_sync_at`` forward when dispatching keeps an account from being
  queued again while its task waits. If the task is lost (broker restart, a
  worker killed with the message in hand) or its worker dies mid-sync, the
  account is due again once that time — and any lease — has passed.
* A task that arrives after someone else already synced the account (a
  duplicate) finds it neither dispatched nor due, and does nothing.
* Webhook deliveries are claimed in the database one by one (sync.webhooks): two
  ticks running at once on two workers never send one delivery at the same time,
  and a worker killed mid-delivery leaves its claim to run out, after which the
  next tick sends it (at least once, never lost). Ticks expire after one interval,
  so no pile of them waits while every worker is busy or down.

This module knows nothing about Flask: the web layer's ``celery_init_app``
builds the Celery app, runs every task inside the Flask app context and hands
:func:`register_tasks` a way to get the config and sessions from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import Celery, Task
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, ConfigError
from postroom.errors import AccountError
from postroom.models import MailAccount, utcnow
from sync.inbound import run_once as run_inbound
from sync.leases import worker_id
from sync.scheduler import ResultSink, Scheduler, due
from sync.webhooks import BATCH as WEBHOOK_BATCH
from sync.webhooks import deliver_due

log = logging.getLogger("postroom.tasks")

DISPATCH_TASK = "postroom.dispatch_due"
INBOUND_TASK = "postroom.inbound_run"
SYNC_TASK = "postroom.sync_account"
WEBHOOKS_TASK = "postroom.deliver_webhooks"
DEFAULT_QUEUE = "postroom"
DISPATCH_LIMIT = 5000  # accounts queued per beat tick at most; the rest go on the next tick


@dataclass(frozen=True)
class TaskContext:
    """What a task needs from the application that runs it."""

    config: Config
    sessions: sessionmaker[Session]
    sink: ResultSink | None = None  # this worker process's metrics, if any


def require_server_database(config: Config) -> None:
    """Scale-out mode shares one database between machines: SQLite cannot be it."""
    if config.database.url.startswith("sqlite"):
        raise ConfigError(
            "Scale-out mode (postroom celery) needs PostgreSQL: set database.url or POSTROOM_DATABASE_URL "
            "to a postgresql:// URL, or run 'postroom worker' for the embedded mode."
        )


def celery_settings(config: Config, queue: str = DEFAULT_QUEUE) -> dict[str, Any]:
    """Celery configuration derived from the Postroom config."""
    interval = config.celery.dispatch_interval
    return {
        "broker_url": config.celery.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_acks_late": True,  # a worker that dies mid-task leaves the message to be redelivered
        "worker_prefetch_multiplier": 1,  # a busy worker does not hoard accounts others could sync
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_default_queue": queue,
        "beat_schedule": {
            DISPATCH_TASK: {
                "task": DISPATCH_TASK,
                "schedule": interval,
                "options": {"expires": interval},  # no pile of stale ticks while every worker is down
            },
            INBOUND_TASK: {
                "task": INBOUND_TASK,
                "schedule": config.inbound.interval,
                "options": {"expires": config.inbound.interval},
            },
            WEBHOOKS_TASK: {
                "task": WEBHOOKS_TASK,
                "schedule": config.celery.webhook_interval,
                "options": {"expires": config.celery.webhook_interval},
            },
        },
    }


def dispatch_due(
    config: Config,
    sessions: sessionmaker[Session],
    send: Callable[[int], object],
    now: datetime | None = None,
    limit: int = DISPATCH_LIMIT,
) -> int:
    """Mark the due accounts dispatched and ``send`` a sync task for each; returns how many."""
    now = now or utcnow()
    candidates = Scheduler(config, sessions, owner="dispatcher").due(now, limit)
    if not candidates:
        return 0
    with sessions.begin() as s:
        # The WHERE repeats the due clause: of two dispatchers racing, only one marks an account.
        marked = list(
            s.scalars(
                update(MailAccount)
                .where(MailAccount.id.in_(candidates), due(now))
                .values(dispatched_at=now, next_sync_at=now + timedelta(seconds=config.sync.lease_seconds))
                .returning(MailAccount.id)
                .execution_options(synchronize_session=False)
            )
        )
    for account_id in sorted(marked):
        send(account_id)
    if marked:
        log.info("dispatched %d account(s)", len(marked))
    return len(marked)


def _stale(sessions: sessionmaker[Session], account_id: int, now: datetime) -> str | None:
    """Why a sync task should do nothing (None: go ahead)."""
    with sessions() as s:
        row = s.execute(
            select(MailAccount.dispatched_at, MailAccount.next_sync_at).where(MailAccount.id == account_id)
        ).one_or_none()
    if row is None:
        return "missing"
    dispatched_at, next_sync_at = row
    if dispatched_at is None and next_sync_at is not None and next_sync_at > now:
        return "not-due"  # a duplicate: someone synced the account since it was dispatched
    return None


def sync_account(ctx: TaskContext, account_id: int, owner: str) -> dict[str, Any]:
    """One pass over a dispatched account, under the lease; returns ``{"ok", "status", "new"}``."""
    started = utcnow()
    extra = {"account_id": account_id}
    try:
        reason = _stale(ctx.sessions, account_id, started)
        if reason is not None:
            log.debug("nothing to do (%s)", reason, extra=extra)
            return {"ok": reason != "missing", "status": reason, "new": 0}
        result = Scheduler(ctx.config, ctx.sessions, owner=owner, sink=ctx.sink).sync(account_id)
    except AccountError:
        return {"ok": False, "status": "missing", "new": 0}
    except SQLAlchemyError as exc:  # the account stays dispatched and is due again after the lease time
        log.warning("database unavailable: %s", str(exc).splitlines()[0], extra=extra)
        return {"ok": False, "status": "database-unavailable", "new": 0}
    if result.skipped:
        log.info("skipped: another worker holds the lease", extra=extra)
        return {"ok": True, "status": "skipped", "new": 0}
    log.log(
        logging.INFO if result.ok else logging.WARNING,
        "%s; held by %s, task started %s",
        result.summary(),
        owner,
        started.isoformat(timespec="milliseconds"),
        extra=extra,
    )
    return {"ok": result.ok, "status": result.status, "new": result.new}


def deliver_webhooks(ctx: TaskContext, clock: Callable[[], float] = time.monotonic) -> int:
    """Send the webhook deliveries that are due, batch after batch while batches come full,
    for at most one ``celery.webhook_interval`` (the next tick takes over); returns how many
    were attempted. A database that is away is logged, and the next tick tries again."""
    deadline = clock() + ctx.config.celery.webhook_interval
    attempted = 0
    try:
        while True:
            n = deliver_due(ctx.sessions, ctx.config)
            attempted += n
            if n < WEBHOOK_BATCH or clock() >= deadline:
                return attempted
    except SQLAlchemyError as exc:
        log.warning("webhook pass failed, database unavailable: %s", str(exc).splitlines()[0])
        return attempted


def task_owner(task: Task) -> str:
    """Lease owner for one task: this machine, this process, this task."""
    return worker_id((task.request.id or "local")[:8])


def register_tasks(celery: Celery, context: Callable[[], TaskContext]) -> None:
    """Define Postroom's tasks on ``celery``; ``context`` is called inside each running task."""

    @celery.task(name=SYNC_TASK, bind=True)
    def sync_account_task(self: Task, account_id: int) -> dict[str, Any]:
        return sync_account(context(), account_id, task_owner(self))

    @celery.task(name=INBOUND_TASK)
    def inbound_run_task() -> dict[str, Any]:
        ctx = context()
        return run_inbound(ctx.config, ctx.sessions).as_json()

    @celery.task(name=DISPATCH_TASK, bind=True)
    def dispatch_due_task(self: Task) -> int:
        ctx = context()
        return dispatch_due(ctx.config, ctx.sessions, lambda account_id: sync_account_task.delay(account_id))

    @celery.task(name=WEBHOOKS_TASK)
    def deliver_webhooks_task() -> int:
        return deliver_webhooks(context())
