"""An applicant's timeline: every message with them across all the organisation's mailboxes,
each once, oldest first, with how the messages Postroom sent have fared.

Each item is one :class:`~postroom.models.Email` of the applicant's history (there is one per
distinct message, however many recruiters' mailboxes hold it), with the mailboxes that hold it,
its direction, its thread, a snippet and whether it has attachments (both kept with the stored
body, :func:`postroom.message_parts.preview`; "" and None while the body is not downloaded).

A message Postroom sent (an outbound message whose Message-ID is an outbox message's, or one
recipient's own copy's) carries its tracking: per recipient a
:class:`DeliveryState` and the counts behind it. Opens and clicks are people's only (the
verdicts of :mod:`postroom.hits`, as :func:`services.tracking.tracking_report` counts them; a
person's click proves an open); machine opens and clicks (image proxies, Apple's privacy
relay, scanners) are counted apart and never make a message "opened".

The whole timeline takes at most six queries (the applicant; the messages with their snippets;
the mailboxes holding them; the outbox messages among the outbound ones, found through a
subquery of the history rather than a list of Message-IDs, whose thousand bound parameters
cost more to render and parse than the query takes; their recipients; their hit counts,
grouped in the database), read as Core rows: no query per message, no ORM objects, and no
MIME parsed. Snippets and attachment counts are columns of the stored body (written by
:mod:`sync.bodies`), because parsing a thousand bodies on every view would cost a second, not
milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from postroom.errors import ApplicantError
from postroom.models import (
    Applicant,
    Body,
    Email,
    HistoryEntry,
    MailAccount,
    MessageCopy,
    OutboxMessage,
    OutboxRecipient,
    TrackingEvent,
)
from postroom.states import HitKind, OutboxStatus, RecipientKind

__all__ = ["AccountRef", "DeliveryState", "RecipientTracking", "SentTracking", "TimelineItem", "applicant_timeline"]


class DeliveryState(enum.StrEnum):
    """How one recipient's copy of a message sent from Postroom has fared, the furthest step
    first: a reply outranks a click, a click an open, an open an automatic reply."""

    QUEUED = "queued"
    SENDING = "sending"
    UNCERTAIN = "uncertain"  # may or may not have gone out (see the outbox)
    FAILED = "failed"  # not sent
    BOUNCED = "bounced"  # the server refused this recipient
    SENT = "sent"
    AUTO_REPLIED = "auto_replied"  # an automatic answer (out of office): never a reply
    OPENED = "opened"  # by a person
    CLICKED = "clicked"  # by a person
    REPLIED = "replied"


@dataclass(frozen=True)
class AccountRef:
    id: int
    email: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email}


@dataclass(frozen=True)
class RecipientTracking:
    """One recipient of a message sent from Postroom. ``opens``/``clicks`` are people's;
    ``machine_opens``/``machine_clicks`` are the hits judged a machine's, shown apart."""

    address: str
    kind: str  # to | cc | bcc
    state: DeliveryState
    opens: int = 0
    clicks: int = 0
    machine_opens: int = 0
    machine_clicks: int = 0
    replied_at: datetime | None = None
    auto_replied_at: datetime | None = None
    error: str | None = None
    bounced_at: datetime | None = None  # a delivery status notification named them (processing mailbox)
    bounce_status: str | None = None  # its RFC 3463 status, e.g. "5.1.1"

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind,
            "state": self.state.value,
            "opens": self.opens,
            "clicks": self.clicks,
            "machine_opens": self.machine_opens,
            "machine_clicks": self.machine_clicks,
            "replied_at": _iso(self.replied_at),
            "auto_replied_at": _iso(self.auto_replied_at),
            "error": self.error,
            "bounced_at": _iso(self.bounced_at),
            "bounce_status": self.bounce_status,
        }


@dataclass(frozen=True)
class SentTracking:
    """A message Postroom sent: its outbox row, whether it was tracked (only then are opens and
    clicks known), and each recipient's state."""

    outbox_id: int
    status: str
    tracked: bool
    recipients: list[RecipientTracking]

    def as_json(self) -> dict[str, Any]:
        return {
            "outbox_id": self.outbox_id,
            "status": self.status,
            "tracked": self.tracked,
            "recipients": [r.as_json() for r in self.recipients],
        }


