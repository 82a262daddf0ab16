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

Mail from an applicant met for the first time by a sync is announced as ``message.received``
(:func:`announce_received`), once per message per organisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address
from postroom.models import ApplicantAddress, Email, HistoryEntry, MailAccount, Participant
from postroom.states import WebhookEvent
from sync.store import chunks, insert_ignore
from sync.webhooks import emit

# (email id, date, canonical participant addresses, canonical sender)
MatchItem = tuple[int, datetime | None, Sequence[str], str | None]


def own_addresses(session: Session, org_id: int) -> frozenset[str]:
    """Canonical addresses of every mailbox the organisation has connected."""
    emails = session.scalars(select(MailAccount.email).where(MailAccount.org_id == org_id))
    return frozenset(c for c in (canonical_address(e) for e in emails) if c)


class HistoryWriter:
    """Records history entries for newly indexed messages inside the caller's transaction.

    After :meth:`record`, ``senders`` maps each email sent from an applicant's address to that
    applicant (what ``message.received`` names)."""

    def __init__(self, session: Session, org_id: int) -> None:
        self.s = session
        self.org_id = org_id
        self._own: frozenset[str] | None = None
        self.senders: dict[int, int] = {}

    def record(self, items: Sequence[MatchItem]) -> list[dict[str, Any]]:
        """Add the history entries of these emails; returns them (those already there included)."""
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
            return []
        if self._own is None:
            self._own = own_addresses(self.s, self.org_id)
        rows: list[dict[str, Any]] = []
        for email_id, date, parts, sender in items:
            direction = "outbound" if sender in self._own else "inbound"
            if direction == "inbound" and sender in owner:
                self.senders[email_id] = owner[sender]
            for applicant_id in {owner[a] for a in parts if a in owner}:
                rows.append(
                    {"applicant_id": applicant_id, "email_id": email_id, "direction": direction, "occurred_at": date}
                )
        add_entries(self.s, rows)
        return rows


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


def announce_received(
    session: Session,
    org_id: int,
    account_id: int,
    entries: Sequence[dict[str, Any]],
    inserted: Mapping[int, Mapping[str, Any]],
    senders: Mapping[int, int],
) -> int:
    """Announce ``message.received`` for each email this transaction inserted (``inserted``:
    email id -> its row) that joined an applicant's history as inbound mail (``entries``).

    Once per message per organisation: an email is inserted once (the index is keyed by
    Message-ID and fingerprint per organisation), so a second mailbox's copy, a resync or a
    batch repeated after a crash finds it indexed and announces nothing; neither does
    :func:`backfill` (mail from before the applicant was added). Returns how many were
    announced. ``applicant_id`` is the applicant who sent it (``senders``), else the one whose
    history it joined first (an answer from another address to a message sent for them)."""
    joined: dict[int, list[int]] = {}
    for e in entries:
        if e["direction"] == "inbound" and e["email_id"] in inserted:
            applicants = joined.setdefault(e["email_id"], [])
            if e["applicant_id"] not in applicants:
                applicants.append(e["applicant_id"])
    for email_id, applicants in joined.items():
        row = inserted[email_id]
        date = row.get("sent_at")
        emit(
            session,
            org_id,
            WebhookEvent.MESSAGE_RECEIVED,
            {
                "message_id": email_id,
                "applicant_id": senders.get(email_id, applicants[0]),
                "applicant_ids": sorted(applicants),
                "account_id": account_id,
                "thread_id": row.get("thread_id"),
                "from": row.get("from_addr"),
                "subject": row.get("subject", ""),
                "date": date.isoformat() if date is not None else None,
            },
        )
    return len(joined)


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
    return len(HistoryWriter(session, org_id).record(items))
