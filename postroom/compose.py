"""Composing outgoing messages: pure functions, no I/O.

>>> mid, raw = compose_message(sender="a@example.com", to=["b@example.com"], subject="Hi",
...                            text="Hello", domain="example.com")
>>> raw.startswith(b"Message-ID: " + mid.encode() + b"\\r\\n")
True

Nothing a caller passes in can add a header line: a subject, sender or recipient with a
line break or another control character, or an In-Reply-To that is not one Message-ID of
the form ``<[!-~]+>``, raises :class:`ComposeError`; References ids of any other form
are left out.

>>> try:
...     compose_message(sender="a@example.com", to=["b@example.com"], subject="Hi", text="Hello",
...                     in_reply_to="<a\\r\\nBcc: c@example.com>", domain="example.com")
... except ComposeError as exc:
...     print(str(exc)[:39])
In-Reply-To must be one Message-ID like
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses

from postroom.errors import UserError
from postroom.mime import Address, is_msgid

__all__ = ["ComposeError", "compose_message", "make_message_id", "unsafe_header_text"]


_COMPOSE_POLICY = policy.SMTP


# an address as the outbox keeps it: no spaces, quotes, brackets, commas or control characters
_PLAIN_ADDRESS = re.compile(r"[^\s\"<>(),;:\\@]+@[^\s\"<>(),;:\\@]+")


class ComposeError(UserError):
    """A message that cannot be written as asked; the text says why in one sentence, ``field``
    names the input at fault (``subject``, ``to``, ``in_reply_to``, ``message_id``, ``sender``)."""


def unsafe_header_text(value: str) -> bool:
    """Whether ``value`` holds something that could end or split a header line: CR, LF or
    any other control character (C0, DEL, C1 such as NEL), or a Unicode line or paragraph
    separator.

    >>> unsafe_header_text("Interview on Tuesday"), unsafe_header_text("Hi\\r\\nBcc: x@y")
    (False, True)
    """
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def make_message_id(domain: str) -> str:
    """A fresh globally unique id, e.g. ``<3f2b...9c@mail.example.com>``."""
    mid = f"<{uuid.uuid4().hex}@{domain}>"
    return mid if is_msgid(mid) else f"<{uuid.uuid4().hex}@postroom.invalid>"


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
    Raises :class:`ComposeError` for input that could add a header line (module docstring).
    """
    _check(sender, subject, to)
    for name, value in (("Message-ID", message_id), ("In-Reply-To", in_reply_to)):
        if value is not None and not is_msgid(value):
            raise ComposeError(
                f"{name} must be one Message-ID like <id@example.com> (printable ASCII, no spaces), not {value!r}.",
                name.lower().replace("-", "_"),
            )
    message_id = message_id or make_message_id(domain)
    msg = EmailMessage(policy=_COMPOSE_POLICY)
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["From"] = formataddr((sender.name, sender.email)) if isinstance(sender, Address) else sender
    msg["To"] = ", ".join(map(_recipient, to))
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
    # into RFC 2047 encoded-words, which no mail client can thread on. Every id
    # written matches is_msgid (printable ASCII, no spaces), so none can end the
    # line it is on; References ids that do not are left out.
    ids = [f"Message-ID: {message_id}"]
    if in_reply_to:
        ids.append(f"In-Reply-To: {in_reply_to}")
        references = references or (in_reply_to,)
    refs = [r for r in dict.fromkeys(r.strip() for r in references) if is_msgid(r)]
    if refs:
        ids.append("References: " + "\r\n ".join(refs))
    return message_id, "\r\n".join(ids).encode("ascii") + b"\r\n" + msg.as_bytes()


def _check(sender: Address | str, subject: str, to: list[str]) -> None:
    if unsafe_header_text(subject):
        raise ComposeError("The subject contains a line break or another control character.", "subject")
    name, address = (sender.name or "", sender.email) if isinstance(sender, Address) else ("", sender)
    if unsafe_header_text(name) or not _PLAIN_ADDRESS.fullmatch(address):
        raise ComposeError(f"The sender {address!r} is not a plain email address.", "sender")
    if not to:
        raise ComposeError("A message needs at least one recipient.", "to")
    for rcpt in to:
        if unsafe_header_text(rcpt):
            raise ComposeError(
                f"The recipient address {rcpt!r} contains a line break or another control character.", "to"
            )
        _recipient(rcpt)


def _recipient(rcpt: str) -> str:
    """One recipient as written into To: ``ann@example.com`` or ``"Ann" <ann@example.com>``;
    anything that is not exactly one plain address raises :class:`ComposeError`."""
    parsed = getaddresses([rcpt])
    if len(parsed) != 1 or not _PLAIN_ADDRESS.fullmatch(parsed[0][1]):
        raise ComposeError(f"The recipient {rcpt!r} is not one plain email address like ann@example.com.", "to")
    return formataddr(parsed[0])
