"""The outbox's rows: compare-and-set on their states, and the rows as the commands show them
(no sending here: see :mod:`sync.outbox` and :mod:`sync.tracked`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import ColumnElement, Select, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.errors import OutboxError
from postroom.models import OUTBOX_OPEN, MailAccount, OutboxMessage, OutboxRecipient
from postroom.states import OutboxStatus

log = logging.getLogger("postroom.outbox")

SEND_CLAIM = timedelta(minutes=10)  # a row in ``sending`` longer than this is taken for abandoned
MAX_ATTEMPTS = 8  # tries before a message that keeps failing safely is failed
BACKOFF_BASE, BACKOFF_MAX = timedelta(minutes=1), timedelta(hours=1)


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
        OutboxMessage.tracked,
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
    # recipients a delivery status notification named: address -> {"status", "reason", "bounced_at"}
    bounced: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

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
            "bounced": {address: dict(b) for address, b in self.bounced.items()},
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
    bounced: dict[int, dict[str, dict[str, str | None]]] = {}
    ids = [row.id for row, _ in rows]
    for part in range(0, len(ids), 1000):
        for oid, address, at, status, reason in session.execute(
            select(
                OutboxRecipient.outbox_id,
                OutboxRecipient.address,
                OutboxRecipient.bounced_at,
                OutboxRecipient.bounce_status,
                OutboxRecipient.bounce_reason,
            )
            .where(OutboxRecipient.outbox_id.in_(ids[part : part + 1000]), OutboxRecipient.bounced_at.is_not(None))
            .order_by(OutboxRecipient.id)
        ):
            bounced.setdefault(oid, {})[address] = {"status": status, "reason": reason, "bounced_at": at.isoformat()}
    return [_entry(row, email, bounced.get(row.id, {})) for row, email in rows]


def _entry(row: OutboxMessage, account_email: str, bounced: Mapping[str, Mapping[str, str | None]]) -> OutboxEntry:
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
        bounced=bounced,
    )


def cas(
    s: Session, outbox_id: int, expected: Sequence[OutboxStatus], *conditions: ColumnElement[bool], **values: Any
) -> bool:
    """Compare-and-set: ``UPDATE outbox SET ... WHERE id = :id AND status IN (:expected) AND ...``;
    True if this call changed the row."""
    res = s.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, OutboxMessage.status.in_([str(e) for e in expected]), *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def record(sessions: sessionmaker[Session], outbox_id: int, me: str, **values: Any) -> None:
    """Write a submission's outcome if ``me`` still holds the row (``sending``, or
    ``uncertain`` if it was taken for abandoned meanwhile)."""
    with sessions.begin() as s:
        if not cas(s, outbox_id, [OutboxStatus.SENDING, OutboxStatus.UNCERTAIN], OutboxMessage.owner == me, **values):
            log.warning("outbox row %d changed hands while it was sent; %s not recorded", outbox_id, values["status"])


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))


def cas_recipient(
    s: Session, recipient_id: int, expected: Sequence[OutboxStatus], *conditions: ColumnElement[bool], **values: Any
) -> bool:
    """Compare-and-set on one recipient of a tracked send, as :func:`cas` on a message."""
    res = s.execute(
        update(OutboxRecipient)
        .where(OutboxRecipient.id == recipient_id, OutboxRecipient.status.in_([str(e) for e in expected]), *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]