@dataclass(frozen=True)
class TimelineItem:
    email_id: int
    message_id: str
    thread_id: int | None
    date: datetime | None
    direction: str  # in | out
    subject: str
    from_name: str
    from_address: str | None
    snippet: str
    accounts: list[AccountRef]
    has_attachments: bool | None  # None: not known (the body is not downloaded)
    tracking: SentTracking | None
    body_stored: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "email_id": self.email_id,
            "message_id": self.message_id,
            "thread_id": self.thread_id,
            "date": _iso(self.date),
            "direction": self.direction,
            "subject": self.subject,
            "from": {"name": self.from_name, "address": self.from_address},
            "snippet": self.snippet,
            "accounts": [a.as_json() for a in self.accounts],
            "has_attachments": self.has_attachments,
            "body_stored": self.body_stored,
            "tracking": self.tracking.as_json() if self.tracking else None,
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def applicant_timeline(session: Session, org_id: int, applicant_id: int) -> list[TimelineItem]:
    """Every message with the applicant, once, oldest first (see the module docstring). An
    applicant of another organisation raises the same :class:`ApplicantError` as a missing one."""
    conn = session.connection()  # Core rows: a thousand of them cost no ORM bookkeeping
    found = conn.execute(select(Applicant.id).where(Applicant.id == applicant_id, Applicant.org_id == org_id))
    if found.first() is None:
        raise ApplicantError(f"No applicant with id {applicant_id}.", "applicant")
    rows = conn.execute(
        select(
            Email.id,
            Email.message_id,
            Email.thread_id,
            func.coalesce(HistoryEntry.occurred_at, Email.sent_at),
            HistoryEntry.direction,
            Email.subject,
            Email.from_name,
            Email.from_addr,
            Email.body_id,
            Body.snippet,
            Body.attachments,
        )
        .join(HistoryEntry, HistoryEntry.email_id == Email.id)
        .outerjoin(Body, Body.id == Email.body_id)
        .where(HistoryEntry.applicant_id == applicant_id, Email.org_id == org_id)
        .order_by(func.coalesce(HistoryEntry.occurred_at, Email.created_at), Email.id)
    ).all()
    if not rows:
        return []
    refs: dict[int, AccountRef] = {}
    holders: dict[int, list[AccountRef]] = {}
    for eid, aid, address in conn.execute(
        select(MessageCopy.email_id, MailAccount.id, MailAccount.email)
        .join(MailAccount, MailAccount.id == MessageCopy.account_id)
        .where(
            MessageCopy.email_id.in_(select(HistoryEntry.email_id).where(HistoryEntry.applicant_id == applicant_id)),
            MailAccount.org_id == org_id,
        )
        .distinct()
        .order_by(MessageCopy.email_id, MailAccount.id)
    ).all():
        ref = refs.get(aid) or refs.setdefault(aid, AccountRef(aid, address))
        holders.setdefault(eid, []).append(ref)
    # only a message from one of the organisation's mailboxes can have been sent from Postroom
    outbound = (
        select(Email.message_id)
        .join(HistoryEntry, HistoryEntry.email_id == Email.id)
        .where(HistoryEntry.applicant_id == applicant_id, HistoryEntry.direction == "outbound", Email.org_id == org_id)
    )
    tracking, canonical_of = _tracking(session, org_id, outbound) if any(r[4] == "outbound" for r in rows) else ({}, {})
    # A tracked send's per-recipient copies are the same message as its canonical copy: a
    # provider's own Sent copy of one (Gmail's, swept to Trash) is shown only when the
    # canonical copy is not in the timeline (yet), so the message appears once.
    present = {r[1] for r in rows}
    rows = [r for r in rows if canonical_of.get(r[1], r[1]) == r[1] or canonical_of[r[1]] not in present]
    return [
        TimelineItem(
            email_id=eid,
            message_id=mid,
            thread_id=tid,
            date=date,
            direction="out" if direction == "outbound" else "in",
            subject=subject or "",
            from_name=from_name or "",
            from_address=from_addr,
            snippet=snippet or "",
            accounts=holders.get(eid, []),
            has_attachments=None if body_id is None or attachments is None else attachments > 0,
            tracking=tracking.get(mid),
            body_stored=body_id is not None,
        )
        for eid, mid, tid, date, direction, subject, from_name, from_addr, body_id, snippet, attachments in rows
    ]


