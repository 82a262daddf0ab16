"""The outbox's states and its rows as the commands show them (no sending here: see :mod:`sync.outbox`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import ColumnElement, Select, select, text
from sqlalchemy.orm import Session, sessionmaker

from postroom.errors import OutboxError
from postroom.models import OUTBOX_OPEN, MailAccount, OutboxMessage
from postroom.states import OutboxStatus


def open_rows(account_id: int) -> Select[Any]:
    """The worker's one query per pass: the account's rows not settled yet, and tracked sends
    still looking for copies in Sent. The condition is written out literally, exactly as the
    partial index ``ix_outbox_open`` is defined, so that SQLite and PostgreSQL (even with a
    generic plan) can prove the index applies."""
    return select(
        OutboxMessage.id,
        OutboxMessage.message_id,
        OutboxMessage.status,
        OutboxMessage.owner,
        OutboxMessage.claimed_until,
        OutboxMessage.checked_at,
        OutboxMessage.cleanup_until,
    ).where(OutboxMessage.account_id == account_id, text(f"({OUTBOX_OPEN})"))


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as the commands show it."""

    id: int
    account_id: int
    account_email: str
    message_id: str
    status: OutboxStatus
    recipients: tuple[str, ...]
    refused: Mapping[str, str]
    error: str | None
    subject: str
    attempts: int
    sent_copy_id: str | None
    created_at: datetime
    sent_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "account_id": self.account_id,
            "account_email": self.account_email,
            "status": str(self.status),
            "recipients": list(self.recipients),
            "refused": dict(self.refused),
            "error": self.error,
            "subject": self.subject,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
        }


def get_entry(sessions: sessionmaker[Session], outbox_id: int) -> OutboxEntry:
    with sessions() as s:
        found = entries(s, [OutboxMessage.id == outbox_id])
    if not found:
        raise OutboxError(f"No outbox message with id {outbox_id}.")
    return found[0]


def entries(session: Session, where: list[ColumnElement[bool]]) -> list[OutboxEntry]:
    rows = session.execute(
        select(OutboxMessage, MailAccount.email)
        .join(MailAccount, MailAccount.id == OutboxMessage.account_id)
        .where(*where)
        .order_by(OutboxMessage.id.desc())
    ).all()
    return [_entry(row, email) for row, email in rows]


def _entry(row: OutboxMessage, account_email: str) -> OutboxEntry:
    subject = BytesHeaderParser(policy=policy.default).parsebytes(row.raw).get("Subject", "")
    return OutboxEntry(
        id=row.id,
        account_id=row.account_id,
        account_email=account_email,
        message_id=row.message_id,
        status=OutboxStatus(row.status),
        recipients=tuple(row.recipients or ()),
        refused=dict(row.refused or {}),
        error=row.error,
        subject=str(subject),
        attempts=row.attempts or 0,
        sent_copy_id=row.sent_copy_id,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )
