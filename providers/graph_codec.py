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
References from the MAPI properties PidTagInReplyToId and PidTagInternetReferences
(:func:`providers.common.messages.header_block` writes the block, as for EWS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from providers.base import RemoteMessage
from providers.common import cursors
from providers.common.messages import Address, HeaderFields, header_block, imap_flags
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


@dataclass(frozen=True)
class Cursor:
    """A decoded Graph folder cursor."""

    delta_link: str

    def dump(self) -> str:
        return cursors.dump({"deltaLink": self.delta_link})

    @classmethod
    def load(cls, text: str, root: str) -> Cursor:
        """The cursor in ``text``, refused unless it is a delta link under ``root``'s origin."""
        cursor = cursors.load(text, "Graph", lambda data: cls(str(data["deltaLink"])))
        link = cursor.delta_link
        if "/messages/delta" not in link or _origin(link) != _origin(root):
            raise CursorInvalidError(f"Graph cursor for another service: {link[:80]!r}")
        return cursor


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def flags_of(message: Mapping[str, Any]) -> frozenset[str]:
    """IMAP-style flags for a Graph message: isRead -> ``\\Seen``, flagged -> ``\\Flagged``, isDraft -> ``\\Draft``."""
    flagged = (message.get("flag") or {}).get("flagStatus") == "flagged"
    return imap_flags(bool(message.get("isRead")), flagged, bool(message.get("isDraft")))


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


def _address(recipient: Mapping[str, Any] | None) -> Address:
    email = (recipient or {}).get("emailAddress") or {}
    return email.get("name"), email.get("address")


def _addresses(recipients: Iterable[Mapping[str, Any]] | None) -> list[Address]:
    return [_address(r) for r in recipients or ()]


def _graph_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def headers_of(message: Mapping[str, Any]) -> bytes:
    """An RFC 5322 header block (CRLF lines) rebuilt from a Graph message (see the module docstring)."""
    transport: dict[str, tuple[str, str]] = {}
    for header in message.get("internetMessageHeaders") or []:
        name, value = str(header.get("name", "")), str(header.get("value", ""))
        transport.setdefault(name.lower(), (name, value))
    props = extended(message)
    fields = HeaderFields(
        message_id=message.get("internetMessageId"),
        in_reply_to=props.get(IN_REPLY_TO),
        references=props.get(REFERENCES),
        author=_address(message.get("from")),
        sender=_address(message.get("sender")),
        reply_to=_addresses(message.get("replyTo")),
        to=_addresses(message.get("toRecipients")),
        cc=_addresses(message.get("ccRecipients")),
        bcc=_addresses(message.get("bccRecipients")),
        subject=message.get("subject"),
        sent=_graph_time(message.get("sentDateTime")),
    )
    return header_block(fields, transport)


def remote_message(message: Mapping[str, Any]) -> RemoteMessage:
    """A :class:`RemoteMessage` from a message fetched with :data:`HEADER_SELECT` and :data:`EXPAND`."""
    size = extended(message).get(SIZE)
    return RemoteMessage(
        remote_id=str(message["id"]),
        headers=headers_of(message),
        flags=flags_of(message),
        size=int(size) if size and size.isdigit() else None,
        internal_date=_graph_time(message.get("receivedDateTime")),
        thread_hint=message.get("conversationId"),
        provider_message_id=str(message["id"]),
    )
