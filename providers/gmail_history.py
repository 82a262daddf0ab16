"""Gmail's mailbox history as per-folder changes (for :class:`providers.gmail.GmailProvider`): cursors, windows.

Cursors are JSON: ``{"v": 1, "historyId": "123456"}``, the mailbox's historyId
when the folder's state was taken (for an initial listing, read from
users.getProfile *before* listing, so nothing that changes during the listing
is missed; replaying it later is harmless because the engine's writes are
idempotent).

Gmail's history is per mailbox, not per label. So the provider fetches it once
for the whole mailbox (a :class:`HistoryWindow` from the oldest cursor it was
asked about to "now") and derives each folder's :class:`ChangeSet` from it: a
no-change pass over every folder costs one users.history.list call. A window is
reused only for folders it covers (start <= cursor <= end) that it has not
served yet; asking about a folder a second time, or calling ``list_folders``
(the start of a sync pass), fetches a fresh window.

Folders are label ids, plus the virtual folder ``ALL`` (Gmail's All Mail, what
messages.list answers without labelIds): every message not in TRASH or SPAM, so
an archived message (no INBOX, no user label) is still synced.

Deriving a folder's changes from history records (oldest first):

* membership (:func:`in_label`): a message is in ALL when it is in neither TRASH
  nor SPAM; in label L when its labels include L and (L is TRASH or SPAM, or it
  has neither) -- Gmail hides trashed and spam mail from other labels;
* messagesAdded of a member, or labelsAdded/Removed that can move it in or out
  (:func:`moves`: L itself, or TRASH/SPAM) -> if it is in the folder at the end it
  is ``new``, else ``removed``;
* messagesDeleted -> ``removed``;
* labelsAdded/Removed of UNREAD or STARRED on a member -> ``changed`` with its
  flags (UNREAD absent -> ``\\Seen``, STARRED -> ``\\Flagged``, DRAFT -> ``\\Draft``).

A message in several folders (INBOX and ALL, say) is fetched once per pass:
:class:`MetadataCache` keeps its parsed messages.get answer until every listed
folder it belongs to has been served, or until the next ``list_folders``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChangeSet, FlagUpdate, RemoteMessage
from providers.common import cursors
from providers.common.messages import imap_flags
from providers.errors import CursorInvalidError

ALL_MAIL = "ALL"  # the virtual folder for All Mail; no Gmail label has this id
HIDDEN = frozenset({"TRASH", "SPAM"})
METADATA_CACHE_LIMIT = 20_000  # parsed header blocks kept per pass (~1-2 KB each)
FLAG_LABELS = frozenset({"UNREAD", "STARRED", "DRAFT"})


@dataclass(frozen=True)
class Cursor:
    """A decoded Gmail folder cursor."""

    history_id: int

    def dump(self) -> str:
        return cursors.dump({"historyId": str(self.history_id)})

    @classmethod
    def load(cls, text: str) -> Cursor:
        cursor = cursors.load(text, "Gmail", lambda data: cls(int(data["historyId"])))
        if cursor.history_id <= 0:
            raise CursorInvalidError(f"Gmail cursor with impossible historyId {cursor.history_id}")
        return cursor


def flags_from_labels(labels: Iterable[str]) -> frozenset[str]:
    """IMAP-style flags for Gmail labels, e.g. ``["INBOX", "STARRED"]`` -> ``{"\\Seen", "\\Flagged"}``."""
    labels = set(labels)
    return imap_flags("UNREAD" not in labels, "STARRED" in labels, "DRAFT" in labels)


def in_label(folder: str, labels: Iterable[str]) -> bool:
    """Whether a message with ``labels`` is in ``folder``, e.g. ``in_label("ALL", ["UNREAD"])`` (archived) is True."""
    labels = set(labels)
    if folder == ALL_MAIL:
        return not labels & HIDDEN
    return folder in labels and (folder in HIDDEN or not labels & HIDDEN)


def moves(folder: str, changed: Iterable[str], labels: Iterable[str]) -> bool:
    """Whether adding or removing the ``changed`` labels of a message (now carrying
    ``labels``) can move it into or out of ``folder``."""
    changed = set(changed)
    if folder == ALL_MAIL:
        return bool(changed & HIDDEN)
    return folder in changed or bool(changed & HIDDEN and folder in set(labels))


@dataclass
class HistoryWindow:
    """Every history record of the mailbox after ``start``, fetched up to ``end``."""

    start: int
    end: int
    records: list[Mapping[str, Any]]
    served: set[str] = field(default_factory=set)  # folder names already answered from it

    def covers(self, folder: str, history_id: int) -> bool:
        return folder not in self.served and self.start <= history_id <= self.end


@dataclass
class _Seen:
    labels: frozenset[str] = frozenset()
    membership_event: bool = False
    flag_event: bool = False
    deleted: bool = False


def folder_changes(folder: str, records: Sequence[Mapping[str, Any]], after: int, end: int) -> ChangeSet:
    """The ChangeSet of ``folder`` (a label id or ALL) for the records with id > ``after``;
    the new cursor is ``end``."""
    seen: dict[str, _Seen] = {}
    for rec in records:
        if int(rec["id"]) <= after:
            continue
        for entry in rec.get("messagesAdded", ()):
            st = _note(seen, entry)
            st.deleted = False
            st.membership_event |= in_label(folder, st.labels)
        for key in ("labelsAdded", "labelsRemoved"):
            for entry in rec.get(key, ()):
                st = _note(seen, entry)
                changed = set(entry.get("labelIds", ()))
                st.membership_event |= moves(folder, changed, st.labels)
                st.flag_event |= bool(changed & FLAG_LABELS)
        for entry in rec.get("messagesDeleted", ()):
            st = _note(seen, entry)
            st.deleted = st.membership_event = True
    new: list[str] = []
    changed_flags: list[FlagUpdate] = []
    removed: list[str] = []
    for message_id, st in seen.items():
        member = not st.deleted and in_label(folder, st.labels)
        if member and st.membership_event:
            new.append(message_id)
        elif not member and st.membership_event:
            removed.append(message_id)
        if member and (st.flag_event or st.membership_event):
            changed_flags.append(FlagUpdate(message_id, flags_from_labels(st.labels)))
    return ChangeSet(new=tuple(new), changed=tuple(changed_flags), removed=tuple(removed), cursor=Cursor(end).dump())


def _note(seen: dict[str, _Seen], entry: Mapping[str, Any]) -> _Seen:
    """Track one message; its labels as of this record (Gmail omits an empty labelIds)."""
    message = entry["message"]
    st = seen.setdefault(str(message["id"]), _Seen())
    st.labels = frozenset(message.get("labelIds", ()))
    return st


class MetadataCache:
    """Parsed messages.get(format=metadata) answers of one sync pass, by Gmail id.

    Headers never change, and a pass takes a message's labels and flags from this
    one answer wherever it is listed, so a message in INBOX and ALL costs one get.
    An entry waits only for the listed folders it belongs to that have not been
    served yet, and at most ``limit`` entries wait (beyond that, a later folder
    fetches again). :meth:`clear` at the start of every pass.
    """

    def __init__(self, limit: int = METADATA_CACHE_LIMIT) -> None:
        self._limit = limit
        self._folders: frozenset[str] = frozenset()
        self._entries: dict[str, tuple[RemoteMessage, set[str]]] = {}

    def clear(self, folders: Iterable[str]) -> None:
        """Start a pass over ``folders`` (the listed folder names)."""
        self._folders = frozenset(folders)
        self._entries.clear()

    def take(self, folder: str, remote_id: str) -> RemoteMessage | None:
        """The cached message for ``folder``, forgotten once no other folder waits for it."""
        entry = self._entries.get(remote_id)
        if entry is None:
            return None
        message, waiting = entry
        waiting.discard(folder)
        if not waiting:
            del self._entries[remote_id]
        return message

    def put(self, folder: str, message: RemoteMessage) -> None:
        """Keep ``message`` (just fetched for ``folder``) for the other folders it is in."""
        waiting = {f for f in self._folders if f != folder and in_label(f, message.labels)}
        if waiting and len(self._entries) < self._limit:
            self._entries[message.remote_id] = (message, waiting)

    def __len__(self) -> int:
        return len(self._entries)
