"""Composing outgoing messages: pure functions, no I/O. :func:`compose_message` writes a plain
text message; :func:`compose_rich` the message a template makes (text, HTML, optionally the
data as JSON and an interview invitation).

>>> mid, raw = compose_message(sender="a@example.com", to=["b@example.com"], subject="Hi",
...                            text="Hello", domain="example.com")
>>> raw.startswith(b"Message-ID: " + mid.encode() + b"\\r\\n")
True

Nothing a caller passes in can add a header line: a subject, sender or recipient with a
line break or another control character, or an In-Reply-To that is not one Message-ID of
the form ``<[!-~]+>``, raises :class:`ComposeError`; References ids of any other form
are left out. The same holds for :func:`compose_rich` and its Cc and Reply-To.

>>> try:
...     compose_message(sender="a@example.com", to=["b@example.com"], subject="Hi", text="Hello",
...                     in_reply_to="<a\\r\\nBcc: c@example.com>", domain="example.com")
... except ComposeError as exc:
...     print(str(exc)[:39])
In-Reply-To must be one Message-ID like
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses
from typing import Any

from postroom.errors import UserError
from postroom.mime import Address, is_msgid

__all__ = ["ComposeError", "compose_message", "compose_rich", "make_message_id", "unsafe_header_text"]


_COMPOSE_POLICY = policy.SMTP


# an address as the outbox keeps it: no spaces, quotes, brackets, commas or control characters
_PLAIN_ADDRESS = re.compile(r"[^\s\"<>(),;:\\@]+@[^\s\"<>(),;:\\@]+")


class ComposeError(UserError):
    """A message that cannot be written as asked; the text says why in one sentence, ``field``
    names the input at fault (``subject``, ``to``, ``cc``, ``reply_to``, ``in_reply_to``,
    ``message_id``, ``sender``, ``invitation``)."""


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
    _check_ids(message_id, in_reply_to)
    message_id = message_id or make_message_id(domain)
    msg = EmailMessage(policy=_COMPOSE_POLICY)
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["From"] = _from(sender)
    msg["To"] = ", ".join(map(_recipient, to))
    msg["Subject"] = subject
    msg["MIME-Version"] = "1.0"
    body = _text_body(text)
    msg.set_content(body, charset="utf-8", cte=_cte(body))
    return message_id, _id_lines(message_id, in_reply_to, references) + msg.as_bytes()


def compose_rich(
    *,
    sender: Address | str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    reply_to: str | None = None,
    subject: str,
    text: str,
    html: str,
    json_data: Mapping[str, Any] | None = None,
    invitation_ics: bytes | None = None,
    invitation_method: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    date: datetime | None = None,
    domain: str,
) -> tuple[str, bytes]:
    """Build the message a template makes; returns ``(message_id, raw_bytes)``::

        multipart/mixed                                   (only with an invitation)
          multipart/alternative
            text/plain; charset=utf-8
            application/json                              (only with json_data)
            text/calendar; method=REQUEST; charset=utf-8  (only with an invitation)
            text/html; charset=utf-8                      (last: the one clients prefer)
          application/ics; name=invite.ics                (attachment, only with an invitation)

    The text/calendar part and the invite.ics attachment are what Gmail and Outlook turn
    into accept/decline buttons; the method (REQUEST or CANCEL) is the ICS's own METHOD
    (``invitation_method``, if given, must agree). ``html`` goes in as one part, as given (a
    complete document, see :mod:`postroom.rendering`). Headers: Message-ID, In-Reply-To and
    References as :func:`compose_message` writes them, Date, From, To, Cc, Reply-To,
    Subject, MIME-Version; never Bcc (a Bcc recipient gets the message by the envelope
    only). Everything UTF-8, each part 7bit, quoted-printable or base64 as for
    :func:`compose_message`. Raises :class:`ComposeError` naming the field for input that
    could add a header line (module docstring) or is not one plain address.

    >>> mid, raw = compose_rich(sender="bo@example.com", to=["ann@example.com"], reply_to="bo+k3x@example.com",
    ...                         subject="Hi", text="Hello", html="<html><body>Hello</body></html>",
    ...                         domain="example.com")
    >>> from email import message_from_bytes
    >>> [part.get_content_type() for part in message_from_bytes(raw).walk()]
    ['multipart/alternative', 'text/plain', 'text/html']
    """
    _check(sender, subject, list(to))
    for rcpt in cc:
        _recipient(rcpt, "cc")
    if reply_to is not None:
        _recipient(reply_to, "reply_to")
    _check_ids(message_id, in_reply_to)
    method = _invitation_method(invitation_ics, invitation_method)
    message_id = message_id or make_message_id(domain)
    msg = EmailMessage(policy=_COMPOSE_POLICY)
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["From"] = _from(sender)
    msg["To"] = ", ".join(_recipient(rcpt) for rcpt in to)
    if cc:
        msg["Cc"] = ", ".join(_recipient(rcpt, "cc") for rcpt in cc)
    if reply_to is not None:
        msg["Reply-To"] = _recipient(reply_to, "reply_to")
    msg["Subject"] = subject
    msg["MIME-Version"] = "1.0"
    body = _text_body(text)
    msg.set_content(body, charset="utf-8", cte=_cte(body))
    if json_data is not None:
        data = json.dumps(json_data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        msg.add_alternative(data.encode("utf-8"), maintype="application", subtype="json", cte=_cte(data))
    if invitation_ics is not None:
        ics = invitation_ics.decode("utf-8")
        msg.add_alternative(ics, subtype="calendar", charset="utf-8", cte=_cte(ics), params={"method": method})
    page = _text_body(html)
    msg.add_alternative(page, subtype="html", charset="utf-8", cte=_cte(page))
    if invitation_ics is not None:
        msg.add_attachment(
            invitation_ics, maintype="application", subtype="ics", filename="invite.ics", params={"name": "invite.ics"}
        )
    return message_id, _id_lines(message_id, in_reply_to, references) + msg.as_bytes()


def _check(sender: Address | str, subject: str, to: list[str]) -> None:
    if unsafe_header_text(subject):
        raise ComposeError("The subject contains a line break or another control character.", "subject")
    name, address = (sender.name or "", sender.email) if isinstance(sender, Address) else ("", sender)
    if unsafe_header_text(name) or unsafe_header_text(address) or not _PLAIN_ADDRESS.fullmatch(address):
        raise ComposeError(f"The sender {address!r} is not a plain email address.", "sender")
    if not to:
        raise ComposeError("A message needs at least one recipient.", "to")
    for rcpt in to:
        _recipient(rcpt)


def _check_ids(message_id: str | None, in_reply_to: str | None) -> None:
    for name, value in (("Message-ID", message_id), ("In-Reply-To", in_reply_to)):
        if value is not None and not is_msgid(value):
            raise ComposeError(
                f"{name} must be one Message-ID like <id@example.com> (printable ASCII, no spaces), not {value!r}.",
                name.lower().replace("-", "_"),
            )


def _id_lines(message_id: str, in_reply_to: str | None, references: tuple[str, ...]) -> bytes:
    """The msg-id headers, written by hand: the stdlib policy turns a long id into RFC 2047
    encoded-words, which no mail client can thread on. Every id written matches is_msgid
    (printable ASCII, no spaces), so none can end the line it is on; References ids that do
    not are left out. A reply with no ``references`` gets References set to ``in_reply_to``."""
    ids = [f"Message-ID: {message_id}"]
    if in_reply_to:
        ids.append(f"In-Reply-To: {in_reply_to}")
        references = references or (in_reply_to,)
    refs = [r for r in dict.fromkeys(r.strip() for r in references) if is_msgid(r)]
    if refs:
        ids.append("References: " + "\r\n ".join(refs))
    return "\r\n".join(ids).encode("ascii") + b"\r\n"


def _from(sender: Address | str) -> str:
    return formataddr((sender.name, sender.email)) if isinstance(sender, Address) else sender


def _text_body(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _cte(body: str) -> str:
    """7bit for short ASCII lines; else quoted-printable for mostly ASCII (it reads better),
    base64 for other scripts (it is shorter)."""
    encoded = body.encode("utf-8")
    if encoded.isascii() and max(map(len, body.splitlines()), default=0) <= 78:
        return "7bit"
    high = sum(1 for byte in encoded if byte > 0x7F)
    return "quoted-printable" if high * 4 <= len(encoded) else "base64"


def _invitation_method(ics: bytes | None, given: str | None) -> str:
    """The METHOD of an invitation's ICS (REQUEST or CANCEL), which its text/calendar part repeats."""
    if ics is None:
        if given is not None:
            raise ComposeError("An invitation method was given without the invitation.", "invitation")
        return ""
    found = re.search(rb"^METHOD:(REQUEST|CANCEL)\r?$", ics, re.MULTILINE)
    if found is None or b"BEGIN:VCALENDAR" not in ics:
        raise ComposeError("The invitation must be an iCalendar with METHOD:REQUEST or METHOD:CANCEL.", "invitation")
    method = found.group(1).decode("ascii")
    if given is not None and given.upper() != method:
        raise ComposeError(f"The invitation's method is {method}, not {given}.", "invitation")
    return method


def _recipient(rcpt: str, field: str = "to") -> str:
    """One recipient as written into To, Cc or Reply-To: ``ann@example.com`` or ``"Ann"
    <ann@example.com>``; anything that is not exactly one plain address raises
    :class:`ComposeError` naming ``field``."""
    what = {"to": "recipient", "cc": "Cc recipient", "reply_to": "Reply-To address"}.get(field, field)
    if unsafe_header_text(rcpt):
        raise ComposeError(f"The {what} address {rcpt!r} contains a line break or another control character.", field)
    parsed = getaddresses([rcpt])
    if len(parsed) != 1 or not _PLAIN_ADDRESS.fullmatch(parsed[0][1]):
        raise ComposeError(f"The {what} {rcpt!r} is not one plain email address like ann@example.com.", field)
    return formataddr(parsed[0])
