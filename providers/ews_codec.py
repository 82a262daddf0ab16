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
  flags and ConversationId; the header block is rebuilt from them (:func:`headers_of`).
  EWS keeps Message-ID, In-Reply-To and References as properties of every item, so
  items created in the mailbox (Sent Items), which carry no transport headers, get
  the same block as delivered mail.
* GetItem for bodies: MimeContent alone.

The follow-up flag is the MAPI property PidTagFlagStatus (0x1090; 2 = flagged), read as
an extended property, since exchangelib's Message has no field for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exchangelib import ExtendedProperty, Message
from exchangelib.fields import FieldPath

from providers.base import RemoteMessage
from providers.common import cursors
from providers.common.messages import Address, HeaderFields, header_block, imap_flags
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
        return cursors.dump({"folder": self.folder, "syncState": self.sync_state})

    @classmethod
    def load(cls, text: str, folder: str) -> Cursor:
        """The cursor in ``text``, refused unless it belongs to ``folder`` and holds a state."""
        cursor = cursors.load(text, "EWS", lambda data: cls(str(data["folder"]), str(data["syncState"])))
        if cursor.folder != folder or not cursor.sync_state:
            raise CursorInvalidError(f"EWS cursor for another folder: {text[:80]!r}")
        return cursor


def flags_of(item: Any) -> frozenset[str]:
    """IMAP-style flags: IsRead -> ``\\Seen``, PidTagFlagStatus 2 -> ``\\Flagged``, IsDraft -> ``\\Draft``."""
    flagged = getattr(item, "postroom_flag_status", None) == FLAG_STATUS_FLAGGED
    return imap_flags(bool(getattr(item, "is_read", False)), flagged, bool(getattr(item, "is_draft", False)))


def _address(mailbox: Any) -> Address:
    return getattr(mailbox, "name", None), getattr(mailbox, "email_address", None)


def _addresses(mailboxes: Iterable[Any] | None) -> list[Address]:
    return [_address(m) for m in mailboxes or ()]


def headers_of(item: Any) -> bytes:
    """An RFC 5322 header block (CRLF lines, each value on one line) rebuilt from an item
    fetched with :data:`HEADER_FIELD_NAMES`."""
    fields = HeaderFields(
        message_id=item.message_id,
        in_reply_to=item.in_reply_to,
        references=item.references,
        author=_address(item.author),
        sender=_address(item.sender),
        reply_to=_addresses(item.reply_to),
        to=_addresses(item.to_recipients),
        cc=_addresses(item.cc_recipients),
        bcc=_addresses(item.bcc_recipients),
        subject=item.subject,
        sent=item.datetime_sent,
    )
    return header_block(fields, unfold=True)


def plain_datetime(value: datetime | None) -> datetime | None:
    """An aware stdlib datetime in UTC for exchangelib's EWSDateTime, whose ``astimezone`` accepts
    only exchangelib's own time zones (so the database layer could not store it)."""
    return None if value is None else datetime.fromtimestamp(value.timestamp(), tz=UTC)


def remote_message(item: Any) -> RemoteMessage:
    """A :class:`RemoteMessage` from an item fetched with :data:`HEADER_FIELD_NAMES`."""
    conversation = getattr(item.conversation_id, "id", None)
    return RemoteMessage(
        remote_id=str(item.id),
        headers=headers_of(item),
        flags=flags_of(item),
        size=item.size,
        internal_date=plain_datetime(item.datetime_received),
        thread_hint=conversation,
        provider_message_id=str(item.id),
    )
