"""Sending a message as a recruiter does: written from a template or as given, with reply
identifiers, optionally tracked per recipient and carrying an interview invitation; queued with
its Message-IDs before any network I/O, then sent (:mod:`sync.outbox` and :mod:`sync.tracked`).

What :func:`queue_message` writes, in one transaction:

* the canonical message (``outbox.raw``): ``multipart/alternative`` with text/plain, an
  optional application/json part carrying the data, and text/html in the common layout; the
  clean copy that goes to Sent, without any pixel. Its subject carries the short id
  (``[k3x9q2] Your interview``), its Reply-To the reply token (``alice+<token>@…``).
* one ``outbox_recipients`` row per To, Cc and Bcc recipient; on a tracked send each with the
  Message-ID of their own copy, ``queued``.
* the message's thread with every key an answer may name (:func:`sync.threads.reserve_thread`).

>>> SendRequest(account_id=1, to=["ann@example.org"], subject="Hi", text="Hello").track
False
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.addresses import normalise_address
from postroom.compose import ComposeError, compose_rich, make_message_id, unsafe_header_text
from postroom.config import Config
from postroom.errors import OutboxError
from postroom.invitations import Invitation, invitation_ics, new_invitation_uid
from postroom.models import Applicant, ApplicantAddress, Email, MailAccount, OutboxMessage, OutboxRecipient, utcnow
from postroom.rendering import render_body
from postroom.reply_ids import REPLY_KEY, SHORT_KEY, new_reply_token, new_short_id, plus_address, short_ids
from postroom.states import OutboxStatus, RecipientKind
from postroom.templating import TemplateError, render_template, template_context
from services.templates import get_template
from sync.leases import worker_id
from sync.outbox import QUEUE_HOLD, deliver
from sync.outbox_rows import OutboxEntry
from sync.threads import reserve_thread

__all__ = ["Invite", "MessagePreview", "SendOutcome", "SendRequest", "preview_message", "queue_message", "send_message"]


@dataclass(frozen=True)
class Invite:
    """An interview invitation: a time slot, where, in which time zone (IANA name; default:
    the offset the times carry)."""

    start: datetime
    end: datetime
    location: str = ""
    timezone: str | None = None
    # an update of an invitation sent before (services.sending.update_invitation): its UID, its
    # next SEQUENCE, and REQUEST (rescheduled) or CANCEL
    uid: str | None = None
    sequence: int = 0
    method: str = "REQUEST"


@dataclass(frozen=True)
class SendRequest:
    """What a recruiter asks to send. Either ``subject`` + ``text`` (Markdown, taken as
    written) or ``template`` (+ ``data``, its placeholders' values)."""

    account_id: int
    to: Sequence[str]
    subject: str | None = None
    text: str | None = None
    in_reply_to: str | None = None
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    template: str | None = None
    data: Mapping[str, Any] | None = None
    applicant_id: int | None = None
    track: bool = False
    invite: Invite | None = None
    org_id: int | None = None  # given (the web app, the API): the account must be this organisation's


@dataclass(frozen=True)
class MessagePreview:
    """A message as :func:`preview_message` renders it: the subject and both bodies."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class SendOutcome:
    """How a message sent now ended, with what the CLI and API report."""

    entry: OutboxEntry
    reply_to: str
    short_id: str
    recipients: tuple[str, ...]
    tracked: bool
    mode: str

    def as_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "message_id": e.message_id,
            "outbox_id": e.id,
            "reply_to": self.reply_to,
            "short_id": self.short_id,
            "recipients": list(self.recipients),
            "id": e.id,
            "status": str(e.status),
            "tracked": self.tracked,
            "mode": self.mode,
            "refused": dict(e.refused),
            "error": e.error,
        }


def _reply_id(value: str) -> str:
    """``--in-reply-to`` as written, with ``<>`` added to a bare ``id@host``; checked by compose."""
    value = value.strip()
    return value if "<" in value or ">" in value else f"<{value}>"


def _recipients(config: Config, req: SendRequest) -> list[tuple[str, RecipientKind]]:
    """Every recipient once, normalised, in To, Cc, Bcc order (an address in two lists keeps the first)."""
    seen: dict[str, RecipientKind] = {}
    for kind, field, addresses in (
        (RecipientKind.TO, "to", req.to),
        (RecipientKind.CC, "cc", req.cc),
        (RecipientKind.BCC, "bcc", req.bcc),
    ):
        for addr in addresses:
            if unsafe_header_text(addr):
                raise OutboxError(
                    f"The recipient address {addr!r} contains a line break or another control character.", field
                )
            norm = normalise_address(addr)
            if not norm or "@" not in norm:
                raise OutboxError(f"{addr!r} is not an email address.", field)
            seen.setdefault(norm, kind)
    if not any(kind != RecipientKind.BCC for kind in seen.values()):
        raise OutboxError("A message needs at least one recipient ({to}).", "to")
    if len(seen) > config.sending.max_recipients:
        raise OutboxError(
            f"A message may have at most {config.sending.max_recipients} recipients (setting "
            f"sending.max_recipients), not {len(seen)}.",
            "to",
        )
    return list(seen.items())


def _applicant(session: Session, org_id: int, applicant_id: int | None) -> dict[str, Any] | None:
    if applicant_id is None:
        return None
    applicant = session.get(Applicant, applicant_id)
    if applicant is None or applicant.org_id != org_id:
        raise OutboxError(f"No applicant with id {applicant_id}.", "applicant")
    addresses = list(
        session.scalars(
            select(ApplicantAddress.address)
            .where(ApplicantAddress.applicant_id == applicant.id)
            .order_by(ApplicantAddress.id)
        )
    )
    return {
        "id": applicant.id,
        "name": applicant.name,
        "email": addresses[0] if addresses else "",
        "addresses": addresses,
    }


def _content(
    session: Session, org_id: int, req: SendRequest, account: MailAccount, applicant: dict[str, Any] | None
) -> tuple[str, str, Mapping[str, Any] | None, int | None]:
    """(subject, Markdown body, data for a JSON part or None, template id)."""
    if req.template is not None:
        if req.subject is not None or req.text is not None:
            raise OutboxError("Give either a template ({template}) or a subject and a body, not both.", "template")
        template = get_template(session, org_id, req.template)
        sender = {"email": account.email, "name": account.email.split("@")[0]}
        context = template_context(dict(req.data or {}), applicant=applicant, sender=sender)
        rendered = render_template(template.subject, template.body, context)
        return rendered.subject, rendered.markdown, (dict(req.data or {}) if template.json_part else None), template.id
    if req.data:
        raise OutboxError("Data ({data}) fills a template's placeholders; name the template too.", "data")
    if req.subject is None or req.text is None:
        raise OutboxError("A message needs a subject and a body ({body}), or a template.", "body")
    if unsafe_header_text(req.subject):
        raise OutboxError("The subject contains a line break or another control character.", "subject")
    return req.subject, req.text, None, None


def _layout(config: Config) -> str | None:
    path = config.sending.layout_file
    return Path(path).read_text(encoding="utf-8") if path else None


def _invitation(
    req: SendRequest, account: MailAccount, subject: str, text: str, recipients: Sequence[str]
) -> Invitation | None:
    invite = req.invite
    if invite is None:
        return None
    if invite.start.tzinfo is None or invite.end.tzinfo is None:
        raise OutboxError(
            "The invitation's start and end need a time zone offset, e.g. 2027-01-12T10:00+01:00.", "invite_start"
        )
    if invite.end <= invite.start:
        raise OutboxError("The invitation must end after it starts.", "invite_end")
    zone = invite.timezone
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise OutboxError(f"{zone!r} is not a time zone name such as Europe/Berlin.", "invite_timezone") from None
    if invite.location and unsafe_header_text(invite.location):
        raise OutboxError(
            "The invitation's location contains a line break or another control character.", "invite_location"
        )
    return Invitation(
        uid=invite.uid or new_invitation_uid(account.email.rsplit("@", 1)[-1]),
        sequence=invite.sequence,
        method=invite.method,
        start=invite.start,
        end=invite.end,
        timezone=zone,
        location=invite.location,
        summary=subject,
        description=text,
        organizer=(account.email, ""),
        attendees=tuple(recipients),
    )


def _short_id(session: Session, subject: str, *, reply: bool) -> str | None:
    """The short id the subject carries: one of ours it already has, else a fresh one — but a
    reply's subject is left as it is. Gmail threads a message only when its subject matches the
    conversation's (after Re:/Fwd:), and so do many mail clients: an id added to a reply would
    split the conversation in the recruiter's and the candidate's mailboxes. The reply is
    identified anyway, by its In-Reply-To/References and its reply token."""
    for candidate in short_ids(subject):
        if session.scalar(select(OutboxMessage.id).where(OutboxMessage.short_id == candidate).limit(1)):
            return candidate
    if reply:
        return None
    while True:
        fresh = new_short_id()
        if session.scalar(select(OutboxMessage.id).where(OutboxMessage.short_id == fresh).limit(1)) is None:
            return fresh


def _account(session: Session, req: SendRequest) -> MailAccount:
    """The sending account; another organisation's (given ``req.org_id``) is refused as a missing one."""
    account = session.get(MailAccount, req.account_id)
    if account is None or (req.org_id is not None and account.org_id != req.org_id):
        raise OutboxError(f"No mail account with id {req.account_id}.", "account")
    return account


def preview_message(session: Session, config: Config, req: SendRequest) -> MessagePreview:
    """What ``req`` would say, rendered as :func:`queue_message` renders it (the template with
    its data, the Markdown, the layout), for the compose page's live preview. Recipients,
    reply identifiers and the invitation are left out; errors in the content are raised as
    they would be when sending (a :class:`postroom.errors.UserError` naming the field)."""
    account = _account(session, req)
    applicant = _applicant(session, account.org_id, req.applicant_id)
    subject, markdown, _, _ = _content(session, account.org_id, req, account, applicant)
    body = render_body(
        markdown, subject=subject, sender_name="", layout=_layout(config), logo_url=config.sending.logo_url
    )
    return MessagePreview(subject, body.html, body.text)


def queue_message(session: Session, config: Config, req: SendRequest, *, owner: str | None = None) -> OutboxMessage:
    """Write ``req`` and add it to the outbox as ``queued`` (held by ``owner`` for a while if
    given); see the module docstring. Raises :class:`OutboxError` (or another
    :class:`postroom.errors.UserError`) for input that cannot be sent as asked; then nothing
    is queued."""
    account = _account(session, req)
    org_id = account.org_id
    recipients = _recipients(config, req)
    if req.track and not config.tracking.base_url:
        raise OutboxError(
            "A tracked send needs the public address of the tracking endpoints: set tracking.base_url "
            "(or web.base_url).",
            "track",
        )
    applicant = _applicant(session, org_id, req.applicant_id)
    subject, markdown, data, template_id = _content(session, org_id, req, account, applicant)
    short_id = _short_id(session, subject, reply=req.in_reply_to is not None)
    if short_id is not None and short_id not in short_ids(subject):
        subject = f"[{short_id}] {subject}"
    token = new_reply_token()
    reply_to = plus_address(config.sending.reply_address or account.email, token)
    in_reply_to = _reply_id(req.in_reply_to) if req.in_reply_to else None
    references: tuple[str, ...] = ()
    if in_reply_to:
        parent = session.scalar(
            select(Email.references).where(Email.org_id == org_id, Email.message_id == in_reply_to).limit(1)
        )
        references = (*(parent or []), in_reply_to)  # compose leaves out ids of any other form
    invitation = _invitation(req, account, subject, markdown, [a for a, _ in recipients])
    try:
        body = render_body(
            markdown, subject=subject, sender_name="", layout=_layout(config), logo_url=config.sending.logo_url
        )
        message_id, raw = compose_rich(
            sender=account.email,
            to=[a for a, kind in recipients if kind == RecipientKind.TO],
            cc=[a for a, kind in recipients if kind == RecipientKind.CC],
            reply_to=reply_to,
            subject=subject,
            text=body.text,
            html=body.html,
            json_data=data,
            invitation_ics=invitation_ics(invitation) if invitation else None,
            in_reply_to=in_reply_to,
            references=references,
            domain=account.email.rsplit("@", 1)[-1],
        )
    except (ComposeError, TemplateError) as exc:
        raise OutboxError(exc.template, exc.field) from None
    domain = account.email.rsplit("@", 1)[-1]
    copies = {a: make_message_id(domain) if req.track else message_id for a, _ in recipients}
    now = utcnow()
    thread_id = reserve_thread(
        session,
        org_id,
        [
            message_id,
            *(copies.values() if req.track else ()),
            REPLY_KEY + token,
            *([SHORT_KEY + short_id] if short_id else []),
        ],
        parent=in_reply_to,
        subject=subject,
        date=now,
    )
    row = OutboxMessage(
        account_id=account.id,
        message_id=message_id,
        raw=raw,
        recipients=[a for a, _ in recipients],
        status=OutboxStatus.QUEUED,
        refused={},
        owner=owner,
        claimed_until=now + QUEUE_HOLD if owner else None,
        reply_token=token,
        short_id=short_id,
        reply_to=reply_to,
        thread_id=thread_id,
        applicant_id=applicant["id"] if applicant else None,
        template_id=template_id,
        tracked=req.track,
        invite=_invite_json(invitation),
    )
    session.add(row)
    session.flush()
    session.add_all(
        OutboxRecipient(
            outbox_id=row.id,
            address=address,
            kind=kind.value,
            message_id=copies[address],
            status=OutboxStatus.QUEUED.value if req.track else None,
        )
        for address, kind in recipients
    )
    session.flush()
    return row


def _invite_json(inv: Invitation | None) -> dict[str, Any] | None:
    if inv is None:
        return None
    return {
        "uid": inv.uid,
        "sequence": inv.sequence,
        "method": inv.method,
        "start": inv.start.astimezone(UTC).isoformat(),
        "end": inv.end.astimezone(UTC).isoformat(),
        "timezone": inv.timezone,
        "location": inv.location,
    }


def send_message(config: Config, sessions: sessionmaker[Session], req: SendRequest) -> SendOutcome:
    """Queue ``req`` held by this process, then submit it at once; returns how it ended
    (``sent``, ``uncertain``, ``failed``, or ``queued`` for a safe failure the worker retries)."""
    owner = worker_id()
    with sessions.begin() as s:
        row = queue_message(s, config, req, owner=owner)
        outbox_id, reply_to, short_id = row.id, row.reply_to or "", row.short_id or ""
        recipients = tuple(row.recipients)
    entry = deliver(config, sessions, outbox_id, owner=owner)
    with sessions() as s:
        mode = s.scalar(select(OutboxMessage.mode).where(OutboxMessage.id == outbox_id)) or ""
    return SendOutcome(entry, reply_to, short_id, recipients, req.track, mode)


def update_invitation(
    config: Config,
    sessions: sessionmaker[Session],
    outbox_id: int,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    location: str | None = None,
    cancel: bool = False,
) -> SendOutcome:
    """Reschedule (a new time or place) or cancel the interview a message sent before invited
    to: a reply in its thread to the same recipients, carrying the same calendar event (same
    UID) with SEQUENCE one higher — a REQUEST again, or METHOD:CANCEL — so calendars update the
    event they already have. Tracked if the original was."""
    with sessions() as s:
        row = s.get(OutboxMessage, outbox_id)
        if row is None:
            raise OutboxError(f"No outbox message with id {outbox_id}.", "id")
        if not row.invite:
            raise OutboxError(f"Message {outbox_id} ({row.message_id}) carried no invitation.", "id")
        while row.invite and row.invite.get("superseded_by"):  # the event's latest state
            row = s.get_one(OutboxMessage, int(row.invite["superseded_by"]))
        invite = row.invite or {}
        outbox_id = row.id
        if invite.get("method") == "CANCEL":
            raise OutboxError(f"The interview of message {outbox_id} is cancelled already.", "id")
        people = s.execute(
            select(OutboxRecipient.address, OutboxRecipient.kind)
            .where(OutboxRecipient.outbox_id == outbox_id)
            .order_by(OutboxRecipient.id)
        ).all()
        subject = _subject_of(row.raw)
        original = (row.account_id, row.message_id, row.applicant_id, row.tracked)
    account_id, message_id, applicant_id, tracked = original
    if cancel and (start or end or location is not None):
        raise OutboxError("A cancellation takes no new time or place.", "cancel")
    if not cancel and start is None and end is None and location is None:
        raise OutboxError("Give the new start and end ({invite_start}, {invite_end}) or a new place.", "invite_start")
    new_start = start or datetime.fromisoformat(invite["start"])
    new_end = end or (new_start + (datetime.fromisoformat(invite["end"]) - datetime.fromisoformat(invite["start"])))
    place = invite.get("location", "") if location is None else location
    when = f"{new_start:%A %d %B %Y, %H:%M}–{new_end:%H:%M}" + (f", {place}" if place else "")
    text = "The interview is cancelled.\n" if cancel else f"The interview has moved: {when}.\n"
    req = SendRequest(
        account_id=account_id,
        to=[a for a, kind in people if kind == RecipientKind.TO],
        cc=[a for a, kind in people if kind == RecipientKind.CC],
        bcc=[a for a, kind in people if kind == RecipientKind.BCC],
        subject=subject if subject.lower().startswith("re:") else f"Re: {subject}",
        text=text,
        in_reply_to=message_id,
        applicant_id=applicant_id,
        track=tracked,
        invite=Invite(
            start=new_start,
            end=new_end,
            location=place,
            timezone=invite.get("timezone"),
            uid=invite["uid"],
            sequence=int(invite.get("sequence", 0)) + 1,
            method="CANCEL" if cancel else "REQUEST",
        ),
    )
    outcome = send_message(config, sessions, req)
    if cancel or outcome.entry.status != OutboxStatus.FAILED:
        with sessions.begin() as s:  # the original now points at the event's latest state
            s.get_one(OutboxMessage, outbox_id).invite = {**invite, "superseded_by": outcome.entry.id}
    return outcome


def _subject_of(raw: bytes) -> str:
    return str(BytesHeaderParser(policy=default_policy).parsebytes(raw).get("Subject", ""))
