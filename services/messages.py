"""One message, as a user reads it: its headers, its body made safe to show, its attachments.

The body is the raw MIME kept in the blob directory (:mod:`sync.bodies`; only for the messages
the body policy keeps, by default those with an applicant), taken apart by
:mod:`postroom.message_parts`. What the reader gets:

* ``text`` — the plain-text body (derived from the HTML when there is none), and ``text_html``,
  the same escaped with its links made links (:func:`postroom.safe_html.text_to_html`);
* ``html`` — the HTML body sanitised (:func:`postroom.safe_html.sanitize_mail_html`) — never
  the HTML as sent — or None when there is no HTML part. Remote images are left out (counted
  in ``blocked_images``) unless ``show_images``; then each goes through Postroom's signed image
  proxy (:func:`postroom.image_proxy.sign_image_url`), so the sender never sees the reader;
* ``attachments`` — ``{index, filename, content_type, size}``; :func:`get_attachment` gives
  one's bytes with a safe file name and a type a browser will not run;
* ``body_state`` — ``"stored"``, ``"not downloaded"`` (not fetched, or never kept by the body
  policy), or one sentence saying why the stored body cannot be shown.

A message of another organisation raises the same :class:`MessageError` as a missing one.
Opening a message whose body was stored before snippets were kept fills its snippet in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from postroom.config import Config
from postroom.errors import UserError
from postroom.image_proxy import derive_key, sign_image_url
from postroom.message_parts import (
    AttachmentInfo,
    MalformedMessage,
    MessageParts,
    attachment_data,
    download_type,
    read_parts,
    safe_filename,
    snippet_of,
)
from postroom.models import Body, Email
from postroom.safe_html import sanitize_mail_html, text_to_html

__all__ = ["Attachment", "MessageError", "MessageView", "get_attachment", "get_message"]

STORED = "stored"
NOT_DOWNLOADED = "not downloaded"


class MessageError(UserError):
    """A message (field ``message``) or one of its attachments (field ``attachment``) that does
    not exist, or is another organisation's."""


@dataclass(frozen=True)
class MessageView:
    id: int
    message_id: str
    thread_id: int | None
    subject: str
    from_name: str
    from_address: str | None
    to: list[str]
    cc: list[str]
    date: datetime | None
    text: str
    text_html: str
    html: str | None  # sanitised
    blocked_images: int
    attachments: list[AttachmentInfo]
    body_state: str
    truncated: bool = False  # a body part was too long and is shown cut off

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "thread_id": self.thread_id,
            "subject": self.subject,
            "from": {"name": self.from_name, "address": self.from_address},
            "to": self.to,
            "cc": self.cc,
            "date": self.date.isoformat() if self.date else None,
            "text": self.text,
            "html": self.html,
            "blocked_images": self.blocked_images,
            "attachments": [
                {"index": a.index, "filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in self.attachments
            ],
            "body_state": self.body_state,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class Attachment:
    """An attachment ready to download: ``filename`` safe to save under, ``content_type`` its
    own only when harmless (:data:`postroom.message_parts.SAFE_DOWNLOAD_TYPES`)."""

    filename: str
    content_type: str
    data: bytes


def _email(session: Session, org_id: int, email_id: int) -> Email:
    email = session.get(Email, email_id)
    if email is None or email.org_id != org_id:
        raise MessageError(f"No message with id {email_id}.", "message")
    return email


def _raw(session: Session, config: Config, email: Email) -> tuple[bytes | None, Body | None, str]:
    """The stored MIME of ``email`` (None if there is none to show), its body row and its state."""
    if email.body_id is None:
        return None, None, NOT_DOWNLOADED
    body = session.get(Body, email.body_id)
    if body is None:
        return None, None, NOT_DOWNLOADED
    if email.body_error:
        return None, body, f"The stored message cannot be shown: {email.body_error}."
    root = config.storage.blob_dir.resolve()
    path = (root / body.path).resolve()
    if not path.is_relative_to(root):
        return None, body, "The stored message cannot be shown: its file is outside the blob directory."
    try:
        return _read(path, config.sync.max_message_size), body, STORED
    except OSError as exc:
        return None, body, f"The stored message cannot be read ({exc.strerror or type(exc).__name__})."


def _read(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(limit + 1)[:limit]


def get_message(
    session: Session, config: Config, org_id: int, email_id: int, *, show_images: bool = False
) -> MessageView:
    """The message with its body made safe to show (see the module docstring)."""
    email = _email(session, org_id, email_id)
    raw, body, state = _raw(session, config, email)
    parts = MessageParts("", None, False, (), False)
    if raw is not None:
        try:
            parts = read_parts(raw)
        except MalformedMessage as exc:
            state = f"The stored message cannot be shown: {exc}."
    if body is not None and body.snippet is None and state == STORED:
        body.snippet, body.attachments = snippet_of(parts.text), len(parts.attachments)
    blocked = 0
    html = None
    if parts.html is not None:
        key = derive_key(config.security.key()) if show_images else None
        proxy = (lambda url: sign_image_url(key, url)) if key is not None else None
        safe = sanitize_mail_html(parts.html, proxy=proxy)
        html, blocked = safe.html, safe.blocked_images
    return MessageView(
        id=email.id,
        message_id=email.message_id,
        thread_id=email.thread_id,
        subject=email.subject or "",
        from_name=email.from_name or "",
        from_address=email.from_addr,
        to=list(email.to_addrs or []),
        cc=list(email.cc_addrs or []),
        date=email.sent_at,
        text=parts.text,
        text_html=text_to_html(parts.text),
        html=html,
        blocked_images=blocked,
        attachments=list(parts.attachments),
        body_state=state,
        truncated=parts.truncated,
    )


def get_attachment(session: Session, config: Config, org_id: int, email_id: int, index: int) -> Attachment:
    """Attachment ``index`` of the message (as :func:`get_message` numbers them), to download."""
    email = _email(session, org_id, email_id)
    raw, _, _ = _raw(session, config, email)
    found = None
    if raw is not None:
        try:
            found = attachment_data(raw, index)
        except MalformedMessage:
            found = None
    if found is None:
        raise MessageError(f"Message {email_id} has no attachment {index}.", "attachment")
    info, data = found
    return Attachment(safe_filename(info.filename, index, info.content_type), download_type(info.content_type), data)
