"""The Exchange Online mailbox model behind :mod:`standins.graph`: folders, messages, delta state.

It follows Exchange's semantics as Microsoft Graph exposes them, not IMAP's:

* Folders have opaque ids; the well-known ones (inbox, drafts, sentitems,
  deleteditems, junkemail, archive, outbox) can also be addressed by those names.
  Folders nest (``childFolders``).
* Every message is one item in one folder, with an opaque id. Moving a message
  creates a new item (new id, new ``createdDateTime``) in the target folder and
  deletes the original, as ``message: move`` documents.
* Each mailbox has one change counter. Creating or changing an item stamps it
  with the next value; deleting or moving it out records a tombstone in its old
  folder. A delta token remembers the counter value its round started from, so
  the next round returns the items changed since and ``@removed`` entries for
  the tombstones since. :meth:`GraphMailbox.expire_sync_state` invalidates every
  token (Graph answers 410 Gone, ``SyncStateNotFound``).
* ``conversationId``: a message whose In-Reply-To or References name a message
  already in the mailbox joins that message's conversation; otherwise it starts
  one.
* Delivered mail carries its transport headers (``internetMessageHeaders``);
  items created in the mailbox (sent copies, drafts, created messages) do not,
  as in Exchange Online. Their In-Reply-To and References are still readable as
  the MAPI properties PidTagInReplyToId (``String 0x1042``) and
  PidTagInternetReferences (``String 0x1039``); the size is PidTagMessageSize
  (``Integer 0x0E08``).

Each mailbox has its own lock; callers take ``mailbox.lock`` around any
read-modify-write sequence.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

WELL_KNOWN = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "archive": "Archive",
    "outbox": "Outbox",
}
FLAG_STATUSES = ("notFlagged", "flagged", "complete")
PROP_MESSAGE_FLAGS = "Integer 0x0E07"  # PidTagMessageFlags: MSGFLAG_READ 0x1, MSGFLAG_UNSENT 0x8
PROP_MESSAGE_SIZE = "Integer 0x0E08"  # PidTagMessageSize
PROP_IN_REPLY_TO = "String 0x1042"  # PidTagInReplyToId
PROP_REFERENCES = "String 0x1039"  # PidTagInternetReferences


class GraphError(Exception):
    """A Graph error answer: HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def new_id(prefix: str = "AAMkAGI2") -> str:
    """An opaque Exchange-style id, e.g. ``AAMkAGI2Tg...AAA=``."""
    return prefix + secrets.token_urlsafe(36) + "AAA="