def _tracking(
    session: Session, org_id: int, message_ids: Select[tuple[str]]
) -> tuple[dict[str, SentTracking], dict[str, str]]:
    """Message-ID → tracking, for the outbox messages among those ``message_ids`` selects
    (three queries); and each recipient's own copy's Message-ID → the canonical message's."""
    conn = session.connection()
    accounts = select(MailAccount.id).where(MailAccount.org_id == org_id)
    outboxes: list[Any] = list(
        conn.execute(
            select(
                OutboxMessage.id,
                OutboxMessage.message_id,
                OutboxMessage.status,
                OutboxMessage.tracked,
                OutboxMessage.refused,
            ).where(
                OutboxMessage.account_id.in_(accounts),
                or_(
                    OutboxMessage.message_id.in_(message_ids),
                    OutboxMessage.id.in_(
                        select(OutboxRecipient.outbox_id).where(OutboxRecipient.message_id.in_(message_ids))
                    ),
                ),
            )
        )
    )
    if not outboxes:
        return {}, {}
    outboxes = list({o[0]: o for o in outboxes}.values())
    ids = [o[0] for o in outboxes]
    recipients = conn.execute(
        select(
            OutboxRecipient.id,
            OutboxRecipient.outbox_id,
            OutboxRecipient.address,
            OutboxRecipient.kind,
            OutboxRecipient.message_id,
            OutboxRecipient.status,
            OutboxRecipient.error,
            OutboxRecipient.replied_at,
            OutboxRecipient.auto_replied_at,
            OutboxRecipient.bounced_at,
            OutboxRecipient.bounce_status,
            OutboxRecipient.bounce_reason,
        )
        .where(OutboxRecipient.outbox_id.in_(ids))
        .order_by(OutboxRecipient.outbox_id, OutboxRecipient.id)
    ).all()
    hits: dict[tuple[int, str, bool], int] = {}
    for rid, kind, machine, n in conn.execute(
        select(TrackingEvent.recipient_id, TrackingEvent.kind, TrackingEvent.machine, func.count())
        .where(TrackingEvent.recipient_id.in_(select(OutboxRecipient.id).where(OutboxRecipient.outbox_id.in_(ids))))
        .group_by(TrackingEvent.recipient_id, TrackingEvent.kind, TrackingEvent.machine)
    ):
        hits[(rid, kind, bool(machine))] = int(n)
    by_outbox: dict[int, list[RecipientTracking]] = {}
    copy_of: dict[str, int] = {}  # a recipient's own copy's Message-ID → its outbox message
    refused = {o[0]: dict(o[4] or {}) for o in outboxes}
    status_of = {o[0]: o[2] for o in outboxes}
    for rid, oid, address, kind, copy_mid, status, error, replied_at, auto_replied_at, *bounce in recipients:
        bounced_at, bounce_status, bounce_reason = bounce
        copy_of.setdefault(copy_mid, oid)
        opens = hits.get((rid, HitKind.OPEN.value, False), 0)
        clicks = hits.get((rid, HitKind.CLICK.value, False), 0)
        bounced = refused[oid].get(address) or (error if status == OutboxStatus.FAILED else None)
        if bounced_at is not None:
            bounced = bounced or bounce_reason or bounce_status or "bounced"
        state = _state(status or status_of[oid], bool(bounced), opens, clicks, replied_at, auto_replied_at)
        by_outbox.setdefault(oid, []).append(
            RecipientTracking(
                address=address,
                kind=kind or RecipientKind.TO.value,
                state=state,
                opens=opens,
                clicks=clicks,
                machine_opens=hits.get((rid, HitKind.OPEN.value, True), 0),
                machine_clicks=hits.get((rid, HitKind.CLICK.value, True), 0),
                replied_at=replied_at,
                auto_replied_at=auto_replied_at,
                error=bounced or error,
                bounced_at=bounced_at,
                bounce_status=bounce_status,
            )
        )
    sent = {
        oid: SentTracking(oid, status, bool(tracked), by_outbox.get(oid, [])) for oid, _, status, tracked, _ in outboxes
    }
    out = {mid: sent[oid] for oid, mid, *_ in outboxes}
    canonical = {oid: mid for oid, mid, *_ in outboxes}
    for copy_mid, oid in copy_of.items():
        out.setdefault(copy_mid, sent[oid])
    return out, {copy_mid: canonical[oid] for copy_mid, oid in copy_of.items() if copy_mid != canonical[oid]}


def _state(
    status: str,
    bounced: bool,
    opens: int,
    clicks: int,
    replied_at: datetime | None,
    auto_replied_at: datetime | None,
) -> DeliveryState:
    """One recipient's furthest step (see :class:`DeliveryState`)."""
    if replied_at is not None:
        return DeliveryState.REPLIED
    if bounced:
        return DeliveryState.BOUNCED
    if status != OutboxStatus.SENT:
        try:
            return DeliveryState(status)
        except ValueError:
            return DeliveryState.QUEUED
    if clicks:
        return DeliveryState.CLICKED
    if opens:
        return DeliveryState.OPENED
    if auto_replied_at is not None:
        return DeliveryState.AUTO_REPLIED
    return DeliveryState.SENT
