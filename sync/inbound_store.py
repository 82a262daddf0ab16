"""One inbound message taken, inside the caller's transaction: parsed, routed, stored, announced.

:func:`take` records a message a processing mailbox found (a new ``inbound_items`` row, or the
failed row of the same Message-ID when an operator moved a fixed message back), and
:func:`apply` runs the pipeline over its raw bytes:

1. too large (``[inbound] max_message_size``), not a message at all
   (:class:`postroom.mime.MalformedMessage`), or an ``application/json`` part that does not
   parse: ``failed``, with the reason in one sentence;
2. a delivery status notification (:func:`postroom.bounces.parse_bounce`): routed to the
   message it is about (``via`` ``"bounce"``), its failed recipients marked bounced
   (:func:`sync.inbound_routing.record_bounce`; the item's ``bounces`` names them), no data
   taken; ``processed``;
3. otherwise routed (:func:`sync.inbound_routing.route_inbound`); a routed reply or automatic
   reply is recorded (:func:`sync.inbound_routing.record_answer`); an automatic reply yields
   no data; the attachments are kept, linked to the applicant it belongs to; ``processed``;
4. ``inbound.processed`` or ``inbound.failed`` is queued for the organisation's webhooks, with
   the item's :meth:`InboundItemView.as_json` as its data.

Nothing here commits and nothing does network I/O: the caller (:mod:`sync.inbound`) commits,
then moves the message. Every string is cleaned (:func:`postroom.mime.clean_text`) before it
reaches the database, inside the data too: NUL bytes and lone surrogates never get there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from postroom.bounces import parse_bounce
from postroom.config import Config
from postroom.inbound import InboundMessage, parse_inbound
from postroom.mime import MalformedMessage, clean_text
from postroom.models import Body, OutboxRecipient
from postroom.models_inbound import InboundAttachment, InboundItem
from postroom.states import InboundStatus, WebhookEvent
from sync.bodies import BlobStore
from sync.inbound_routing import bounce_route, record_answer, record_bounce, route_inbound
from sync.store import insert_ignore
from sync.webhooks import emit

log = logging.getLogger("postroom.inbound")

MAX_TEXT = 1_000_000  # characters of free text kept
MAX_SUBJECT = 2000
MAX_REASON = 500
MAX_DEFECTS = 50


@dataclass(frozen=True)
class AttachmentView:
    id: int
    filename: str
    content_type: str
    size: int
    kind: str
    applicant_id: int | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "filename": self.filename, "content_type": self.content_type, "size": self.size}


@dataclass(frozen=True)
class BouncedRecipient:
    """A recipient a delivery status notification marked bounced."""

    recipient_id: int
    recipient: str
    status: str | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {"recipient_id": self.recipient_id, "recipient": self.recipient, "status": self.status,
                "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class InboundItemView:
    """One message a processing mailbox took, as the CLI, the web app, the API and the
    ``inbound.*`` webhooks show it."""

    id: int
    mailbox_id: int
    message_id: str | None
    status: str
    reason: str | None
    data: dict[str, Any]
    data_source: str | None
    text: str
    attachments: tuple[AttachmentView, ...]
    routed_kind: str | None
    routed_id: int | None
    routed_via: str | None
    applicant_id: int | None
    auto_reply: str
    sender: str | None
    subject: str
    moved: bool
    created_at: datetime
    processed_at: datetime | None
    bounces: tuple[BouncedRecipient, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The CLI/API contract: ``{"id", "message_id", "status", "reason", "data", "text",
        "attachments": [{"filename", "content_type", "size"}], "routed_to": {"kind", "id"} | null}``
        plus a few keys more."""
        routed = None if self.routed_kind is None else {"kind": self.routed_kind, "id": self.routed_id}
        if routed is not None and self.routed_via:
            routed["via"] = self.routed_via
        return {
            "id": self.id,
            "message_id": self.message_id,
            "status": self.status,
            "reason": self.reason,
            "data": self.data,
            "text": self.text,
            "attachments": [a.as_json() for a in self.attachments],
            "routed_to": routed,
            "data_source": self.data_source,
            "auto_reply": self.auto_reply or None,
            "sender": self.sender,
            "subject": self.subject,
            "applicant_id": self.applicant_id,
            "bounced_recipients": len(self.bounces),
            "bounces": [b.as_json() for b in self.bounces],
            "mailbox_id": self.mailbox_id,
            "moved": self.moved,
            "created_at": self.created_at.isoformat(),
            "processed_at": self.processed_at.isoformat() if self.processed_at else None,
        }


