"""The processing mailbox's routing: which resource an inbound message belongs to, the answers
and bounces it records. Everything runs in the caller's transaction (the processing loop's,
one per message); nothing here commits or touches the network.

**Routing** (:func:`route_inbound`) tries the message's identifiers
(:attr:`postroom.inbound.InboundMessage.identifiers`) in their order, and the first one that
Postroom gave out *in this organisation* wins — another organisation's token or short id is
no identifier at all here:

1. a reply token in a To/Cc/Delivered-To plus-address (``jobs+<token>@…``);
2. In-Reply-To, then the nearest References (the rule :mod:`sync.replies` applies: older
   ancestors name the thread, not the message answered): the Message-ID of a message Postroom
   sent, or of one recipient's own copy of a tracked send — which also says *which* recipient
   answered;
3. the subject's short id (``[k3x9q2]``; the newest message with it).

The recipient who answered is the one whose copy it answers, else the one with the sender's
address, else the only recipient (:func:`sync.replies.who_answered`). When no identifier
matches, a sender who is one of the organisation's applicants routes the message to that
applicant. ``applicant_id`` is set whenever the message answered was sent for an applicant,
the sender is one, or the recipient who answered is one (a message sent to an applicant's
address without naming them). The lookups are :mod:`sync.replies`' own.

**Answers** (:func:`record_answer`) mark the recipient ``replied`` — or ``auto_replied`` for an
automatic reply, which never counts as a reply — through :func:`sync.replies.mark_answered`, the
one code path a synced reply takes too; the first answer is kept.

**Bounces** (:func:`record_bounce`) apply a delivery status notification
(:mod:`postroom.bounces`) to the message it is about, found by the original's Message-ID (the
message's own or one recipient's copy's) among this organisation's sends. Each permanently
failed address is matched, canonically, against *that* message's recipients only (and only
the copy's recipient when the notice is about one copy), so an address quoted anywhere else
never marks anyone. A recipient is marked once — ``bounced_at``, ``bounce_status`` (RFC 3463,
``"5.1.1"``), ``bounce_reason`` (the diagnostic, one line) — the first notice kept, and each
newly marked recipient queues one ``message.bounced`` webhook delivery. A notice about a
message Postroom did not send marks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address
from postroom.bounces import Bounce
from postroom.inbound import InboundMessage
from postroom.mime import clean_text
from postroom.models import ApplicantAddress, OutboxMessage, OutboxRecipient
from postroom.states import WebhookEvent
from sync.replies import (
    answered_ids,
    applicants_of,
    copies_by_id,
    mark_answered,
    outbox_by,
    recipients_of,
    who_answered,
)
from sync.webhooks import emit

__all__ = ["Route", "bounce_route", "record_answer", "record_bounce", "route_inbound"]

REASON_LIMIT = 500  # characters of a bounce's diagnostic kept
MAX_ADDRESS = 320  # characters of an address (RFC 5321's limit; the applicant_addresses column)


@dataclass(frozen=True)
class Route:
    """Where an inbound message belongs.

    ``kind`` is ``"outbox"`` (``id``: the outbox message it answers, as in ``postroom outbox``
    and ``/api/v1/outbox/{id}``) or ``"applicant"`` (``id``: the applicant; only the sender
    matched). ``via`` says what matched: ``"reply_token"``, ``"in_reply_to"`` (In-Reply-To or
    References), ``"short_id"``, ``"sender"`` or ``"bounce"`` (a delivery status notification
    about the message: :func:`bounce_route`)."""

    kind: str
    id: int
    via: str
    outbox_id: int | None = None
    recipient_id: int | None = None  # the outbox recipient who answered, when known
    applicant_id: int | None = None  # the applicant this mail belongs to, when known


def _sender(msg: InboundMessage) -> str | None:
    """The canonical address of the first From that is one (nothing a column could refuse)."""
    for address in msg.from_:
        found = canonical_address(address.email)
        if found and len(found) <= MAX_ADDRESS and found.isprintable():
            return found
    return None


def _applicant_of(session: Session, org_id: int, sender: str | None) -> int | None:
    if sender is None:
        return None
    mine = ApplicantAddress.org_id == org_id
    return session.scalar(select(ApplicantAddress.applicant_id).where(mine, ApplicantAddress.canonical == sender))


def route_inbound(session: Session, org_id: int, msg: InboundMessage) -> Route | None:
    """The resource ``msg`` belongs to in organisation ``org_id``, or None (see the module
    docstring). At most one query per kind of identifier the message carries, plus two."""
    by_kind: dict[str, list[str]] = {}
    for ident in msg.identifiers:
        by_kind.setdefault(ident.kind, []).append(ident.value)
    answers = set(answered_ids(msg.in_reply_to, msg.references))
    refs = [r for r in by_kind.get("message_id", []) if r in answers]
    tokens = by_kind.get("reply_token", [])
    shorts = by_kind.get("short_id", [])
    copies = copies_by_id(session, org_id, refs) if refs else {}
    mains = outbox_by(session, org_id, OutboxMessage.message_id, refs) if refs else {}
    by_token = outbox_by(session, org_id, OutboxMessage.reply_token, tokens) if tokens else {}
    by_short = outbox_by(session, org_id, OutboxMessage.short_id, shorts) if shorts else {}

    sender = _sender(msg)
    found: tuple[int, str, int | None] | None = None  # outbox id, via, recipient id from the copy
    for ident in msg.identifiers:
        if ident.kind == "reply_token" and ident.value in by_token:
            found = (by_token[ident.value], "reply_token", None)
        elif ident.kind == "message_id" and ident.value in copies:
            rid, oid = copies[ident.value]
            found = (oid, "in_reply_to", rid)
        elif ident.kind == "message_id" and ident.value in mains:
            found = (mains[ident.value], "in_reply_to", None)
        elif ident.kind == "short_id" and ident.value in by_short:
            found = (by_short[ident.value], "short_id", None)
        if found is not None:
            break
    if found is None:
        applicant = _applicant_of(session, org_id, sender)
        if applicant is None:
            return None
        return Route(kind="applicant", id=applicant, via="sender", applicant_id=applicant)
    oid, via, recipient = found
    recipients = recipients_of(session, [oid]).get(oid, [])
    if recipient is None:
        recipient = who_answered(recipients, sender)
    applicant = applicants_of(session, [oid]).get(oid) or _applicant_of(session, org_id, sender)
    if applicant is None and recipient is not None:  # sent to an applicant's address, for nobody in particular
        answering = next((r.canonical for r in recipients if r.id == recipient), None)
        applicant = _applicant_of(session, org_id, answering)
    return Route(kind="outbox", id=oid, via=via, outbox_id=oid, recipient_id=recipient, applicant_id=applicant)


def bounce_route(session: Session, org_id: int, bounce: Bounce) -> Route | None:
    """The message of this organisation a delivery status notification is about, as a route
    (``via`` ``"bounce"``; ``recipient_id``: the copy's recipient when it is about one tracked
    copy), or None when Postroom did not send it."""
    original = bounce.original_message_id
    if original is None:
        return None
    copy = copies_by_id(session, org_id, [original]).get(original)
    if copy is not None:
        only, outbox_id = copy
    else:
        only = None
        main = outbox_by(session, org_id, OutboxMessage.message_id, [original]).get(original)
        if main is None:
            return None
        outbox_id = main
    applicant = applicants_of(session, [outbox_id]).get(outbox_id)
    return Route("outbox", outbox_id, "bounce", outbox_id=outbox_id, recipient_id=only, applicant_id=applicant)


def record_answer(session: Session, org_id: int, route: Route, msg: InboundMessage, now: datetime) -> None:
    """Mark the recipient ``route`` names ``replied`` (``auto_replied`` when ``msg`` is an
    automatic reply) at the message's date — ``now`` when it has none or claims a later one —
    the first answer kept. A route to an applicant, or without a known recipient, marks nothing."""
    if route.kind != "outbox" or route.recipient_id is None:
        return
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    at = msg.date if msg.date is not None and msg.date <= now else now
    mark_answered(session, org_id, route.recipient_id, at, auto_reply=bool(msg.auto_reply), email_id=None)


def record_bounce(session: Session, org_id: int, bounce: Bounce, now: datetime) -> list[int]:
    """Mark ``bounced`` each recipient of the message ``bounce`` is about whose address failed
    permanently (the first notice kept), queue one ``message.bounced`` per recipient newly
    marked, and return their outbox recipient ids (see the module docstring)."""
    failed = {c: r for r in bounce.failed if (c := canonical_address(r.address))}
    about = bounce_route(session, org_id, bounce) if failed else None
    if about is None:
        return []  # nothing failed, or not a message Postroom sent (from this organisation)
    outbox_id, only, applicant = about.id, about.recipient_id, about.applicant_id
    marked: list[int] = []
    for recipient in recipients_of(session, [outbox_id]).get(outbox_id, []):
        notice = failed.get(recipient.canonical)
        if notice is None or (only is not None and recipient.id != only):
            continue
        reason = clean_text(" ".join(notice.diagnostic.split()), REASON_LIMIT) or None
        res = session.execute(
            update(OutboxRecipient)
            .where(OutboxRecipient.id == recipient.id, OutboxRecipient.bounced_at.is_(None))
            .values(bounced_at=now, bounce_status=notice.status, bounce_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if not res.rowcount:  # type: ignore[attr-defined]
            continue  # an earlier notice is kept
        marked.append(recipient.id)
        payload: dict[str, Any] = {
            "outbox_id": outbox_id,
            "recipient_id": recipient.id,
            "recipient": recipient.address,
            "applicant_id": applicant,
            "status": notice.status,
            "reason": reason,
            "bounced_at": now.isoformat(),
        }
        emit(session, org_id, WebhookEvent.MESSAGE_BOUNCED.value, payload, now=now)
    return marked
