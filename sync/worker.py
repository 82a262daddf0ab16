"""The embedded scheduler: keeps every account synced every ``sync.interval`` in one process.

The loop reads like a template::

    while not stopping:
        claim due accounts, up to the free thread slots      (Scheduler.due + claim)
        sync each in a thread; record the result             (Scheduler.sync)
        sleep until a slot frees, the next account is due, or a stop is requested
    finish the accounts in hand, then return

Beside it, one thread sends the webhook deliveries that are due (:func:`sync.webhooks.deliver_due`)
every ``WEBHOOK_POLL`` seconds, at once again while a pass found something to send; a slow
receiver delays its own deliveries only (a pass serves subscriptions side by side), never a sync.

A third thread runs the processing mailboxes (:func:`sync.inbound.run_once`) every
``inbound.interval`` seconds; a mailbox that cannot be reached is recorded on it and tried again
on the next run.

Threads suit the work: a sync mostly waits on the mail server and the
database. Due times live in ``mail_accounts.next_sync_at`` (spread by
``sync.jitter``), so a restart does not resync everything at once; leases make
sure that no account is synced twice at the same time, even with several
worker processes on one database. If the database is unavailable the loop logs
it, waits and tries again; accounts in hand finish or fail on their own.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import utcnow
from sync.engine import AccountResult
from sync.inbound import run_once as run_inbound
from sync.scheduler import ResultSink, Scheduler
from sync.webhooks import deliver_due

log = logging.getLogger("postroom.worker")
IDLE_POLL = 5.0  # seconds between looks at the schedule when nothing is due sooner
DB_RETRY = (0.5, 5.0)  # wait after the database could not be reached: first, and at most (doubling)
REAP_EVERY = 10.0  # seconds between looks for leases of dead local workers
WEBHOOK_POLL = 1.0  # seconds between two passes over the due webhook deliveries


class Worker:
    def __init__(
        self,
        config: Config,
        sessions: sessionmaker[Session],
        *,
        owner: str | None = None,
        sink: ResultSink | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.scheduler = Scheduler(config, sessions, owner=owner, sink=sink)
        self.slots = config.sync.concurrency
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._running: dict[int, Future[AccountResult]] = {}
        self._lock = threading.Lock()
        self._next_reap = 0.0
        self.completed: list[AccountResult] = []  # results since start (tests and benchmarks read it)

    def stop(self) -> None:
        """Ask the loop to stop: no new accounts are claimed; those in hand finish."""
        self.stop_event.set()
        self._wake.set()

    def _sync_one(self, account_id: int) -> AccountResult:
        result = self.scheduler.sync(account_id)
        # an idle pass is routine (10,000 accounts make 80 a second): only changes and failures are news
        changed = result.skipped or any(f.new or f.changed or f.removed or f.bodies for f in result.folders)
        level = logging.WARNING if not result.ok else logging.INFO if changed else logging.DEBUG
        log.log(level, "%s", result.summary(), extra={"account_id": account_id})
        return result

    def _finished(self, account_id: int, future: Future[AccountResult]) -> None:
        with self._lock:
            self._running.pop(account_id, None)
            if not future.cancelled() and future.exception() is None:
                self.completed.append(future.result())
        if not future.cancelled() and future.exception() is not None:  # e.g. the database went away
            log.warning(
                "sync not started: %s", str(future.exception()).splitlines()[0], extra={"account_id": account_id}
            )
        self._wake.set()

    def _fill(self, pool: ThreadPoolExecutor) -> float:
        """Start due accounts in the free slots; returns how long to wait before the next look."""
        with self._lock:
            free = self.slots - len(self._running)
            busy = list(self._running)
        if free <= 0:
            return IDLE_POLL  # woken earlier when a slot frees
        self.scheduler.release_unrecorded()
        if time.monotonic() >= self._next_reap:
            self.scheduler.reap_dead_local_leases()
            self._next_reap = time.monotonic() + REAP_EVERY
        due, next_in = self.scheduler.due_and_next(utcnow(), free, exclude=busy)
        for account_id in due:
            future = pool.submit(self._sync_one, account_id)
            with self._lock:
                self._running[account_id] = future
            future.add_done_callback(functools.partial(self._finished, account_id))
        if len(due) == free:
            return IDLE_POLL
        return IDLE_POLL if next_in is None else min(IDLE_POLL, max(next_in, 0.01))

    def _webhooks(self, done: threading.Event) -> None:
        """Send due webhook deliveries until ``done`` (at least one pass); a failed pass is logged
        and retried."""
        while True:
            pause = WEBHOOK_POLL
            try:
                if deliver_due(self.sessions, self.config) > 0:
                    pause = 0.0  # more may be waiting (a pass takes a share of each subscription's)
            except SQLAlchemyError as exc:
                log.warning("webhook pass failed, database unavailable: %s", str(exc).splitlines()[0])
                pause = DB_RETRY[1]
            except Exception:  # a bug must not end the thread silently
                log.exception("webhook pass failed")
            if done.wait(pause):
                return

    def _inbound(self, done: threading.Event) -> None:
        """Run the processing mailboxes every ``inbound.interval`` until ``done`` (at least once)."""
        while True:
            try:
                result = run_inbound(self.config, self.sessions)
                if result.processed or result.failed:
                    log.info("processing mailboxes: %d processed, %d failed", result.processed, result.failed)
            except SQLAlchemyError as exc:
                log.warning("processing mailboxes not run, database unavailable: %s", str(exc).splitlines()[0])
            except Exception:  # a bug must not end the thread silently
                log.exception("processing mailboxes run failed")
            if done.wait(self.config.inbound.interval):
                return

    def run(self, max_passes: int | None = None) -> None:
        """Run until :meth:`stop` (or for ``max_passes`` loop turns, for tests)."""
        log.info(
            "worker %s started: every %gs, %d at a time", self.scheduler.owner, self.config.sync.interval, self.slots
        )
        turns = 0
        db_retry = DB_RETRY[0]
        webhooks_done = threading.Event()
        webhooks = threading.Thread(target=self._webhooks, args=(webhooks_done,), name="postroom-webhooks")
        webhooks.start()
        inbound = threading.Thread(target=self._inbound, args=(webhooks_done,), name="postroom-inbound")
        inbound.start()
        try:
            with ThreadPoolExecutor(self.slots, thread_name_prefix="postroom-sync") as pool:
                while not self.stop_event.is_set():
                    try:
                        pause = self._fill(pool)
                        db_retry = DB_RETRY[0]
                    except SQLAlchemyError as exc:  # often one dead pooled connection: retry soon, then back off
                        log.warning("database unavailable, retrying in %gs: %s", db_retry, str(exc).splitlines()[0])
                        pause, db_retry = db_retry, min(db_retry * 2, DB_RETRY[1])
                    turns += 1
                    if max_passes is not None and turns >= max_passes:
                        break
                    self._wake.wait(pause)
                    self._wake.clear()
                with self._lock:
                    in_hand = len(self._running)
                if in_hand:
                    log.info("finishing %d account(s) in hand", in_hand)
        finally:
            webhooks_done.set()
            webhooks.join()
            inbound.join()
        log.info("worker stopped")
