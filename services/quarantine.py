"""Quarantined messages, as an operator deals with them: list them, and try them again after an
upgrade or a settings change (``postroom quarantine list`` / ``retry``). What quarantine is and
how the engine sets messages aside: :mod:`sync.quarantine`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.errors import UserError
from postroom.models import Email, Folder, HistoryEntry, MailAccount, MessageCopy, QuarantinedMessage, utcnow
from sync.engine import AccountResult
from sync.quarantine import Stage
from sync.scheduler import sync_all
from sync.store import chunks


@dataclass(frozen=True)
class QuarantineItem:
    """One entry of ``postroom quarantine list``."""

    id: int
    account_id: int
    account: str
    folder: str
    remote_id: str
    message_id: str | None
    stage: str
    reason: str
    attempts: int
    retry_requested: bool
    first_at: datetime
    at: datetime

    def as_json(self) -> dict[str, Any]:
        """``postroom quarantine list --json``: id, account, folder, Message-ID, reason, when (and more)."""
        return {
            "id": self.id,
            "account": self.account_id,
            "account_id": self.account_id,
            "account_email": self.account,
            "folder": self.folder,
            "remote_id": self.remote_id,
            "message_id": self.message_id,
            "stage": self.stage,
            "reason": self.reason,
            "when": self.at.isoformat(),
            "first_seen": self.first_at.isoformat(),
            "attempts": self.attempts,
            "retry_requested": self.retry_requested,
        }


def list_quarantined(session: Session, account_id: int | None = None) -> list[QuarantineItem]:
    """Every entry (or one account's), oldest first."""
    q = (
        select(
            QuarantinedMessage.id,
            QuarantinedMessage.account_id,
            MailAccount.email,
            Folder.name,
            QuarantinedMessage.remote_id,
            QuarantinedMessage.message_id,
            QuarantinedMessage.stage,
            QuarantinedMessage.reason,
            QuarantinedMessage.attempts,
            QuarantinedMessage.retry_requested,
            QuarantinedMessage.created_at,
            QuarantinedMessage.updated_at,
        )
        .join(MailAccount, MailAccount.id == QuarantinedMessage.account_id)
        .join(Folder, Folder.id == QuarantinedMessage.folder_id)
        .order_by(QuarantinedMessage.id)
    )
    if account_id is not None:
        q = q.where(QuarantinedMessage.account_id == account_id)
    return [QuarantineItem(*row) for row in session.execute(q).tuples()]


def request_retry(session: Session, account_id: int | None = None, ids: Sequence[int] = ()) -> list[int]:
    """Ask for another try of these entries (default: every one, or every one of the account).

    Headers entries are marked for the next pass; body entries are cleared, so the next pass
    fetches the body again. The accounts concerned are made due now. Returns their ids."""
    q = select(QuarantinedMessage.id, QuarantinedMessage.account_id, QuarantinedMessage.stage, MessageCopy.email_id)
    q = q.join(MessageCopy, MessageCopy.id == QuarantinedMessage.copy_id)
    if account_id is not None:
        q = q.where(QuarantinedMessage.account_id == account_id)
    if ids:
        q = q.where(QuarantinedMessage.id.in_(list(ids)))
    rows = session.execute(q).all()
    headers = [r.id for r in rows if r.stage == Stage.HEADERS.value]
    bodies = {r.email_id for r in rows if r.stage == Stage.BODY.value and r.email_id is not None}
    for part in chunks(headers):
        session.execute(
            update(QuarantinedMessage).where(QuarantinedMessage.id.in_(part)).values(retry_requested=True),
            execution_options={"synchronize_session": False},
        )
    for part in chunks(sorted(bodies)):
        in_history = select(HistoryEntry.email_id).where(HistoryEntry.email_id == Email.id).exists()
        session.execute(
            update(Email).where(Email.id.in_(part)).values(body_error=None, body_wanted=in_history),
            execution_options={"synchronize_session": False},
        )
        session.execute(
            update(MessageCopy).where(MessageCopy.email_id.in_(part)).values(quarantine_reason=None),
            execution_options={"synchronize_session": False},
        )
        session.execute(
            delete(QuarantinedMessage).where(
                QuarantinedMessage.stage == Stage.BODY.value,
                QuarantinedMessage.copy_id.in_(select(MessageCopy.id).where(MessageCopy.email_id.in_(part))),
            )
        )
    accounts = sorted({r.account_id for r in rows})
    if accounts:
        session.execute(  # due now (accounts waiting for a reconnect stay as they are)
            update(MailAccount)
            .where(MailAccount.id.in_(accounts), MailAccount.next_sync_at.is_not(None))
            .values(next_sync_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
    return accounts


@dataclass(frozen=True)
class RetryReport:
    """What ``postroom quarantine retry`` did: how many entries were tried, the accounts synced
    for them (None with ``sync=False``) and the entries still quarantined afterwards."""

    requested: int
    accounts: list[int]
    results: list[AccountResult] | None
    still: list[QuarantineItem]


def retry_quarantined(
    config: Config,
    sessions: sessionmaker[Session],
    account_id: int | None = None,
    ids: Sequence[int] = (),
    *,
    sync: bool = True,
) -> RetryReport:
    """Ask for another try of these entries (default all, or all of one account) and, with
    ``sync``, sync their accounts once now and report which are still quarantined."""
    with sessions.begin() as s:
        before = [i for i in list_quarantined(s, account_id=account_id) if not ids or i.id in ids]
        missing = sorted(set(ids) - {i.id for i in before})
        if missing:
            raise UserError(f"No quarantined message with id {missing[0]}.", "id")
        accounts = request_retry(s, account_id=account_id, ids=[i.id for i in before])
    if not before or not sync:
        return RetryReport(len(before), accounts, None, [])
    results = [r for a in accounts for r in sync_all(config, sessions, a)]
    asked = {(i.account_id, i.folder, i.remote_id) for i in before}
    with sessions() as s:
        still = [
            i
            for a in accounts
            for i in list_quarantined(s, account_id=a)
            if (i.account_id, i.folder, i.remote_id) in asked
        ]
    return RetryReport(len(before), accounts, results, still)
