"""Graph messages as Postroom reads them, for :class:`providers.graph.GraphProvider`: cursors, flags, header blocks.

Cursors are JSON: ``{"v": 1, "deltaLink": "https://graph.microsoft.com/v1.0/me/mailFolders('AAMk...')/
messages/delta?$deltatoken=..."}`` -- the ``@odata.deltaLink`` of the folder's last
completed delta round, followed as given next time (Graph encodes the query options
into it). A link for another host than the configured Graph root is refused as an
invalid cursor, so a bearer token is never sent elsewhere.

Graph's delta does not say whether an item is new or changed: both come back as the
message with its selected properties. So every item of an incremental round is listed
in ``ChangeSet.new`` (the engine skips ids it already indexed) and, with its flags, in
``ChangeSet.changed`` (the engine updates only ids it knows). ``@removed`` entries are
``removed``.

Header blocks: Graph has no raw-header call short of the whole MIME, so the block is
rebuilt from what ``$select`` returns. Delivered mail carries its transport headers
(``internetMessageHeaders``), which are used as they are; items created in the
mailbox (Sent Items, drafts) have none, so Message-ID comes from ``internetMessageId``,
From/To/Cc/Reply-To/Subject/Date from the message properties, and In-Reply-To and
References from the MAPI properties PidTagInReplyToId and PidTagInternetReferences.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any
from urllib.parse import urlsplit

from providers.base import RemoteMessage
from providers.errors import CursorInvalidError

SIZE = ("integer", 0x0E08)  # PidTagMessageSize
IN_REPLY_TO = ("string", 0x1042)  # PidTagInReplyToId
REFERENCES = ("string", 0x1039)  # PidTagInternetReferences
EXPAND = (
    "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'String 0x1042' or id eq 'String 0x1039')"
)
HEADER_SELECT = (
    "internetMessageId,internetMessageHeaders,subject,from,sender,toRecipients,ccRecipients,bccRecipients,"
    "replyTo,sentDateTime,receivedDateTime,conversationId,isRead,isDraft,flag"
)
DELTA_SELECT = "isRead,isDraft,flag"
HEADER_ORDER: tuple[str, ...] = ("Message-ID", "In-Reply-To", "References", "From", "Sender", "Reply-To", "To", "Cc")
HEADER_ORDER += ("Bcc", "Subject", "Date")


@dataclass(frozen=True)
class Cursor:
    """A decoded Graph folder cursor."""

    delta_link: str

    def dump(self) -> str:
        return json.dumps({"v": 1, "deltaLink": self.delta_link}, sort_keys=True)

    @classmethod
    def load(cls, text: str, root: str) -> Cursor:
        try:
            data = json.loads(text)
            link = str(data["deltaLink"])
            version = int(data["v"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CursorInvalidError(f"unreadable Graph cursor {text[:80]!r}") from exc
        if version != 1 or "/messages/delta" not in link or _origin(link) != _origin(root):
            raise CursorInvalidError(f"Graph cursor for another service or version: {link[:80]!r}")
        return cls(link)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def flags_of(message: Mapping[str, Any]) -> frozenset[str]:
    """IMAP-style flags for a Graph message: isRead -> ``\\Seen``, flagged -> ``\\Flagged``, isDraft -> ``\\Draft``."""
    flags = set()
    if message.get("isRead"):
        flags.add("\\Seen")
    if (message.get("flag") or {}).get("flagStatus") == "flagged":
        flags.add("\\Flagged")
    if message.get("isDraft"):
        flags.add("\\Draft")
    return frozenset(flags)


def extended(message: Mapping[str, Any]) -> dict[tuple[str, int], str]:
    """``{("integer", 0xE08): "5120", ...}`` from ``singleValueExtendedProperties`` (ids in any spelling)."""
    out: dict[tuple[str, int], str] = {}
    for prop in message.get("singleValueExtendedProperties") or []:
        kind, _, tag = str(prop.get("id", "")).strip().partition(" ")
        try:
            out[(kind.lower(), int(tag, 16))] = str(prop.get("value", ""))
        except ValueError:
            continue
    return out


def _address(recipient: Mapping[str, Any] | None) -> str | None:
    email = (recipient or {}).get("emailAddress") or {}
    address = email.get("address")
    if not address:
        return None
    name = email.get("name") or ""
    return formataddr((name if name != address else "", address), charset="utf-8")


def _addresses(recipients: Iterable[Mapping[str, Any]] | None) -> str | None:
    values = [a for a in (_address(r) for r in recipients or ()) if a]
    return ", ".join(values) or None


def _graph_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def header_block(message: Mapping[str, Any]) -> bytes:
    """An RFC 5322 header block (CRLF lines) rebuilt from a Graph message."""
    transport: dict[str, tuple[str, str]] = {}
    for header in message.get("internetMessageHeaders") or []:
        name, value = str(header.get("name", "")), str(header.get("value", ""))
        transport.setdefault(name.lower(), (name, value))
    props = extended(message)
    subject = message.get("subject")
    if subject is not None and not subject.isascii():
        subject = Header(subject, "utf-8").encode()
    sent = _graph_time(message.get("sentDateTime"))
    sender, author = _address(message.get("sender")), _address(message.get("from"))
    synthesized = {
        "Message-ID": message.get("internetMessageId"),
        "In-Reply-To": props.get(IN_REPLY_TO),
        "References": props.get(REFERENCES),
        "From": author,
        "Sender": sender if sender != author else None,
        "Reply-To": _addresses(message.get("replyTo")),
        "To": _addresses(message.get("toRecipients")),
        "Cc": _addresses(message.get("ccRecipients")),
        "Bcc": _addresses(message.get("bccRecipients")),
        "Subject": subject,
        "Date": format_datetime(sent) if sent else None,
    }
    lines = []
    for name in HEADER_ORDER:
        if name.lower() in transport:
            lines.append("{}: {}".format(*transport[name.lower()]))
        elif synthesized[name]:
            lines.append(f"{name}: {synthesized[name]}")
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")


def remote_message(message: Mapping[str, Any]) -> RemoteMessage:
    """A :class:`RemoteMessage` from a message fetched with :data:`HEADER_SELECT` and :data:`EXPAND`."""
    size = extended(message).get(SIZE)
    return RemoteMessage(
        remote_id=str(message["id"]),
        headers=header_block(message),
        flags=flags_of(message),
        size=int(size) if size and size.isdigit() else None,
        internal_date=_graph_time(message.get("receivedDateTime")),
        thread_hint=message.get("conversationId"),
        provider_message_id=str(message["id"]),
    )
