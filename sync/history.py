"""Applicants and their email history.

An applicant has several addresses; each is stored with its canonical form
(:func:`postroom.addresses.canonical_address`), and messages are matched through
the ``participants`` index of canonical addresses. There is one history entry
per applicant per distinct message (Email), however many mailboxes saw it.
Direction is ``outbound`` when the sender is one of the organisation's own
connected mailboxes, ``inbound`` otherwise.

Adding an applicant (services.applicants) backfills their history from the header
index at once (:func:`backfill`), without touching any mail server; bodies for the
newly relevant messages are fetched by the next sync pass (body policy ``applicants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address
from postroom.models import ApplicantAddress, Email, HistoryEntry, MailAccount, Participant
from sync.store import chunks, insert_ignore

# (email id, date, canonical participant addresses, canonical sender)
MatchItem = tuple[int, datetime | None, Sequence[str], str | None]


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
        add_entries(self.s, rows)
        return len(rows)


def add_entries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """History entries (``applicant_id``, ``email_id``, ``direction``, ``occurred_at``), each
    once; their bodies become wanted (the "applicants" body policy fetches them, sync.bodies)."""
    insert_ignore(session, HistoryEntry.__table__, rows, ("applicant_id", "email_id"))
    for part in chunks(sorted({r["email_id"] for r in rows})):
        session.execute(
            update(Email)
            .where(Email.id.in_(part), Email.body_id.is_(None), Email.body_error.is_(None))
            .values(body_wanted=True)
            .execution_options(synchronize_session=False)
        )


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
