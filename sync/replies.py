"""Replies to messages sent from Postroom, found as the index meets them.

A newly indexed message from someone else answers a message Postroom sent when any of these
names it — exact identifiers only, never a guess from the subject's words:

1. its In-Reply-To or nearest References is the Message-ID of that message, or of one
   recipient's own copy of a tracked send (which also says *which* recipient answered);
2. it is addressed to that message's reply token (``alice+<token>@…`` in To, Cc or
   Delivered-To);
3. its subject carries that message's short id (``[k3x9q2]``; the newest message with it).

The recipient who answered is the one whose copy it answers, else the one whose address
sent it, else the only recipient. They are marked ``replied`` — or ``auto_replied`` for an
automatic reply (:func:`postroom.mime.auto_reply_marker`), which never counts as a reply.
The first reply of each recipient is announced as ``message.replied`` (:func:`mark_answered`,
also used by the processing mailbox).
The answer joins the applicant's history when the message was sent for an applicant (from
whatever address it came), and Postroom's own copy of such a message (indexed from Sent)
joins it as outbound. Threading the answer is :mod:`sync.threads`' part (the identifiers are
thread keys).

The lookups (:func:`copies_by_id`, :func:`outbox_by`, :func:`recipients_of`,
:func:`applicants_of`, :func:`who_answered`) and the marking (:func:`mark_answered`) are shared
with the processing mailbox (:mod:`sync.inbound_routing`), whose answers are not indexed emails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address
from postroom.mime import ParsedHeaders
from postroom.models import MailAccount, OutboxMessage, OutboxRecipient
from postroom.reply_ids import reply_tokens, short_ids
from postroom.states import WebhookEvent
from sync.history import add_entries
from sync.store import chunks
from sync.webhooks import emit

NEAREST_REFERENCES = 3  # an answer names the message it answers last


@dataclass(frozen=True)
class Indexed:
    """One newly indexed email as the reply finder needs it."""

    email_id: int
    message_id: str
    headers: ParsedHeaders
    sender: str | None  # canonical
    date: datetime | None


@dataclass
class Recipient:
    """One recipient of an outbox message, with the canonical form of their address."""

    id: int
    outbox_id: int
    canonical: str
    address: str  # as sent


def record_replies(
    session: Session, org_id: int, own: frozenset[str], emails: Sequence[Indexed]
) -> list[dict[str, Any]]:
    """Mark the recipients these new emails answer and add them to applicants' histories (in
    the caller's transaction); returns the history entries added for answers. Costs nothing
    when no email carries an identifier or answers anything."""
    ours = [e for e in emails if e.sender in own]
    theirs = [e for e in emails if e.sender not in own]
    _history_of_own_copies(session, org_id, ours)
    wanted = {e.email_id: _identifiers(e.headers) for e in theirs}
    wanted = {k: v for k, v in wanted.items() if any(v)}
    if not wanted:
        return []
    refs = {r for ids, _, _ in wanted.values() for r in ids}
    tokens = {t for _, ts, _ in wanted.values() for t in ts}
    shorts = {s for _, _, ss in wanted.values() for s in ss}
    copies = copies_by_id(session, org_id, refs)
    mains = outbox_by(session, org_id, OutboxMessage.message_id, refs)
    by_token = outbox_by(session, org_id, OutboxMessage.reply_token, tokens)
    by_short = outbox_by(session, org_id, OutboxMessage.short_id, shorts)
    history: list[dict[str, Any]] = []
    named = {*mains.values(), *by_token.values(), *by_short.values()}
    recipients = recipients_of(session, named)
    applicants = applicants_of(session, named | {oid for _, oid in copies.values()})
    for e in theirs:
        if e.email_id not in wanted:
            continue
        ids, ts, ss = wanted[e.email_id]
        answered: dict[int, int | None] = {}  # outbox id -> recipient id known from the copy answered
        for ref in ids:
            if ref in copies:
                rid, oid = copies[ref]
                answered[oid] = rid
            elif ref in mains:
                answered.setdefault(mains[ref], None)
        for key, found in ((ts, by_token), (ss, by_short)):
            for k in key:
                if k in found:
                    answered.setdefault(found[k], None)
        for oid, copy_of in answered.items():
            who = copy_of or who_answered(recipients.get(oid, []), e.sender)
            if who is not None:
                mark_answered(session, org_id, who, e.date, email_id=e.email_id, auto_reply=bool(e.headers.auto_reply))
            applicant = applicants.get(oid)
            if applicant is not None:
                history.append(_entry(applicant, e, "inbound"))
    add_entries(session, history)
    return history


def answered_ids(in_reply_to: Sequence[str], references: Sequence[str]) -> tuple[str, ...]:
    """The Message-IDs an answer may name as the message it answers: its In-Reply-To and its
    nearest References (older ancestors are the thread's, not what it answers)."""
    return tuple(dict.fromkeys((*in_reply_to, *references[-NEAREST_REFERENCES:])))


def _identifiers(h: ParsedHeaders) -> tuple[tuple[str, ...], list[str], list[str]]:
    refs = answered_ids(h.in_reply_to, h.references)
    tokens = reply_tokens(a.email for a in (*h.to, *h.cc, *h.delivered_to))
    return refs, tokens, short_ids(h.subject)


def _in_org(org_id: int) -> Any:
    return OutboxMessage.account_id.in_(select(MailAccount.id).where(MailAccount.org_id == org_id))


def copies_by_id(session: Session, org_id: int, refs: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Message-ID of a recipient's own copy of a tracked send of ``org_id`` -> (recipient id, outbox id)."""
    out: dict[str, tuple[int, int]] = {}
    for part in chunks(sorted(refs)):
        rows = session.execute(
            select(OutboxRecipient.message_id, OutboxRecipient.id, OutboxRecipient.outbox_id)
            .join(OutboxMessage, OutboxMessage.id == OutboxRecipient.outbox_id)
            .where(OutboxRecipient.message_id.in_(part), OutboxMessage.tracked.is_(True), _in_org(org_id))
        )
        out.update({mid: (rid, oid) for mid, rid, oid in rows})
    return out


def outbox_by(session: Session, org_id: int, column: Any, values: Iterable[str]) -> dict[str, int]:
    """value -> the newest outbox message of ``org_id`` with it in ``column`` (an
    :class:`OutboxMessage` column: ``message_id``, ``reply_token``, ``short_id``)."""
    out: dict[str, int] = {}
    for part in chunks(sorted(values)):
        rows = session.execute(
            select(column, func.max(OutboxMessage.id)).where(column.in_(part), _in_org(org_id)).group_by(column)
        )
        out.update({value: oid for value, oid in rows})
    return out


def recipients_of(session: Session, outbox_ids: Iterable[int]) -> dict[int, list[Recipient]]:
    """outbox id -> its recipients, with their canonical addresses."""
    out: dict[int, list[Recipient]] = {}
    for part in chunks(sorted(outbox_ids)):
        rows = session.execute(
            select(OutboxRecipient.id, OutboxRecipient.outbox_id, OutboxRecipient.address).where(
                OutboxRecipient.outbox_id.in_(part)
            )
        )
        for rid, oid, address in rows:
            out.setdefault(oid, []).append(Recipient(rid, oid, canonical_address(address) or address, address))
    return out


def applicants_of(session: Session, outbox_ids: Iterable[int]) -> dict[int, int | None]:
    """outbox id -> the applicant it was sent for (None: for nobody in particular)."""
    out: dict[int, int | None] = {}
    for part in chunks(sorted(outbox_ids)):
        rows = session.execute(select(OutboxMessage.id, OutboxMessage.applicant_id).where(OutboxMessage.id.in_(part)))
        out.update({oid: applicant for oid, applicant in rows})
    return out


def who_answered(recipients: Sequence[Recipient], sender: str | None) -> int | None:
    """The recipient who answered: the one with the sender's address, else the only one."""
    for r in recipients:
        if sender and r.canonical == sender:
            return r.id
    return recipients[0].id if len(recipients) == 1 else None


def mark_answered(
    session: Session,
    org_id: int,
    recipient_id: int,
    when: datetime | None,
    *,
    email_id: int | None = None,
    auto_reply: bool = False,
) -> bool:
    """Mark a recipient of a message Postroom sent ``replied`` at ``when`` (or ``auto_replied``
    for an automatic reply), the first answer kept; True if this call marked them. The first
    reply is announced as ``message.replied`` in the same transaction (an auto-reply never is),
    so the fact is announced exactly once however many copies of the answer are met. The one
    way to mark an answer: the sync engine (:func:`record_replies`) and the processing mailbox
    both come here."""
    if auto_reply:
        values: dict[str, Any] = {"auto_replied_at": when}
        first = OutboxRecipient.auto_replied_at.is_(None)
    else:
        values = {"replied_at": when, "reply_email_id": email_id}
        first = OutboxRecipient.replied_at.is_(None)
    marked = session.execute(
        update(OutboxRecipient)
        .where(OutboxRecipient.id == recipient_id, first)
        .values(**values)
        .returning(OutboxRecipient.outbox_id, OutboxRecipient.address)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if marked is None:
        return False
    if not auto_reply:
        outbox_id, address = marked
        emit(
            session,
            org_id,
            WebhookEvent.MESSAGE_REPLIED,
            {
                "outbox_id": outbox_id,
                "recipient": address,
                "replied_at": when.isoformat() if when is not None else None,
                "message_id": email_id,
            },
        )
    return True


def _entry(applicant_id: int, e: Indexed, direction: str) -> dict[str, Any]:
    return {"applicant_id": applicant_id, "email_id": e.email_id, "direction": direction, "occurred_at": e.date}


def _history_of_own_copies(session: Session, org_id: int, ours: Sequence[Indexed]) -> None:
    """Postroom's own copy of a message sent for an applicant (indexed from Sent) joins their
    history, whichever address it went to."""
    if not ours:
        return
    by_mid = {e.message_id: e for e in ours}
    rows: list[dict[str, Any]] = []
    for part in chunks(sorted(by_mid)):
        found = session.execute(
            select(OutboxMessage.message_id, OutboxMessage.applicant_id).where(
                OutboxMessage.message_id.in_(part), OutboxMessage.applicant_id.is_not(None), _in_org(org_id)
            )
        )
        rows += [_entry(applicant_id, by_mid[mid], "outbound") for mid, applicant_id in found]
    add_entries(session, rows)
