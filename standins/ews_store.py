"""The mailbox model behind the EWS stand-in: folders, items, sync states, conversations.

Exchange's semantics that matter to a sync client, modelled on purpose:

* A SyncState is opaque and belongs to one folder. The server remembers what the
  client was last told (here: a snapshot of item id -> (version, read state)) and
  answers the difference: ``Create`` for items the client never saw, ``Update``
  for items changed in any way but reading, ``ReadFlagChange`` when only the read
  state moved, ``Delete`` for items gone (moved away or deleted). At most
  ``MaxChangesReturned`` changes per answer, with ``IncludesLastItemInRange`` false
  while more remain. A state the server no longer knows (:meth:`EwsMailbox.expire_sync_states`)
  or made up by the client is ``ErrorInvalidSyncStateData``.
* Every change to an item but reading it bumps its ChangeKey version.
* Items created from MIME are drafts (MSGFLAG_UNSENT) unless ``PR_MESSAGE_FLAGS``
  (0x0E07) is given at creation without that bit, as MIMEToMAPI does in Exchange.
* A reply joins its parent's conversation (ConversationId) when the parent, found
  by In-Reply-To/References, is in the mailbox.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

MSGFLAG_READ, MSGFLAG_UNSENT = 0x1, 0x8
FLAG_STATUS_FLAGGED = 2  # PidTagFlagStatus 0x1090
WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
}


class EwsFault(Exception):
    """An EWS error for one response message: ``code`` is the ResponseCode."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code, self.text = code, text


def _new_id(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str | None
    distinguished: str | None = None
    folder_class: str = "IPF.Note"
    version: int = 1

    @property
    def change_key(self) -> str:
        return base64.b64encode(f"F{self.version}".encode()).decode()


@dataclass
class Item:
    id: str
    folder_id: str
    raw: bytes
    received: datetime
    conversation_id: str
    seq: int
    is_read: bool = False
    is_draft: bool = False
    flag_status: int = 0
    version: int = 1
    reads: int = 0
    delivered: bool = True  # came in from outside: carries transport headers
    extended: dict[tuple[int, str], str] = field(default_factory=dict)

    @property
    def change_key(self) -> str:
        return base64.b64encode(f"CQ{self.version}.{self.reads}".encode()).decode()

    def header(self, name: str) -> str | None:
        value = _parse(self.raw).get(name)
        return None if value is None else " ".join(str(value).split())

    def addresses(self, name: str) -> list[tuple[str, str]]:
        return [(n, a) for n, a in getaddresses([str(v) for v in _parse(self.raw).get_all(name, [])]) if a]

    def headers(self) -> list[tuple[str, str]]:
        return [(k, " ".join(str(v).split())) for k, v in _parse(self.raw).items()]

    @property
    def sent(self) -> datetime:
        try:
            value = parsedate_to_datetime(self.header("Date") or "")
        except (TypeError, ValueError):
            return self.received
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _parse(raw: bytes) -> Message:
    return message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=compat32)


def message_ids(value: str | None) -> list[str]:
    return [f"<{part.split('>')[0]}>" for part in (value or "").split("<")[1:] if ">" in part]


@dataclass(frozen=True)
class Change:
    kind: str  # "Create" | "Update" | "Delete" | "ReadFlagChange"
    item_id: str
    item: Item | None = None
    is_read: bool = False


