"""EWS items as Postroom reads them (for :class:`providers.ews.EwsProvider`): cursors, properties, header blocks.

Cursors are JSON: ``{"v": 1, "folder": "AAMkF...", "syncState": "H4sIAAAA..."}`` -- the
SyncState Exchange returned with the last page of the folder's last completed
SyncFolderItems round (``IncludesLastItemInRange`` true), and the id of the folder it
belongs to. A cursor for another folder, or one that does not parse, is an invalid
cursor; so is a state Exchange refuses (``ErrorInvalidSyncStateData``), and the
engine then resyncs the folder.

Every EWS call names the properties it needs (exchangelib's default is ~100 fields
including the whole MIME message):

* SyncFolderItems: :data:`SYNC_FIELDS` -- read state, draft state, follow-up flag.
* GetItem for the index: :data:`HEADER_FIELDS` -- the header properties, size, dates,
  flags and ConversationId; the header block is rebuilt from them (:func:`header_block`).
  EWS keeps Message-ID, In-Reply-To and References as properties of every item, so
  items created in the mailbox (Sent Items), which carry no transport headers, get
  the same block as delivered mail.
* GetItem for bodies: MimeContent alone.

The follow-up flag is the MAPI property PidTagFlagStatus (0x1090; 2 = flagged), read as
an extended property, since exchangelib's Message has no field for it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any

from exchangelib import ExtendedProperty, Message
from exchangelib.fields import FieldPath

from providers.base import RemoteMessage
from providers.errors import CursorInvalidError

MSGFLAG_READ, MSGFLAG_UNSENT = 0x1, 0x8
FLAG_STATUS_FLAGGED = 2


class FlagStatus(ExtendedProperty):
    """PidTagFlagStatus: 0 none, 1 complete, 2 flagged for follow-up."""

    property_tag = 0x1090
    property_type = "Integer"


class MessageFlags(ExtendedProperty):
    """PidTagMessageFlags: MSGFLAG_READ (1), MSGFLAG_UNSENT (8, a draft), ... Settable only at creation."""

    property_tag = 0x0E07
    property_type = "Integer"


_REGISTERED = threading.Lock()
EXTENDED = {"postroom_flag_status": FlagStatus, "postroom_message_flags": MessageFlags}


def register_properties() -> None:
    """Teach exchangelib's Message the two MAPI properties above, once per process.

    exchangelib keeps extended properties as fields of the item class itself, so this
    is a class-level registration; it is idempotent and adds fields only under
    ``postroom_`` names, so it changes nothing for other users of exchangelib.
    """
    with _REGISTERED:
        known = {f.name for f in Message.FIELDS}
        for name, cls in EXTENDED.items():
            if name not in known:
                Message.register(name, cls)


SYNC_FIELD_NAMES = ("is_read", "is_draft", "postroom_flag_status")
HEADER_FIELD_NAMES = (
    "message_id",
    "in_reply_to",
    "references",
    "author",
    "sender",
    "reply_to",
    "to_recipients",
    "cc_recipients",
    "bcc_recipients",
    "subject",
    "datetime_sent",
    "datetime_received",
    "size",
    "conversation_id",
    *SYNC_FIELD_NAMES,
)
BODY_FIELD_NAMES = ("mime_content",)


def field_paths(names: Iterable[str]) -> set[FieldPath]:
    """exchangelib FieldPaths for Message field names (for a service's ``additional_fields``)."""
    return {FieldPath(field=Message.get_field_by_fieldname(name)) for name in names}


@dataclass(frozen=True)
class Cursor:
    """A decoded EWS folder cursor."""

    folder: str
    sync_state: str

    def dump(self) -> str:
        return json.dumps({"v": 1, "folder": self.folder, "syncState": self.sync_state}, sort_keys=True)

    @classmethod
    def load(cls, text: str, folder: str) -> Cursor:
        try:
            data = json.loads(text)
            version, owner, state = int(data["v"]), str(data["folder"]), str(data["syncState"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CursorInvalidError(f"unreadable EWS cursor {text[:80]!r}") from exc
        if version != 1 or owner != folder or not state:
            raise CursorInvalidError(f"EWS cursor for another folder or version: {text[:80]!r}")
        return cls(owner, state)


def flags_of(item: Any) -> frozenset[str]:
    """IMAP-style flags: IsRead -> ``\\Seen``, PidTagFlagStatus 2 -> ``\\Flagged``, IsDraft -> ``\\Draft``."""
    flags = set()
    if getattr(item, "is_read", False):
        flags.add("\\Seen")
    if getattr(item, "postroom_flag_status", None) == FLAG_STATUS_FLAGGED:
        flags.add("\\Flagged")
    if getattr(item, "is_draft", False):
        flags.add("\\Draft")
    return frozenset(flags)


def _address(mailbox: Any) -> str | None:
    address = getattr(mailbox, "email_address", None)
    if not address:
        return None
    name = getattr(mailbox, "name", None) or ""
    return formataddr((name if name != address else "", address), charset="utf-8")


def _addresses(mailboxes: Iterable[Any] | None) -> str | None:
    values = [a for a in (_address(m) for m in mailboxes or ()) if a]
    return ", ".join(values) or None


HEADER_ORDER: tuple[str, ...] = ("Message-ID", "In-Reply-To", "References", "From", "Sender", "Reply-To")
HEADER_ORDER += ("To", "Cc", "Bcc", "Subject", "Date")


def header_block(item: Any) -> bytes:
    """An RFC 5322 header block (CRLF lines) rebuilt from an item fetched with :data:`HEADER_FIELD_NAMES`."""
    subject = item.subject
    if subject is not None and not subject.isascii():
        subject = Header(subject, "utf-8").encode()
    sender, author = _address(item.sender), _address(item.author)
    values = {
        "Message-ID": item.message_id,
        "In-Reply-To": item.in_reply_to,
        "References": item.references,
        "From": author,
        "Sender": sender if sender != author else None,
        "Reply-To": _addresses(item.reply_to),
        "To": _addresses(item.to_recipients),
        "Cc": _addresses(item.cc_recipients),
        "Bcc": _addresses(item.bcc_recipients),
        "Subject": subject,
        "Date": format_datetime(item.datetime_sent) if item.datetime_sent else None,
    }
    lines = [f"{name}: {' '.join(str(values[name]).split())}" for name in HEADER_ORDER if values[name]]
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")


def plain_datetime(value: datetime | None) -> datetime | None:
    """An aware stdlib datetime in UTC for exchangelib's EWSDateTime, whose ``astimezone`` accepts
    only exchangelib's own time zones (so the database layer could not store it)."""
    return None if value is None else datetime.fromtimestamp(value.timestamp(), tz=UTC)


def remote_message(item: Any) -> RemoteMessage:
    """A :class:`RemoteMessage` from an item fetched with :data:`HEADER_FIELD_NAMES`."""
    conversation = getattr(item.conversation_id, "id", None)
    return RemoteMessage(
        remote_id=str(item.id),
        headers=header_block(item),
        flags=flags_of(item),
        size=item.size,
        internal_date=plain_datetime(item.datetime_received),
        thread_hint=conversation,
        provider_message_id=str(item.id),
    )