def _bounces(item: InboundItem) -> tuple[BouncedRecipient, ...]:
    """The recipients this item's notice newly marked bounced, as recorded when it was taken."""
    return tuple(
        BouncedRecipient(b["recipient_id"], b["recipient"], b.get("status"), b.get("reason"))
        for b in item.bounces or ()
    )


def _marked(session: Session, recipient_ids: list[int]) -> list[BouncedRecipient]:
    if not recipient_ids:
        return []
    rows = session.execute(
        select(OutboxRecipient.id, OutboxRecipient.address, OutboxRecipient.bounce_status)
        .add_columns(OutboxRecipient.bounce_reason)
        .where(OutboxRecipient.id.in_(recipient_ids))
        .order_by(OutboxRecipient.id)
    ).tuples()
    return [BouncedRecipient(*row) for row in rows]


def item_view(
    session: Session, item: InboundItem, attachments: list[InboundAttachment] | None = None
) -> InboundItemView:
    """The item as shown; ``attachments`` are its attachment rows when the caller has them all
    at hand (flushed, in id order), else they are read."""
    rows = attachments
    if rows is None:
        rows = list(
            session.scalars(
                select(InboundAttachment).where(InboundAttachment.item_id == item.id).order_by(InboundAttachment.id)
            ).all()
        )
    return InboundItemView(
        id=item.id,
        mailbox_id=item.mailbox_id,
        message_id=item.message_id,
        status=item.status,
        reason=item.reason,
        data=dict(item.data or {}),
        data_source=item.data_source,
        text=item.text,
        attachments=tuple(
            AttachmentView(a.id, a.filename, a.content_type, a.size, a.kind, a.applicant_id) for a in rows
        ),
        routed_kind=item.routed_kind,
        routed_id=item.routed_id,
        routed_via=item.routed_via,
        applicant_id=item.applicant_id,
        auto_reply=item.auto_reply,
        sender=item.sender,
        subject=item.subject,
        moved=item.moved,
        created_at=item.created_at,
        processed_at=item.processed_at,
        bounces=_bounces(item),
    )


# ------------------------------------------------------------------------------ cleaning


def clean_json(value: Any, depth: int = 0) -> Any:
    """``value`` with every string (keys too) cleaned, so that any database's JSON takes it."""
    if depth > 60:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, depth + 1) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean_text(str(value))


def _msgid(value: str | None) -> str | None:
    return clean_text(value, 1000) or None if value else None


def _sentence(text: str) -> str:
    text = clean_text(" ".join(text.split()), MAX_REASON).rstrip(".")
    return (text[:1].upper() + text[1:] + ".") if text else "Unknown reason."


# ------------------------------------------------------------------------------ taking


@dataclass(frozen=True)
class Found:
    """A message found in the source folder: where, and what the server said of it. ``raw`` is
    None when it was not fetched (over the size cap)."""

    uidvalidity: int
    uid: int
    raw: bytes | None
    size: int | None
    message_id: str | None = None  # from its header, when the raw message is not at hand


