"""The embedded scheduler: syncs every account every ``sync.interval`` until stopped.

The loop reads like a template: claim due accounts, sync one, record the
result, sleep until the next one is due. Due times live in
``mail_accounts.next_sync_at``, so a restart does not resync everything at
once. A stop request (SIGTERM, Ctrl-C) lets the account in hand finish, then
the loop exits.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import MailAccount
from sync.engine import AccountResult, sync_account

log = logging.getLogger("postroom.worker")
IDLE_POLL = 5.0  # seconds between checks for due accounts when none is due sooner


class Worker:
    def __init__(self, config: Config, sessions: sessionmaker[Session]) -> None:
        self.config = config
        self.sessions = sessions
        self.stop_event = threading.Event()
        self.passes = 0

    def stop(self) -> None:
        self.stop_event.set()

    def due_accounts(self, now: datetime) -> list[int]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(MailAccount.id)
                    .where(
                        MailAccount.status.notin_(("disabled", "reconnect-needed")),
                        or_(MailAccount.next_sync_at.is_(None), MailAccount.next_sync_at <= now),
                    )
                    .order_by(MailAccount.next_sync_at.is_not(None), MailAccount.next_sync_at, MailAccount.id)
                )
            )

    def seconds_until_next(self, now: datetime) -> float:
        with self.sessions() as s:
            nxt = s.scalar(
                select(MailAccount.next_sync_at)
                .where(MailAccount.status.notin_(("disabled", "reconnect-needed")))
                .order_by(MailAccount.next_sync_at)
            )
        if nxt is None:
            return IDLE_POLL
        return max(0.0, min(IDLE_POLL, (nxt - now).total_seconds()))

    def run_once(self) -> list[AccountResult]:
        results = []
        for account_id in self.due_accounts(datetime.now(UTC)):
            if self.stop_event.is_set():
                break
            result = sync_account(self.config, self.sessions, account_id)
            results.append(result)
            (log.info if result.ok else log.warning)("%s", result.summary(), extra={"account_id": account_id})
            with self.sessions.begin() as s:
                s.execute(
                    update(MailAccount)
                    .where(MailAccount.id == account_id)
                    .values(next_sync_at=datetime.now(UTC) + timedelta(seconds=self.config.sync.interval))
                )
        self.passes += 1
        return results

    def run(self) -> None:
        log.info("worker started; syncing every %gs", self.config.sync.interval)
        while not self.stop_event.is_set():
            self.run_once()
            self.stop_event.wait(self.seconds_until_next(datetime.now(UTC)))
        log.info("worker stopped")
