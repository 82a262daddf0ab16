"""Applicants and their email history, as a user deals with them: add one (their history is
backfilled from the header index at once), list and search them a page at a time, read one,
edit their name and addresses, read their history and their timeline
(:func:`applicant_timeline`, built in :mod:`services.timeline`).

Addresses are stored with their canonical form (:func:`postroom.addresses.canonical_address`),
so a message matches however the applicant spelled their address; one history entry per
applicant per message, whichever mailboxes saw it (sync.history records them while syncing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address, normalise_address
from postroom.errors import ApplicantError
from postroom.models import Applicant, ApplicantAddress, Email, HistoryEntry, MessageCopy, OutboxMessage, Participant
from services.orgs import resolve_org
from services.paging import Page, clamp
from services.timeline import TimelineItem, applicant_timeline
from sync.history import backfill
from sync.store import chunks

__all__ = [
    "ApplicantDetail",
    "ApplicantSummary",
    "HistoryItem",
    "TimelineItem",
    "add_applicant",
    "applicant_history",
    "applicant_timeline",
    "get_applicant",
    "list_applicants",
    "update_applicant",
]


def add_applicant(
    session: Session, name: str, addresses: Sequence[str], org_id: int | None = None
) -> tuple[Applicant, int]:
    """Create an applicant of organisation ``org_id`` (None: the default one) and backfill their
    history; returns (applicant, entries backfilled)."""
    if not name.strip():
        raise ApplicantError("An applicant needs a name.", "name")
    if not addresses:
        raise ApplicantError("An applicant needs at least one email address.", "email")
    org = resolve_org(session, org_id)
    canon: dict[str, str] = {}
    for addr in addresses:
        c = canonical_address(addr)
        if c is None:
            raise ApplicantError(f"{addr!r} is not an email address.", "email")
        canon.setdefault(c, normalise_address(addr))
    taken = session.execute(
        select(ApplicantAddress.address, Applicant.name)
        .join(Applicant)
        .where(ApplicantAddress.org_id == org, ApplicantAddress.canonical.in_(list(canon)))
    ).first()
    if taken is not None:
        raise ApplicantError(f"The address {taken[0]} already belongs to applicant {taken[1]!r}.", "email")
    applicant = Applicant(org_id=org, name=name.strip())
    session.add(applicant)
    session.flush()
    for c, addr in canon.items():
        session.add(ApplicantAddress(org_id=org, applicant_id=applicant.id, address=addr, canonical=c))
    session.flush()
    return applicant, backfill(session, org, list(canon))


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


def applicant_history(session: Session, applicant_id: int, org_id: int | None = None) -> list[HistoryItem]:
    """The applicant's messages, oldest first, each once, with the accounts that hold it. With
    ``org_id``, an applicant of another organisation is "no applicant", as a missing one is."""
    applicant = session.get(Applicant, applicant_id)
    if applicant is None or (org_id is not None and applicant.org_id != org_id):
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


# --------------------------------------------------------------------------- listing, reading, editing


@dataclass(frozen=True)
class ApplicantSummary:
    """An applicant as a list shows them: addresses as entered, how many messages, the latest."""

    id: int
    name: str
    addresses: list[str]
    messages: int
    last_message_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "addresses": self.addresses,
            "messages": self.messages,
            "last_message_at": self.last_message_at.isoformat() if self.last_message_at else None,
        }


@dataclass(frozen=True)
class ApplicantDetail(ApplicantSummary):
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {**super().as_json(), "created_at": self.created_at.isoformat()}


def _like(text: str) -> str:
    """``%text%`` for LIKE, with LIKE's own wildcards in ``text`` taken literally (escape ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def list_applicants(
    session: Session, org_id: int, *, query: str | None = None, offset: int = 0, limit: int = 50
) -> Page[ApplicantSummary]:
    """The organisation's applicants by name, a page at a time; with ``query``, only those whose
    name or one of whose addresses contains it, case-insensitively. Four queries a page."""
    offset, limit = clamp(offset, limit)
    where = [Applicant.org_id == org_id]
    words = " ".join((query or "").split())
    if words:
        pattern = _like(words)
        by_address = select(ApplicantAddress.applicant_id).where(
            ApplicantAddress.org_id == org_id,
            or_(
                func.lower(ApplicantAddress.address).like(pattern, escape="\\"),
                ApplicantAddress.canonical.like(pattern, escape="\\"),
            ),
        )
        where.append(or_(func.lower(Applicant.name).like(pattern, escape="\\"), Applicant.id.in_(by_address)))
    total = int(session.scalar(select(func.count()).select_from(Applicant).where(*where)) or 0)
    rows = session.execute(
        select(Applicant.id, Applicant.name)
        .where(*where)
        .order_by(func.lower(Applicant.name), Applicant.id)
        .offset(offset)
        .limit(limit)
    ).all()
    ids = [r[0] for r in rows]
    addresses, counts = _addresses_and_counts(session, ids)
    items = [ApplicantSummary(aid, name, addresses.get(aid, []), *counts.get(aid, (0, None))) for aid, name in rows]
    return Page(items, total, offset, limit)