def take(
    session: Session,
    config: Config,
    blobs: BlobStore,
    mailbox_id: int,
    org_id: int,
    found: Found,
    now: datetime,
    *,
    failure: str | None = None,
) -> InboundItemView | None:
    """Record and process one message in the caller's transaction; the item. A racing worker
    that recorded the same UID first makes the flush here raise the unique constraint's
    IntegrityError (the caller rolls back and skips the message). ``failure`` records it as
    failed with that reason without parsing."""
    parsed, failure = (None, failure) if failure is not None else _parse(config, found)
    message_id = _msgid(parsed.message_id if parsed is not None else found.message_id)
    item = _reopen(session, mailbox_id, message_id, found, now) if message_id else None
    fresh = item is None
    if item is None:
        item = InboundItem(
            org_id=org_id,
            mailbox_id=mailbox_id,
            uidvalidity=found.uidvalidity,
            uid=found.uid,
            message_id=message_id,
            created_at=now,
        )
        session.add(item)
        session.flush()  # the claim: a racing worker's insert of the same UID fails here
    small = found.raw is not None and len(found.raw) <= config.inbound.max_message_size
    body_id = _store_raw(session, blobs, found.raw) if found.raw is not None and small else None
    item.body_id = body_id if body_id is not None else item.body_id
    item.size = found.size if found.size is not None else (len(found.raw) if found.raw is not None else None)
    return _apply(session, config, blobs, item, parsed, failure, found.raw, now, fresh=fresh)