class EwsMailbox:
    """One user's mailbox; every method takes the mailbox lock."""

    def __init__(self, address: str, display_name: str | None = None) -> None:
        self.address = address
        self.display_name = display_name or address
        self.lock = threading.RLock()
        self.folders: dict[str, Folder] = {}
        self.items: dict[str, Item] = {}
        self._seq = itertools.count(1)
        self._states: dict[str, tuple[str, dict[str, tuple[int, bool]]]] = {}
        self._state_seq = itertools.count(1)
        root = self._folder("Top of Information Store", None, "root")
        msgroot = self._folder("Top of Information Store", root.id, "msgfolderroot")
        for distinguished, name in WELL_KNOWN.items():
            self._folder(name, msgroot.id, distinguished)

    def _folder(self, name: str, parent: str | None, distinguished: str | None = None) -> Folder:
        folder = Folder(_new_id("AAMkF"), name, parent, distinguished)
        self.folders[folder.id] = folder
        return folder

    # ------------------------------------------------------------ folders
    def folder(self, ref: str) -> Folder:
        """A folder by id or distinguished name; ErrorFolderNotFound otherwise."""
        with self.lock:
            if ref in self.folders:
                return self.folders[ref]
            for folder in self.folders.values():
                if folder.distinguished == ref:
                    return folder
        raise EwsFault("ErrorFolderNotFound", "The specified folder could not be found in the store.")

    def add_folder(self, name: str, parent: str = "msgfolderroot") -> str:
        with self.lock:
            return self._folder(name, self.folder(parent).id).id

    def subfolders(self, ref: str) -> list[Folder]:
        """Every folder below ``ref``, parents before children."""
        with self.lock:
            out, level = [], [self.folder(ref).id]
            while level:
                children = [f for f in self.folders.values() if f.parent_id in level]
                out.extend(children)
                level = [f.id for f in children]
            return out

    # ------------------------------------------------------------ items
    def add(
        self,
        raw: bytes,
        folder: str = "inbox",
        *,
        is_read: bool = False,
        is_draft: bool = False,
        delivered: bool = True,
        extended: dict[tuple[int, str], str] | None = None,
    ) -> Item:
        with self.lock:
            target = self.folder(folder)
            item = Item(
                _new_id("AAMkA"),
                target.id,
                raw,
                datetime.now(UTC).replace(microsecond=0),
                self._conversation_for(raw),
                next(self._seq),
                is_read=is_read,
                is_draft=is_draft,
                delivered=delivered,
                extended=dict(extended or {}),
            )
            self.items[item.id] = item
            return item

    def _conversation_for(self, raw: bytes) -> str:
        probe = Item("", "", raw, datetime.now(UTC), "", 0)
        parents = set(message_ids(probe.header("In-Reply-To")) + message_ids(probe.header("References")))
        if parents:
            for other in self.items.values():
                if other.header("Message-ID") in parents:
                    return other.conversation_id
        return _new_id("AAQkA")

    def item(self, item_id: str) -> Item:
        with self.lock:
            if item_id not in self.items:
                raise EwsFault("ErrorItemNotFound", "The specified object was not found in the store.")
            return self.items[item_id]

    def in_folder(self, ref: str) -> list[Item]:
        with self.lock:
            fid = self.folder(ref).id
            return sorted((i for i in self.items.values() if i.folder_id == fid), key=lambda i: i.seq)

    def set_flags(self, item_id: str, flags: Iterable[str]) -> None:
        """IMAP-style flags: ``\\Seen`` is the read state, ``\\Flagged`` the follow-up flag."""
        with self.lock:
            item, wanted = self.item(item_id), set(flags)
            if item.is_read != ("\\Seen" in wanted):
                item.is_read = "\\Seen" in wanted
                item.reads += 1
            status = FLAG_STATUS_FLAGGED if "\\Flagged" in wanted else 0
            if item.flag_status != status:
                item.flag_status = status
                item.version += 1

    def delete(self, item_id: str) -> None:
        with self.lock:
            self.item(item_id)
            del self.items[item_id]

    def move(self, item_id: str, target: str) -> Item:
        """A moved item gets a new id in its new folder, as in Exchange."""
        with self.lock:
            item = self.items.pop(self.item(item_id).id)
            item.id, item.folder_id, item.version = _new_id("AAMkA"), self.folder(target).id, item.version + 1
            item.seq = next(self._seq)
            self.items[item.id] = item
            return item

    # ------------------------------------------------------------ sync
    def expire_sync_states(self) -> None:
        """Forget every SyncState handed out: the next use of one is ErrorInvalidSyncStateData."""
        with self.lock:
            self._states.clear()

    def sync_items(self, folder_ref: str, state: str | None, max_changes: int) -> tuple[str, bool, list[Change]]:
        """(new state, includes last item in range, changes) for one SyncFolderItems call."""
        with self.lock:
            folder = self.folder(folder_ref)
            if state:
                known_folder, snapshot = self._states.get(state, ("", {}))
                if known_folder != folder.id:
                    raise EwsFault(
                        "ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid."
                    )
            else:
                snapshot = {}
            changes: list[Change] = []
            current = self.in_folder(folder.id)
            present = {i.id for i in current}
            for item in current:
                seen = snapshot.get(item.id)
                if seen is None:
                    changes.append(Change("Create", item.id, item))
                elif seen[0] != item.version:
                    changes.append(Change("Update", item.id, item))
                elif seen[1] != item.is_read:
                    changes.append(Change("ReadFlagChange", item.id, is_read=item.is_read))
            changes += [Change("Delete", iid) for iid in snapshot if iid not in present]
            page, more = changes[:max_changes], len(changes) > max_changes
            if not page and state:
                return state, True, []
            updated = dict(snapshot)
            for change in page:
                if change.kind == "Delete":
                    updated.pop(change.item_id, None)
                else:
                    item = self.items[change.item_id]
                    updated[item.id] = (item.version, item.is_read)
            token = base64.b64encode(f"items:{next(self._state_seq)}:{secrets.token_hex(6)}".encode()).decode()
            self._states[token] = (folder.id, updated)
            return token, not more, page
