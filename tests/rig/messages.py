"""Build small, realistic RFC 5322 messages for tests (raw CRLF bytes)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

_SEQ = itertools.count(1)


def new_message_id(domain: str = "example.test") -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


def make_message(
    *,
    message_id: str | None = None,
    subject: str | None = None,
    from_: str = "Ann Applicant <ann@example.org>",
    to: str = "Rita Recruiter <rita@example.test>",
    cc: str | None = None,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: str | list[str] | None = None,
    date: datetime | None = None,
    body: str | None = None,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A text (optionally + HTML) message; every argument becomes the header it names.

    >>> raw = make_message(message_id="<a@x>", subject="Hi", in_reply_to="<p@x>", references=["<p@x>"])
    >>> b"In-Reply-To: <p@x>" in raw and raw.endswith(b"\\r\\n")
    True
    """
    n = next(_SEQ)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject if subject is not None else f"Test message {n}"
    msg["Date"] = format_datetime(date or datetime.now(UTC).replace(microsecond=0))
    msg["Message-ID"] = message_id or new_message_id()
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references if isinstance(references, str) else " ".join(references)
    for key, value in (headers or {}).items():
        msg[key] = value
    msg["MIME-Version"] = "1.0"
    msg.set_content(body if body is not None else f"Hello,\n\nthis is test message {n}.\n\nRegards\n")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=SMTP)
