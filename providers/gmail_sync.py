"""Folder sync for :class:`providers.gmail.GmailProvider`: cursors and history windows.

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

Deriving a folder's changes from history records (oldest first):

* membership: a message is in label L when its labels include L and (L is TRASH
  or SPAM, or it has neither) -- Gmail hides trashed and spam mail from other labels;
* messagesAdded, or labelsAdded/Removed of L, TRASH or SPAM -> the message may have
  joined or left L: if it is in L at the end it is ``new``, else ``removed``;
* messagesDeleted -> ``removed``;
* labelsAdded/Removed of UNREAD or STARRED on a message in L -> ``changed`` with its
  flags (UNREAD absent -> ``\\Seen``, STARRED -> ``\\Flagged``, DRAFT -> ``\\Draft``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChangeSet, FlagUpdate
from providers.errors import CursorInvalidError

HIDDEN = frozenset({"TRASH", "SPAM"})
FLAG_LABELS = frozenset({"UNREAD", "STARRED", "DRAFT"})


@dataclass(frozen=True)
class Cursor:
    """A decoded Gmail folder cursor."""

    history_id: int

    def dump(self) -> str:
        return json.dumps({"v": 1, "historyId": str(self.history_id)}, sort_keys=True)

    @classmethod
    def load(cls, text: str) -> Cursor:
        try:
            data = json.loads(text)
            history_id = int(data["historyId"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CursorInvalidError(f"unreadable Gmail cursor {text[:80]!r}") from exc
        if history_id <= 0:
            raise CursorInvalidError(f"Gmail cursor with impossible historyId {history_id}")
        return cls(history_id)


def flags_from_labels(labels: Iterable[str]) -> frozenset[str]:
    """IMAP-style flags for Gmail labels, e.g. ``["INBOX", "STARRED"]`` -> ``{"\\Seen", "\\Flagged"}``."""
    labels = set(labels)
    flags = set()
    if "UNREAD" not in labels:
        flags.add("\\Seen")
    if "STARRED" in labels:
        flags.add("\\Flagged")
    if "DRAFT" in labels:
        flags.add("\\Draft")
    return frozenset(flags)


def in_label(label: str, labels: Iterable[str]) -> bool:
    labels = set(labels)
    return label in labels and (label in HIDDEN or not labels & HIDDEN)


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


def folder_changes(label: str, records: Sequence[Mapping[str, Any]], after: int, end: int) -> ChangeSet:
    """The ChangeSet of ``label`` for the records with id > ``after``; the new cursor is ``end``."""
    seen: dict[str, _Seen] = {}
    for rec in records:
        if int(rec["id"]) <= after:
            continue
        for entry in rec.get("messagesAdded", ()):
            st = _note(seen, entry)
            st.deleted = False
            st.membership_event |= label in st.labels
        for key in ("labelsAdded", "labelsRemoved"):
            for entry in rec.get(key, ()):
                st = _note(seen, entry)
                changed = set(entry.get("labelIds", ()))
                st.membership_event |= label in changed or bool(changed & HIDDEN and label in st.labels)
                st.flag_event |= bool(changed & FLAG_LABELS)
        for entry in rec.get("messagesDeleted", ()):
            st = _note(seen, entry)
            st.deleted = st.membership_event = True
    new: list[str] = []
    changed_flags: list[FlagUpdate] = []
    removed: list[str] = []
    for message_id, st in seen.items():
        member = not st.deleted and in_label(label, st.labels)
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
