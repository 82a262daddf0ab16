"""Applicants and their email history, as a user deals with them: add one (their history is
backfilled from the header index at once), read an applicant's history.

Addresses are stored with their canonical form (:func:`postroom.addresses.canonical_address`),
so a message matches however the applicant spelled their address; one history entry per
applicant per message, whichever mailboxes saw it (sync.history records them while syncing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address, normalise_address
from postroom.errors import ApplicantError
from postroom.models import Applicant, ApplicantAddress, Email, HistoryEntry, MessageCopy
from sync.history import backfill
from sync.store import chunks, default_org


def add_applicant(session: Session, name: str, addresses: Sequence[str]) -> tuple[Applicant, int]:
    """Create an applicant and backfill their history; returns (applicant, entries backfilled)."""
    if not name.strip():
        raise ApplicantError("An applicant needs a name.", "name")
    if not addresses:
        raise ApplicantError("An applicant needs at least one email address.", "email")
    org = default_org(session)
    canon: dict[str, str] = {}
    for addr in addresses:
        c = canonical_address(addr)
        if c is None:
            raise ApplicantError(f"{addr!r} is not an email address.", "email")
        canon.setdefault(c, normalise_address(addr))
    taken = session.execute(
        select(ApplicantAddress.address, Applicant.name)
        .join(Applicant)
        .where(ApplicantAddress.org_id == org.id, ApplicantAddress.canonical.in_(list(canon)))
    ).first()
    if taken is not None:
        raise ApplicantError(f"The address {taken[0]} already belongs to applicant {taken[1]!r}.", "email")
    applicant = Applicant(org_id=org.id, name=name.strip())
    session.add(applicant)
    session.flush()
    for c, addr in canon.items():
        session.add(ApplicantAddress(org_id=org.id, applicant_id=applicant.id, address=addr, canonical=c))
    session.flush()
    return applicant, backfill(session, org.id, list(canon))


@dataclass(frozen=True)
class HistoryItem:
    message_id: str
    thread_id: int | None
    date: datetime | None
    direction: str
    subject: str
    account_ids: list[int]

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "thread_id": self.thread_id,
            "date": self.date.isoformat() if self.date else None,
            "direction": self.direction,
            "subject": self.subject,
            "account_ids": self.account_ids,
        }


def applicant_history(session: Session, applicant_id: int) -> list[HistoryItem]:
    """The applicant's messages, oldest first, each once, with the accounts that hold it."""
    if session.get(Applicant, applicant_id) is None:
        raise ApplicantError(f"No applicant with id {applicant_id}.", "applicant")
    rows = session.execute(
        select(
            Email.id, Email.message_id, Email.thread_id, HistoryEntry.occurred_at, HistoryEntry.direction, Email.subject
        )
        .join(HistoryEntry, HistoryEntry.email_id == Email.id)
        .where(HistoryEntry.applicant_id == applicant_id)
        .order_by(func.coalesce(HistoryEntry.occurred_at, Email.created_at), Email.id)
    ).all()
    accounts: dict[int, set[int]] = {}
    for part in chunks([r[0] for r in rows]):
        for eid, aid in session.execute(
            select(MessageCopy.email_id, MessageCopy.account_id).where(MessageCopy.email_id.in_(part)).distinct()
        ):
            accounts.setdefault(eid, set()).add(aid)
    return [
        HistoryItem(mid, tid, date, direction, subject, sorted(accounts.get(eid, ())))
        for eid, mid, tid, date, direction, subject in rows
    ]
