"""Applicants and their email history.

An applicant has several addresses; each is stored with its canonical form
(:func:`postroom.addresses.canonical_address`), and messages are matched through
the ``participants`` index of canonical addresses. There is one history entry
per applicant per distinct message (Email), however many mailboxes saw it.
Direction is ``outbound`` when the sender is one of the organisation's own
connected mailboxes, ``inbound`` otherwise.

Adding an applicant backfills their history from the header index at once,
without touching any mail server; bodies for the newly relevant messages are
fetched by the next sync pass (body policy ``applicants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address, normalise_address
from postroom.models import Applicant, ApplicantAddress, Email, HistoryEntry, MailAccount, MessageCopy, Participant
from sync.store import chunks, default_org, insert_ignore

# (email id, date, canonical participant addresses, canonical sender)
MatchItem = tuple[int, datetime | None, Sequence[str], str | None]


class ApplicantError(Exception):
    """An applicant request that cannot be carried out; the message says why."""


def own_addresses(session: Session, org_id: int) -> frozenset[str]:
    """Canonical addresses of every mailbox the organisation has connected."""
    emails = session.scalars(select(MailAccount.email).where(MailAccount.org_id == org_id))
    return frozenset(c for c in (canonical_address(e) for e in emails) if c)


class HistoryWriter:
    """Records history entries for newly indexed messages inside the caller's transaction."""

    def __init__(self, session: Session, org_id: int) -> None:
        self.s = session
        self.org_id = org_id
        self._own: frozenset[str] | None = None

    def record(self, items: Sequence[MatchItem]) -> int:
        addrs = list({a for _, _, parts, _ in items for a in parts})
        owner: dict[str, int] = {}
        for part in chunks(addrs):
            found = self.s.execute(
                select(ApplicantAddress.canonical, ApplicantAddress.applicant_id).where(
                    ApplicantAddress.org_id == self.org_id, ApplicantAddress.canonical.in_(part)
                )
            )
            owner.update(dict(found.tuples().all()))
        if not owner:
            return 0
        if self._own is None:
            self._own = own_addresses(self.s, self.org_id)
        rows: list[dict[str, Any]] = []
        for email_id, date, parts, sender in items:
            direction = "outbound" if sender in self._own else "inbound"
            for applicant_id in {owner[a] for a in parts if a in owner}:
                rows.append(
                    {"applicant_id": applicant_id, "email_id": email_id, "direction": direction, "occurred_at": date}
                )
        insert_ignore(self.s, HistoryEntry.__table__, rows, ("applicant_id", "email_id"))
        wanted = sorted({r["email_id"] for r in rows})
        for part in chunks(wanted):  # the "applicants" body policy fetches these (sync.bodies)
            self.s.execute(
                update(Email)
                .where(Email.id.in_(part), Email.body_id.is_(None), Email.body_error.is_(None))
                .values(body_wanted=True)
                .execution_options(synchronize_session=False)
            )
        return len(rows)


def add_applicant(session: Session, name: str, addresses: Sequence[str]) -> tuple[Applicant, int]:
    """Create an applicant and backfill their history; returns (applicant, entries backfilled)."""
    if not name.strip():
        raise ApplicantError("An applicant needs a name.")
    if not addresses:
        raise ApplicantError("An applicant needs at least one email address.")
    org = default_org(session)
    canon: dict[str, str] = {}
    for addr in addresses:
        c = canonical_address(addr)
        if c is None:
            raise ApplicantError(f"{addr!r} is not an email address.")
        canon.setdefault(c, normalise_address(addr))
    taken = session.execute(
        select(ApplicantAddress.address, Applicant.name)
        .join(Applicant)
        .where(ApplicantAddress.org_id == org.id, ApplicantAddress.canonical.in_(list(canon)))
    ).first()
    if taken is not None:
        raise ApplicantError(f"The address {taken[0]} already belongs to applicant {taken[1]!r}.")
    applicant = Applicant(org_id=org.id, name=name.strip())
    session.add(applicant)
    session.flush()
    for c, addr in canon.items():
        session.add(ApplicantAddress(org_id=org.id, applicant_id=applicant.id, address=addr, canonical=c))
    session.flush()
    return applicant, backfill(session, org.id, list(canon))


def backfill(session: Session, org_id: int, canonical: Sequence[str]) -> int:
    """History entries for already-indexed messages involving these canonical addresses."""
    email_ids = list(
        session.scalars(
            select(Participant.email_id)
            .where(Participant.org_id == org_id, Participant.address.in_(list(canonical)))
            .distinct()
        )
    )
    items: list[MatchItem] = []
    for part in chunks(email_ids):
        rows = session.execute(select(Email.id, Email.sent_at, Email.from_addr).where(Email.id.in_(part))).all()
        parts: dict[int, list[str]] = {}
        for eid, addr in session.execute(
            select(Participant.email_id, Participant.address).where(Participant.email_id.in_(part))
        ):
            parts.setdefault(eid, []).append(addr)
        items += [(eid, sent, parts.get(eid, []), canonical_address(frm) if frm else None) for eid, sent, frm in rows]
    return HistoryWriter(session, org_id).record(items)


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
        raise ApplicantError(f"No applicant with id {applicant_id}.")
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
