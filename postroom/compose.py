"""Composing outgoing messages: pure functions, no I/O.

>>> mid, raw = compose_message(sender="a@example.com", to=["b@example.com"], subject="Hi",
...                            text="Hello", domain="example.com")
>>> raw.startswith(b"Message-ID: " + mid.encode() + b"\\r\\n")
True
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from postroom.mime import Address, normalise_msgid

__all__ = ["compose_message", "make_message_id"]


_COMPOSE_POLICY = policy.SMTP


def make_message_id(domain: str) -> str:
    """A fresh globally unique id, e.g. ``<3f2b...9c@mail.example.com>``."""
    return f"<{uuid.uuid4().hex}@{domain}>"


def compose_message(
    *,
    sender: Address | str,
    to: list[str],
    subject: str,
    text: str,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    date: datetime | None = None,
    domain: str,
) -> tuple[str, bytes]:
    """Build a text/plain UTF-8 message; returns ``(message_id, raw_bytes)``.

    CRLF line endings; the body is 7bit, quoted-printable or base64, whichever
    the stdlib finds shortest; a non-ASCII subject or name is RFC 2047-encoded.
    A reply with ``in_reply_to`` and no ``references`` gets References set to it.
    """
    message_id = normalise_msgid(message_id) or make_message_id(domain)
    msg = EmailMessage(policy=_COMPOSE_POLICY)
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["From"] = formataddr((sender.name, sender.email)) if isinstance(sender, Address) else sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["MIME-Version"] = "1.0"
    body = text if text.endswith("\n") else text + "\n"
    encoded = body.encode("utf-8")
    if encoded.isascii() and max(map(len, body.splitlines())) <= 78:
        cte = "7bit"
    else:  # mostly ASCII reads better as quoted-printable; other scripts are shorter in base64
        high = sum(1 for byte in encoded if byte > 0x7F)
        cte = "quoted-printable" if high * 4 <= len(encoded) else "base64"
    msg.set_content(body, charset="utf-8", cte=cte)
    # The msg-id headers are written by hand: the stdlib policy turns a long id
    # into RFC 2047 encoded-words, which no mail client can thread on. Ids that
    # are not ASCII cannot travel in 7-bit mail and are dropped.
    ids = [f"Message-ID: {message_id}"]
    reply_to = normalise_msgid(in_reply_to)
    if reply_to and reply_to.isascii():
        ids.append(f"In-Reply-To: {reply_to}")
        references = references or (reply_to,)
    refs = [r for r in dict.fromkeys(map(normalise_msgid, references)) if r and r.isascii()]
    if refs:
        ids.append("References: " + "\r\n ".join(refs))
    return message_id, "\r\n".join(ids).encode("ascii") + b"\r\n" + msg.as_bytes()