def _reopen(session: Session, mailbox_id: int, message_id: str, found: Found, now: datetime) -> InboundItem | None:
    """The failed item of this Message-ID, moved out before, now taken again from its new UID
    (compare-and-set: of two workers, one reopens it)."""
    old = session.execute(
        select(InboundItem.id, InboundItem.uidvalidity, InboundItem.uid)
        .where(
            InboundItem.mailbox_id == mailbox_id,
            InboundItem.message_id == message_id,
            InboundItem.status == InboundStatus.FAILED.value,
            InboundItem.moved,
        )
        .order_by(InboundItem.id.desc())
        .limit(1)
    ).first()
    if old is None:
        return None
    done = session.execute(
        update(InboundItem)
        .where(InboundItem.id == old.id, InboundItem.uidvalidity == old.uidvalidity, InboundItem.uid == old.uid)
        .values(
            uidvalidity=found.uidvalidity, uid=found.uid, moved=False, moved_at=None, attempts=InboundItem.attempts + 1
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 0) != 1:
        return None
    return session.get(InboundItem, old.id, populate_existing=True)


def reapply(
    session: Session, config: Config, blobs: BlobStore, item: InboundItem, raw: bytes, now: datetime
) -> InboundItemView:
    """Run the pipeline again over the kept raw message of ``item`` (a retry)."""
    found = Found(item.uidvalidity, item.uid, raw, len(raw))
    parsed, failure = _parse(config, found)
    item.attempts += 1
    if len(raw) <= config.inbound.max_message_size:
        item.body_id, item.size = _store_raw(session, blobs, raw), len(raw)
    return _apply(session, config, blobs, item, parsed, failure, raw, now)


def _parse(config: Config, found: Found) -> tuple[InboundMessage | None, str | None]:
    """The parsed message, or why it cannot be taken (one sentence)."""
    limit = config.inbound.max_message_size
    if found.raw is None or len(found.raw) > limit:
        size = found.size if found.raw is None else len(found.raw)
        return None, f"It is larger ({size} bytes) than the {limit} bytes [inbound] max_message_size allows."
    try:
        msg = parse_inbound(found.raw, aliases=config.inbound.aliases, languages=config.inbound.languages)
    except MalformedMessage as exc:
        return None, _sentence(f"It is not an email message: {exc}")
    except Exception as exc:  # a bug in a parser must not stop the mailbox: the message fails, the rest go on
        log.exception("inbound message could not be parsed")
        return None, _sentence(f"Postroom could not read it ({type(exc).__name__})")
    if msg.data_source is None:
        bad_json = [d for d in msg.defects if d.startswith("json part")]
        if bad_json:
            return msg, _sentence(f"Its application/json part could not be used: {bad_json[0]}")
    return msg, None


def _store_raw(session: Session, blobs: BlobStore, raw: bytes) -> int:
    sha, path = blobs.write(raw)  # the file exists before the row that names it commits
    insert_ignore(session, Body.__table__, [{"sha256": sha, "size": len(raw), "path": path}], ["sha256"])
    body_id = session.scalar(select(Body.id).where(Body.sha256 == sha))
    assert body_id is not None
    return body_id


def _apply(
    session: Session,
    config: Config,
    blobs: BlobStore,
    item: InboundItem,
    msg: InboundMessage | None,
    failure: str | None,
    raw: bytes | None,
    now: datetime,
    *,
    fresh: bool = False,
) -> InboundItemView:
    """Fill ``item`` from the parse (or the failure), route, record, keep attachments, announce.
    A ``fresh`` item (inserted in this transaction) has no attachments to drop yet."""
    if not fresh:
        session.execute(delete(InboundAttachment).where(InboundAttachment.item_id == item.id))
    kept: list[InboundAttachment] = []
    item.routed_kind = item.routed_id = item.routed_via = item.applicant_id = None
    item.bounces = []
    item.processed_at = now
    if msg is not None:
        sender = msg.from_[0].email if msg.from_ else None
        item.message_id = _msgid(msg.message_id) or item.message_id
        item.sender = clean_text(sender, 320) if sender else None
        item.subject = clean_text(msg.subject, MAX_SUBJECT)
        item.text = clean_text(msg.text, MAX_TEXT)
        item.data = clean_json(msg.data)
        item.data_source = msg.data_source
        item.auto_reply = clean_text(msg.auto_reply, 200)
        item.defects = [clean_text(d, 300) for d in msg.defects[:MAX_DEFECTS]]
    else:
        item.data, item.text, item.data_source, item.auto_reply = {}, "", None, ""
    if failure is not None or msg is None or raw is None:
        item.status, item.reason = InboundStatus.FAILED.value, failure or "Unknown reason."
        return _announce(session, item, WebhookEvent.INBOUND_FAILED, kept)
    item.status, item.reason = InboundStatus.PROCESSED.value, None
    try:
        bounce = parse_bounce(raw)
    except Exception:  # a bounce parser's bug: taken as an ordinary message
        log.exception("bounce parser failed")
        bounce = None
    if bounce is not None:
        about = bounce_route(session, item.org_id, bounce)
        if about is not None:
            item.routed_kind, item.routed_id, item.routed_via = about.kind, about.id, about.via
            item.applicant_id = about.applicant_id
        marked = record_bounce(session, item.org_id, bounce, now)
        item.bounces = [b.as_json() for b in _marked(session, marked)]
        item.data, item.data_source = {}, None
    else:
        if msg.auto_reply:  # "I am away until: Monday" is nobody's answer: no data is taken from it
            item.data, item.data_source = {}, None
        route = route_inbound(session, item.org_id, msg)
        if route is not None:
            item.routed_kind, item.routed_id, item.routed_via = route.kind, route.id, route.via
            item.applicant_id = route.applicant_id
            record_answer(session, item.org_id, route, msg, now)
        for att in msg.attachments:
            sha, path = blobs.write(att.data)
            kept.append(
                InboundAttachment(
                    org_id=item.org_id,
                    item_id=item.id,
                    filename=clean_text(att.filename, 255) or "attachment",
                    content_type=clean_text(att.content_type, 255) or "application/octet-stream",
                    kind=att.kind,
                    size=att.size,
                    sha256=sha,
                    path=path,
                    applicant_id=item.applicant_id,
                    created_at=now,
                )
            )
    session.add_all(kept)
    return _announce(session, item, WebhookEvent.INBOUND_PROCESSED, kept)


def _announce(
    session: Session, item: InboundItem, event: WebhookEvent, attachments: list[InboundAttachment]
) -> InboundItemView:
    session.flush()
    view = item_view(session, item, attachments)  # the ones just kept: the rest were deleted
    emit(session, item.org_id, event.value, view.as_json(), now=item.processed_at)
    return view
