"""Who syncs which account, and when: due times, leases, health states, backoff.

Account states (``mail_accounts.status``)::

    active ──claim──▶ syncing ──ok──────────▶ active        (next: interval ± jitter)
                        │  ├──transient────▶ backing-off   (next: exponential backoff, capped,
                        │  │                                  never sooner than Retry-After)
                        │  └──auth refused─▶ reconnect-needed (not retried until reconnected)
                        └──worker died────▶ (lease expires; the account is due again)
    disabled: never synced.

A worker *claims* an account with one atomic ``UPDATE ... WHERE`` the lease is
free or expired, so two workers — threads of one process, embedded workers on
one database, or Celery workers on many machines — never sync one account at
the same time. The holder renews the lease while it syncs (between folders and
batches) and releases it with the outcome. A worker killed mid-sync leaves a
lease that expires after ``sync.lease_seconds``; the account is then due again
and the next sync resumes without loss or duplication (see sync.engine).

A lease means one worker: every lease time is the *database's* clock
(:class:`sync.store.db_now`), never a worker's own; a renewal that finds the
lease gone (it expired during one slow server call and another worker claimed
the account) raises :class:`~sync.leases.LeaseLost` and the pass stops; cursor
saves and removals prove the lease in their own transaction
(:meth:`AccountLease.hold`); the release, like every lease write, matches the
owner exactly.

The embedded worker (sync.worker), ``postroom sync --once`` and the Celery
tasks (sync.tasks) all go through :meth:`Scheduler.sync`.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, SyncConfig
from postroom.errors import AccountError
from postroom.logs import error_summary, where
from postroom.models import OUTBOX_OPEN, MailAccount, OutboxMessage, utcnow
from postroom.states import SCHEDULED, AccountStatus
from sync.engine import AccountResult, AccountSync, outcome_values
from sync.leases import LeaseLost, dead_local_owner, worker_id
from sync.outbox import process_outbox
from sync.store import db_now
from sync.webhooks import emit

log = logging.getLogger("postroom.scheduler")
_ACCOUNTS = cast(Table, MailAccount.__table__)
_FREE_LEASE = or_(_ACCOUNTS.c.lease_owner.is_(None), _ACCOUNTS.c.lease_expires_at < db_now())
# the worker may pick the account up: scheduled, and nobody holds it (a dead worker's lease ran out)
_SCHEDULABLE = _ACCOUNTS.c.status.in_(SCHEDULED) & _FREE_LEASE


def due(now: datetime) -> ColumnElement[bool]:
    """The one "account is due" clause: the scheduler, the Celery dispatcher and the queue-depth
    gauge all count with it. Schedulable, and its due time (if any) reached by ``now``."""
    return _SCHEDULABLE & or_(_ACCOUNTS.c.next_sync_at.is_(None), _ACCOUNTS.c.next_sync_at <= now)


# returned by the claim itself, so an account with nothing in its outbox costs no query for it
_OPEN_OUTBOX = (
    select(OutboxMessage.id)
    .where(OutboxMessage.account_id == _ACCOUNTS.c.id, text(f"({OUTBOX_OPEN})"))
    .exists()
    .label("outbox")
)

NEVER = (AccountStatus.DISABLED,)


class ResultSink(Protocol):
    def observe(self, result: AccountResult) -> None: ...


@dataclass(frozen=True)
class Claim:
    """A lease just taken: what the claim statement returned about the account."""

    email: str
    failure_count: int
    outbox: bool = False  # the account has outbox rows not settled yet (queued, sending, uncertain)


@dataclass(frozen=True)
class Outcome:
    status: str
    next_sync_at: datetime | None
    failure_count: int


def plan_next(
    result: AccountResult, failures: int, cfg: SyncConfig, now: datetime, rand: Callable[[], float] = random.random
) -> Outcome:
    """The state and next due time after a pass (pure; see the module docstring).

    >>> from sync.engine import AccountResult
    >>> ok = AccountResult(1, "a@b.test")
    >>> plan_next(ok, 3, SyncConfig(interval=100, jitter=0), datetime(2026, 1, 1, tzinfo=UTC)).next_sync_at
    datetime.datetime(2026, 1, 1, 0, 1, 40, tzinfo=datetime.timezone.utc)
    """
    spread = 1 + cfg.jitter * (2 * rand() - 1)
    if result.ok:
        return Outcome(AccountStatus.ACTIVE, now + timedelta(seconds=cfg.interval * spread), 0)
    if result.needs_reconnect:
        return Outcome(AccountStatus.RECONNECT_NEEDED, None, failures + 1)
    failures += 1
    delay = min(cfg.backoff_max, cfg.backoff_base * 2 ** min(failures - 1, 30)) * spread
    if result.retry_after:
        delay = max(delay, min(result.retry_after, cfg.backoff_max))
    return Outcome(AccountStatus.BACKING_OFF, now + timedelta(seconds=delay), failures)


class Scheduler:
    def __init__(
        self, config: Config, sessions: sessionmaker[Session], owner: str | None = None, sink: ResultSink | None = None
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.owner = owner or worker_id()
        self.sink = sink
        self.lease = timedelta(seconds=config.sync.lease_seconds)
        # built once: it runs for every account pass
        self._claim = (
            update(_ACCOUNTS)
            .where(
                _ACCOUNTS.c.id == bindparam("aid"),
                _ACCOUNTS.c.status.in_(bindparam("allowed", expanding=True)),
                _FREE_LEASE,
            )
            .values(
                lease_owner=self.owner,
                lease_expires_at=db_now(self.lease.total_seconds()),
                status=AccountStatus.SYNCING,
                dispatched_at=None,
                last_sync_at=db_now(),
            )
            .returning(_ACCOUNTS.c.email, _ACCOUNTS.c.failure_count, _OPEN_OUTBOX)
        )
        # outcomes that could not be recorded (the database was away), by account
        self._unrecorded: dict[int, AccountResult] = {}
        self._unrecorded_lock = threading.Lock()

    # -- queries ---------------------------------------------------------------

    def held(self, account_ids: Sequence[int]) -> ColumnElement[bool]:
        """This worker still holds these accounts: it is still their lease's owner. A lease that
        ran out but that nobody claimed since is still this worker's (a claim replaces the owner
        in the same statement that checks the lease is free), so it may be extended."""
        return _ACCOUNTS.c.id.in_(list(account_ids)) & (_ACCOUNTS.c.lease_owner == self.owner)

    def due(self, now: datetime, limit: int, exclude: Sequence[int] = ()) -> list[int]:
        """Accounts whose time has come and that nobody holds, most overdue first."""
        return self.due_and_next(now, limit, exclude)[0]

    def due_and_next(self, now: datetime, limit: int, exclude: Sequence[int] = ()) -> tuple[list[int], float | None]:
        """The worker's one query per turn: up to ``limit`` accounts due now that nobody
        holds, most overdue first, and the seconds until the first free one that is not due
        yet (None: none among the ``limit + 1`` rows read). Walks the ``next_sync_at`` index;
        never sorts the table."""
        q = (
            select(_ACCOUNTS.c.id, _ACCOUNTS.c.next_sync_at)
            .where(_SCHEDULABLE)  # due ones first; the first not yet due says when to look again
            .order_by(_ACCOUNTS.c.next_sync_at)  # (new accounts get a due time, see migration 0003)
            .limit(limit + 1)
        )
        if exclude:
            q = q.where(_ACCOUNTS.c.id.notin_(list(exclude)))
        with self.sessions() as s:
            rows = s.execute(q).all()
        due = [r.id for r in rows if r.next_sync_at is None or r.next_sync_at <= now][:limit]
        later = [r.next_sync_at for r in rows if r.next_sync_at is not None and r.next_sync_at > now]
        return due, (later[0] - now).total_seconds() if later else None

    # -- leases ----------------------------------------------------------------

    def claim(self, account_id: int, *, force: bool = False) -> Claim | None:
        """Take the lease on one account (and stamp ``last_sync_at``), in one statement;
        None if another worker holds it or it is not schedulable."""
        allowed = [s for s in AccountStatus if s in SCHEDULED or (force and s == AccountStatus.RECONNECT_NEEDED)]
        with self.sessions.begin() as s:
            row = s.execute(self._claim, {"aid": account_id, "allowed": allowed}).one_or_none()
        return None if row is None else Claim(row.email, row.failure_count or 0, bool(row.outbox))

    def reap_dead_local_leases(self) -> int:
        """Free the leases of workers on this machine whose process is gone (killed, crashed).

        Without this, an account whose worker was killed waits ``sync.lease_seconds``
        before anyone syncs it again. Leases of other machines, and of live processes
        here, are left to expire. (Owner ids are ``host:pid:...``; on hosts where
        several machines share a hostname but not a process table, e.g. containers
        given the same hostname, set distinct hostnames.)
        """
        host = socket.gethostname()
        prefix = f"{host}:"
        with self.sessions() as s:  # an exact prefix: in LIKE, "_" or "%" in a hostname would be wildcards
            held = s.execute(
                select(MailAccount.id, MailAccount.lease_owner).where(
                    func.substr(MailAccount.lease_owner, 1, len(prefix)) == prefix,
                    MailAccount.lease_expires_at >= db_now(),
                )
            ).all()
        dead = [(aid, owner) for aid, owner in held if owner != self.owner and dead_local_owner(owner)]
        freed = 0
        for account_id, owner in dead:
            with self.sessions.begin() as s:
                res = s.execute(
                    update(MailAccount)
                    .where(MailAccount.id == account_id, MailAccount.lease_owner == owner)
                    .values(lease_expires_at=db_now(-1))  # clearly past, even within the same millisecond
                    .execution_options(synchronize_session=False)
                )
                freed += res.rowcount or 0  # type: ignore[attr-defined]
            log.info("freed the lease of dead worker %s", owner, extra={"account_id": account_id})
        return freed

    def renew(self, account_ids: Sequence[int]) -> list[int]:
        """Extend this worker's leases on these accounts; returns the accounts whose lease it
        no longer held (expired and taken, or freed), which it must stop working on."""
        if not account_ids:
            return []
        with self.sessions.begin() as s:
            renewed = set(
                s.scalars(
                    update(_ACCOUNTS)
                    .where(self.held(account_ids))
                    .values(lease_expires_at=db_now(self.lease.total_seconds()))
                    .returning(_ACCOUNTS.c.id)
                )
            )
        return [a for a in account_ids if a not in renewed]

    def hold(self, session: Session, account_id: int) -> None:
        """Inside a write transaction: extend the lease if this worker still holds it, else
        raise :class:`LeaseLost`. The UPDATE locks the account row until commit (PostgreSQL),
        and on SQLite takes the write lock first, so the transaction's writes and a rival's
        claim cannot interleave."""
        row = session.execute(
            update(_ACCOUNTS)
            .where(self.held([account_id]))
            .values(lease_expires_at=db_now(self.lease.total_seconds()))
            .returning(_ACCOUNTS.c.id)
        ).first()
        if row is None:
            raise LeaseLost(f"the lease on account {account_id} ran out")

    def release(self, result: AccountResult, failures: int | None = None) -> None:
        """Record the outcome and give the lease back, in one statement (``failures``:
        the account's failure count when it was claimed, read again if not given). A lease
        this worker no longer holds is left alone: its new holder records the outcome."""
        now = utcnow()
        with self.sessions.begin() as s:
            if failures is None:
                failures = s.scalar(select(_ACCOUNTS.c.failure_count).where(_ACCOUNTS.c.id == result.account_id)) or 0
            out = plan_next(result, failures, self.config.sync, now)
            released = s.execute(
                update(_ACCOUNTS)
                .where(_ACCOUNTS.c.id == result.account_id, _ACCOUNTS.c.lease_owner == self.owner)
                .values(
                    status=out.status,
                    next_sync_at=out.next_sync_at,
                    failure_count=out.failure_count,
                    lease_owner=None,
                    lease_expires_at=None,
                    **outcome_values(result, now),
                )
            ).rowcount  # type: ignore[attr-defined]
            if released and out.status == AccountStatus.RECONNECT_NEEDED:  # announced with the change, atomically
                row = s.execute(
                    select(_ACCOUNTS.c.org_id, _ACCOUNTS.c.email).where(_ACCOUNTS.c.id == result.account_id)
                ).one()
                emit(s, row.org_id, "account.reconnect_needed", {"account_id": result.account_id, "email": row.email})
        if released:
            result.status = out.status
        else:  # another worker claimed the account after this pass's last write
            result.lease_lost = True

    def release_unrecorded(self) -> None:
        """Record the outcomes that could not be written when their sync ended.

        Until then this worker still holds those leases, so nobody (itself
        included) would sync the accounts before the leases expired. Raises
        SQLAlchemyError if the database is still unavailable.
        """
        with self._unrecorded_lock:
            pending = list(self._unrecorded.values())
        for result in pending:
            self.release(result)
            with self._unrecorded_lock:
                self._unrecorded.pop(result.account_id, None)
            log.info("recorded the result of an earlier sync", extra={"account_id": result.account_id})

    # -- one account -------------------------------------------------------------

    def sync(self, account_id: int, *, force: bool = False) -> AccountResult:
        """Claim, sync and release one account. Never raises for server, data or database trouble."""
        extra = {"account_id": account_id}
        claim = self.claim(account_id, force=force)
        if claim is None:
            with self.sessions() as s:
                email = s.scalar(select(_ACCOUNTS.c.email).where(_ACCOUNTS.c.id == account_id))
            if email is None:
                raise AccountError(f"No mail account with id {account_id}.")
            return AccountResult(account_id, email, skipped=True)
        lease = AccountLease(self, account_id)
        log.debug("sync started", extra=extra)
        try:
            result = AccountSync(self.config, self.sessions, account_id, lease=lease).run(record=False)
        except Exception as exc:  # a bug or the database: record it, never take the worker down
            summary = error_summary(exc)
            log.error("sync crashed: %s\n%s", summary, where(exc), extra=extra)
            result = AccountResult(account_id, claim.email)
            result.fail(exc, f"Internal error: {summary}")
        if claim.outbox and not result.lease_lost:  # the account's outbox, while the lease is still held
            try:
                process_outbox(self.config, self.sessions, account_id, self.owner)
            except Exception as exc:  # never fails the sync, never takes the worker down
                log.error("outbox pass failed: %s", error_summary(exc), extra=extra)
        if result.lease_lost:
            log.warning("lease ran out mid-pass; another worker has the account now", extra=extra)
        else:
            try:
                self.release(result, claim.failure_count)
            except SQLAlchemyError as exc:  # retried by release_unrecorded(); else the lease expires by itself
                log.error("could not record the result: %s", error_summary(exc), extra=extra)
                with self._unrecorded_lock:
                    self._unrecorded[account_id] = result
        if self.sink is not None:
            self.sink.observe(result)
        return result


class AccountLease:
    """One worker's hold on one account while it syncs it (:class:`sync.leases.Lease`):
    renewed at most every quarter of ``sync.lease_seconds``, proven by every guarded write."""

    def __init__(self, scheduler: Scheduler, account_id: int) -> None:
        self.scheduler, self.account_id = scheduler, account_id
        self._last = time.monotonic()
        self._every = scheduler.lease.total_seconds() / 4

    def heartbeat(self) -> None:
        if time.monotonic() - self._last > self._every:
            if self.scheduler.renew([self.account_id]):
                raise LeaseLost(f"the lease on account {self.account_id} ran out")
            self._last = time.monotonic()

    def hold(self, session: Session) -> None:
        self.scheduler.hold(session, self.account_id)
        self._last = time.monotonic()


def sync_all(config: Config, sessions: sessionmaker[Session], account_id: int | None = None) -> list[AccountResult]:
    """One pass over every account that is not disabled (or just ``account_id``)."""
    with sessions() as s:
        q = select(MailAccount.id).order_by(MailAccount.id)
        if account_id is not None:
            q = q.where(MailAccount.id == account_id)
        else:
            q = q.where(MailAccount.status.notin_(NEVER))
        ids = list(s.scalars(q))
    if account_id is not None and not ids:
        raise AccountError(f"No mail account with id {account_id}.")
    scheduler = Scheduler(config, sessions)
    scheduler.reap_dead_local_leases()  # a previous run killed mid-sync must not block this one
    return [scheduler.sync(i, force=True) for i in ids]