def _addresses_and_counts(
    session: Session, ids: Sequence[int]
) -> tuple[dict[int, list[str]], dict[int, tuple[int, datetime | None]]]:
    """Addresses (as entered, in the order added) and (messages, latest) of these applicants."""
    addresses: dict[int, list[str]] = {}
    counts: dict[int, tuple[int, datetime | None]] = {}
    if not ids:
        return addresses, counts
    for aid, address in session.execute(
        select(ApplicantAddress.applicant_id, ApplicantAddress.address)
        .where(ApplicantAddress.applicant_id.in_(ids))
        .order_by(ApplicantAddress.id)
    ):
        addresses.setdefault(aid, []).append(address)
    for aid, n, last in session.execute(
        select(HistoryEntry.applicant_id, func.count(), func.max(HistoryEntry.occurred_at))
        .where(HistoryEntry.applicant_id.in_(ids))
        .group_by(HistoryEntry.applicant_id)
    ):
        counts[aid] = (int(n), last)
    return addresses, counts


def _owned(session: Session, org_id: int, applicant_id: int) -> Applicant:
    """The applicant, if organisation ``org_id`` has them; another organisation's is missing."""
    applicant = session.get(Applicant, applicant_id)
    if applicant is None or applicant.org_id != org_id:
        raise ApplicantError(f"No applicant with id {applicant_id}.", "applicant")
    return applicant


def get_applicant(session: Session, org_id: int, applicant_id: int) -> ApplicantDetail:
    """One applicant of the organisation, with their addresses and message count."""
    applicant = _owned(session, org_id, applicant_id)
    addresses, counts = _addresses_and_counts(session, [applicant.id])
    n, last = counts.get(applicant.id, (0, None))
    return ApplicantDetail(applicant.id, applicant.name, addresses.get(applicant.id, []), n, last, applicant.created_at)


def update_applicant(
    session: Session,
    org_id: int,
    applicant_id: int,
    *,
    name: str | None = None,
    addresses: Sequence[str] | None = None,
) -> ApplicantDetail:
    """Rename the applicant and/or replace their set of addresses (None: unchanged).

    An address another applicant of the organisation has is refused, naming it and them. A new
    address brings its messages into the history at once (backfilled from the header index); a
    removed one takes out the messages that only it matched (a message that also involves one of
    the remaining addresses stays, and so do the messages Postroom sent for the applicant and
    the answers to them, whatever address they involve)."""
    applicant = _owned(session, org_id, applicant_id)
    if name is not None:
        if not name.strip():
            raise ApplicantError("An applicant needs a name.", "name")
        if len(name.strip()) > 200:
            raise ApplicantError("A name must be at most 200 characters.", "name")
        applicant.name = name.strip()
    if addresses is not None:
        _replace_addresses(session, org_id, applicant, addresses)
    session.flush()
    return get_applicant(session, org_id, applicant_id)


def _replace_addresses(session: Session, org_id: int, applicant: Applicant, addresses: Sequence[str]) -> None:
    wanted: dict[str, str] = {}
    for addr in addresses:
        if not addr.strip():
            continue
        c = canonical_address(addr)
        if c is None:
            raise ApplicantError(f"{addr.strip()!r} is not an email address.", "addresses")
        wanted.setdefault(c, normalise_address(addr))
    if not wanted:
        raise ApplicantError("An applicant needs at least one email address.", "addresses")
    taken = session.execute(
        select(ApplicantAddress.address, Applicant.name)
        .join(Applicant)
        .where(
            ApplicantAddress.org_id == org_id,
            ApplicantAddress.canonical.in_(list(wanted)),
            ApplicantAddress.applicant_id != applicant.id,
        )
    ).first()
    if taken is not None:
        raise ApplicantError(f"The address {taken[0]} already belongs to applicant {taken[1]!r}.", "addresses")
    current = {
        a.canonical: a
        for a in session.scalars(select(ApplicantAddress).where(ApplicantAddress.applicant_id == applicant.id))
    }
    removed = [c for c in current if c not in wanted]
    added = [c for c in wanted if c not in current]
    for c in removed:
        session.delete(current[c])
    for c, addr in wanted.items():
        if c in current:
            current[c].address = addr  # the spelling may change, the person does not
        else:
            session.add(ApplicantAddress(org_id=org_id, applicant_id=applicant.id, address=addr, canonical=c))
    session.flush()
    if removed:
        _drop_history(session, org_id, applicant.id, removed, list(wanted))
    if added:
        backfill(session, org_id, added)


def _drop_history(session: Session, org_id: int, applicant_id: int, removed: list[str], kept: list[str]) -> None:
    """History entries that only the removed addresses matched."""
    involves = lambda addrs: exists().where(  # noqa: E731
        Participant.email_id == HistoryEntry.email_id, Participant.org_id == org_id, Participant.address.in_(addrs)
    )
    sent_for_them = select(OutboxMessage.message_id).where(OutboxMessage.applicant_id == applicant_id)
    ours = select(Email.id).where(Email.org_id == org_id, Email.message_id.in_(sent_for_them))
    session.execute(
        delete(HistoryEntry)
        .where(
            HistoryEntry.applicant_id == applicant_id,
            involves(removed),
            ~involves(kept),
            HistoryEntry.email_id.not_in(ours),
        )
        .execution_options(synchronize_session=False)
    )
