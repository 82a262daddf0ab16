"""Messages as APIs without IMAP describe them: their flags, and their header block.

Flags. Gmail labels, Graph properties and EWS properties all come down to four states,
which :func:`imap_flags` turns into the IMAP flags the engine stores (``\\Seen``,
``\\Flagged``, ``\\Draft``, ``\\Answered``).

Header blocks. Graph and EWS keep no raw header block short of the whole MIME message, so
the block the engine indexes is rebuilt from the message's properties
(:class:`HeaderFields`, :func:`header_block`): Message-ID, In-Reply-To, References, From,
Sender (only where it differs from From), Reply-To, To, Cc, Bcc, Subject (an RFC 2047
encoded-word when not ASCII) and Date, in that order, each line ending in CRLF. Where the
server kept a message's own transport headers, those are used as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from functools import cache

SEEN, FLAGGED, DRAFT, ANSWERED = "\\Seen", "\\Flagged", "\\Draft", "\\Answered"


@cache
def imap_flags(read: bool, flagged: bool, draft: bool, answered: bool = False) -> frozenset[str]:
    """The IMAP flags of a message in these states.

    >>> sorted(imap_flags(read=True, flagged=True, draft=False))
    ['\\\\Flagged', '\\\\Seen']
    """
    states = ((read, SEEN), (flagged, FLAGGED), (draft, DRAFT), (answered, ANSWERED))
    return frozenset(flag for on, flag in states if on)


HEADER_ORDER: tuple[str, ...] = ("Message-ID", "In-Reply-To", "References", "From", "Sender", "Reply-To")
HEADER_ORDER += ("To", "Cc", "Bcc", "Subject", "Date")
# kept from a delivered message's own transport headers where the API gives them (there is no
# property for them): where a reply was delivered to, and whether it is an auto-reply
TRANSPORT_ONLY = ("delivered-to", "auto-submitted", "x-autoreply", "x-autorespond", "precedence")

Address = tuple[str | None, str | None]  # (display name, address), as the API gives them


@dataclass(frozen=True)
class HeaderFields:
    """The properties a header block is rebuilt from."""

    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    author: Address | None = None  # From
    sender: Address | None = None
    reply_to: Sequence[Address] = ()
    to: Sequence[Address] = ()
    cc: Sequence[Address] = ()
    bcc: Sequence[Address] = ()
    subject: str | None = None
    sent: datetime | None = None


def format_address(address: Address | None) -> str | None:
    """``"Rita Jones <rita@example.com>"``; no name where it only repeats the address; None without an address."""
    name, email = address or (None, None)
    if not email:
        return None
    return formataddr((name if name and name != email else "", email), charset="utf-8")


def format_addresses(addresses: Iterable[Address]) -> str | None:
    values = [a for a in map(format_address, addresses) if a]
    return ", ".join(values) or None


def header_block(
    fields: HeaderFields, transport: Mapping[str, tuple[str, str]] | None = None, *, unfold: bool = False
) -> bytes:
    """The RFC 5322 header block of a message, rebuilt from ``fields``.

    ``transport`` maps lower-case header names to the message's own ``(name, value)`` lines,
    which win over the rebuilt ones; ``unfold`` writes every rebuilt value on one line
    (whitespace runs become one space).

    >>> header_block(HeaderFields(message_id="<a@b>", author=("Rita", "rita@example.com"), subject="Hi"))
    b'Message-ID: <a@b>\\r\\nFrom: Rita <rita@example.com>\\r\\nSubject: Hi\\r\\n'
    """
    subject = fields.subject
    if subject is not None and not subject.isascii():
        subject = Header(subject, "utf-8").encode()
    author, sender = format_address(fields.author), format_address(fields.sender)
    values = {
        "Message-ID": fields.message_id,
        "In-Reply-To": fields.in_reply_to,
        "References": fields.references,
        "From": author,
        "Sender": sender if sender != author else None,
        "Reply-To": format_addresses(fields.reply_to),
        "To": format_addresses(fields.to),
        "Cc": format_addresses(fields.cc),
        "Bcc": format_addresses(fields.bcc),
        "Subject": subject,
        "Date": format_datetime(fields.sent) if fields.sent else None,
    }
    lines: list[tuple[str, str]] = []
    for name in HEADER_ORDER:
        own = transport.get(name.lower()) if transport else None
        if own is not None:
            lines.append(own)
        elif value := values[name]:
            lines.append((name, " ".join(str(value).split()) if unfold else str(value)))
    lines.extend(transport[name] for name in TRANSPORT_ONLY if transport and name in transport)
    return header_lines(lines)


def header_lines(lines: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value`` lines with CRLF, as bytes (lone surrogates kept as the bytes they stood for)."""
    return "".join(f"{name}: {value}\r\n" for name, value in lines).encode("utf-8", "surrogateescape")