def graph_time(when: datetime) -> str:
    """Graph's DateTimeOffset as it serialises message times: ``2026-11-22T10:02:11Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str
    well_known: str | None = None
    tombstones: list[tuple[int, str]] = field(default_factory=list)  # (change number, message id)


@dataclass
class Item:
    """One message in one folder. ``raw`` is its MIME; other fields are Exchange state."""

    id: str
    folder_id: str
    raw: bytes
    conversation_id: str
    created: datetime
    received: datetime
    change: int
    is_read: bool = False
    flag: str = "notFlagged"
    is_draft: bool = False
    delivered: bool = True  # came in through transport: internetMessageHeaders are known
    props: dict[str, str] = field(default_factory=dict)  # extended properties set through PATCH

    def headers(self) -> Message:
        return message_from_bytes(self.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=compat32)


@dataclass
class DeltaRound:
    """A round in progress: the snapshot it pages through and where the next round starts."""

    folder_id: str
    entries: list[tuple[str, Item | None]]  # (id, item) or (id, None) for @removed
    start_change: int
    select: tuple[str, ...] | None
    page_size: int
    position: int = 0


@dataclass
class DeltaToken:
    folder_id: str
    change: int
    select: tuple[str, ...] | None
    page_size: int


class GraphMailbox:
    """One user's mailbox."""

    def __init__(self, address: str, display_name: str | None = None) -> None:
        self.address = address.lower()
        self.display_name = display_name or address.split("@")[0].title()
        self.user_id = secrets.token_hex(16)
        self.lock = threading.RLock()
        self.root_id = new_id("AAMkAGRv")
        self.folders: dict[str, Folder] = {}
        self.items: dict[str, Item] = {}
        self.change = 0
        self.rounds: dict[str, DeltaRound] = {}  # $skiptoken -> round
        self.tokens: dict[str, DeltaToken] = {}  # $deltatoken -> state
        for name, display in WELL_KNOWN.items():
            self.add_folder(display, well_known=name)

    # ------------------------------------------------------------ folders
    def add_folder(self, display_name: str, parent: str | None = None, *, well_known: str | None = None) -> str:
        with self.lock:
            parent_id = self.folder(parent).id if parent else self.root_id
            folder = Folder(new_id("AAMkAGZv"), display_name, parent_id, well_known)
            self.folders[folder.id] = folder
            return folder.id

    def folder(self, key: str) -> Folder:
        """A folder by id or well-known name (case-insensitive, as Graph accepts)."""
        found = self.folders.get(key)
        if found is None:
            found = next((f for f in self.folders.values() if f.well_known == key.lower()), None)
        if found is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return found

    def children(self, parent_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == parent_id]

    def in_folder(self, folder_id: str) -> list[Item]:
        return sorted((i for i in self.items.values() if i.folder_id == folder_id), key=lambda i: i.change)

    # ------------------------------------------------------------ items
    def item(self, item_id: str) -> Item:
        found = self.items.get(item_id)
        if found is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return found

    def _next_change(self) -> int:
        self.change += 1
        return self.change

    def add(
        self,
        raw: bytes,
        folder: str = "inbox",
        *,
        is_read: bool = False,
        is_draft: bool = False,
        delivered: bool = True,
        received: datetime | None = None,
    ) -> Item:
        """Store ``raw`` (CRLF line ends are enforced) as a new item in ``folder``."""
        raw = _crlf(raw)
        with self.lock:
            target = self.folder(folder)
            now = datetime.now(UTC).replace(microsecond=0)
            item = Item(
                id=new_id(),
                folder_id=target.id,
                raw=raw,
                conversation_id=self._conversation_for(raw),
                created=now,
                received=received or now,
                change=self._next_change(),
                is_read=is_read,
                is_draft=is_draft,
                delivered=delivered,
            )
            self.items[item.id] = item
            return item

    def _conversation_for(self, raw: bytes) -> str:
        msg = message_from_bytes(raw, policy=compat32)
        wanted = set(" ".join(str(msg.get(h, "")) for h in ("Message-ID", "In-Reply-To", "References")).split())
        for other in self.items.values():
            if other.headers().get("Message-ID", "").strip() in wanted:
                return other.conversation_id
        return "AAQkAGI2" + secrets.token_urlsafe(24) + "="

    def update(self, item_id: str, *, is_read: bool | None = None, flag: str | None = None) -> Item:
        with self.lock:
            item = self.item(item_id)
            if is_read is not None:
                item.is_read = is_read
            if flag is not None:
                if flag not in FLAG_STATUSES:
                    raise GraphError(400, "ErrorInvalidArgument", f"flagStatus {flag!r} is not valid.")
                item.flag = flag
            item.change = self._next_change()
            return item

    def set_flags(self, item_id: str, flags: Iterable[str]) -> Item:
        """IMAP-style flags (``\\Seen``, ``\\Flagged``) onto isRead / flag.flagStatus."""
        flags = set(flags)
        return self.update(item_id, is_read="\\Seen" in flags, flag="flagged" if "\\Flagged" in flags else "notFlagged")

    def delete(self, item_id: str) -> None:
        """Remove an item for good (a tombstone stays for delta)."""
        with self.lock:
            item = self.items.pop(item_id, None)
            if item is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            self.folders[item.folder_id].tombstones.append((self._next_change(), item.id))

    def move(self, item_id: str, destination: str) -> Item:
        """A new item in ``destination`` (new id), the original deleted."""
        with self.lock:
            item = self.item(item_id)
            target = self.folder(destination)
            self.delete(item_id)
            moved = Item(
                id=new_id(),
                folder_id=target.id,
                raw=item.raw,
                conversation_id=item.conversation_id,
                created=datetime.now(UTC).replace(microsecond=0),
                received=item.received,
                change=self._next_change(),
                is_read=item.is_read,
                flag=item.flag,
                is_draft=item.is_draft,
                delivered=item.delivered,
            )
            self.items[moved.id] = moved
            return moved

    def by_message_id(self, message_id: str) -> list[Item]:
        return [i for i in self.items.values() if i.headers().get("Message-ID", "").strip() == message_id]

    # ------------------------------------------------------------ delta
    def expire_sync_state(self) -> None:
        """Every delta and skip token now answers 410 Gone (SyncStateNotFound)."""
        with self.lock:
            self.tokens.clear()
            self.rounds.clear()

    def start_round(self, folder_key: str, since: DeltaToken | None, select: tuple[str, ...] | None, page: int) -> str:
        """Snapshot the changes of a folder since ``since`` (None: everything); returns a skip token."""
        with self.lock:
            folder = self.folder(folder_key) if since is None else self.folders.get(since.folder_id)
            if folder is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified folder was not found in the store.")
            after = since.change if since is not None else 0
            entries: list[tuple[str, Item | None]] = [(i.id, i) for i in self.in_folder(folder.id) if i.change > after]
            if since is not None:
                live = {i for i, _ in entries}
                entries += [(mid, None) for ch, mid in folder.tombstones if ch > after and mid not in live]
            round_ = DeltaRound(folder.id, entries, self.change, select, page)
            token = secrets.token_urlsafe(24)
            self.rounds[token] = round_
            return token

    def next_page(self, skiptoken: str) -> tuple[list[tuple[str, Item | None]], str | None, str | None, DeltaRound]:
        """One page of a round: (entries, next skip token or None, delta token or None, round)."""
        with self.lock:
            round_ = self.rounds.pop(skiptoken, None)
            if round_ is None:
                raise GraphError(410, "SyncStateNotFound", "The sync state generation is not found.")
            page = round_.entries[round_.position : round_.position + round_.page_size]
            round_.position += len(page)
            if round_.position < len(round_.entries):
                token = secrets.token_urlsafe(24)
                self.rounds[token] = round_
                return page, token, None, round_
            delta = secrets.token_urlsafe(32)
            self.tokens[delta] = DeltaToken(round_.folder_id, round_.start_change, round_.select, round_.page_size)
            return page, None, delta, round_

    def delta_token(self, token: str) -> DeltaToken:
        with self.lock:
            state = self.tokens.get(token)
            if state is None:
                raise GraphError(410, "SyncStateNotFound", "The sync state generation is not found.")
            return state


# ---------------------------------------------------------------- MIME helpers


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """``[(display name, address)]`` of one address header."""
    values = [str(v) for v in msg.get_all(name, [])]
    return [(n, a) for n, a in getaddresses(values) if a]


def header_date(msg: Message) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(str(msg.get("Date", "")))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
