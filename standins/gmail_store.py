"""The Gmail mailbox model behind :mod:`standins.gmail`: messages, labels, threads, history.

It follows Gmail's semantics, not IMAP's:

* A mailbox has one global, monotonically increasing ``historyId``. Every change
  (a message added or deleted, labels added or removed) appends one
  :class:`HistoryRecord` per message with the next id; the message's own
  ``historyId`` is that of the last record that touched it.
* Folders are labels. System labels are INBOX, SENT, TRASH, SPAM, DRAFT, UNREAD,
  STARRED and IMPORTANT; user labels get ids ``Label_1``, ``Label_2``, ...
  "Unread" is the UNREAD label, "flagged" is STARRED.
* Trashing removes INBOX and adds TRASH; messages in TRASH or SPAM are hidden from
  listings unless ``includeSpamTrash`` is set or the listing asks for that label.
* A message joins a thread when its In-Reply-To/References name a message of that
  thread and its subject matches (after Re:/Fwd: prefixes); a ``threadId`` given on
  send/insert is honoured only under the same conditions, as Gmail documents.
* History is retained from a floor: :meth:`Mailbox.expire_history` moves the floor
  up, and a ``startHistoryId`` below it is answered with 404 by the API layer.

Everything is in memory. Each mailbox has its own lock; callers take
``mailbox.lock`` around any read-modify-write sequence.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import itertools
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from standins.gmail_render import snippet_of

SYSTEM_LABELS = ("INBOX", "SENT", "TRASH", "SPAM", "DRAFT", "UNREAD", "STARRED", "IMPORTANT")
HIDDEN = frozenset({"TRASH", "SPAM"})
FIRST_HISTORY_ID = 1000  # a fresh Gmail mailbox does not start at 1; 0 is always too old
_IDS = itertools.count(0x18C0_0000_0000_0000)  # process-wide, so ids grow and never collide
_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|vs)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_MSGID = re.compile(r"<[^<>\s]+>")


class GmailError(Exception):
    """A request the mailbox refuses; the API layer turns it into Gmail's error JSON."""

    def __init__(self, code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def new_id() -> str:
    return f"{next(_IDS):016x}"


def normalise_subject(subject: str) -> str:
    return " ".join(_PREFIX.sub("", subject or "").split()).lower()


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: set[str]
    internal_date_ms: int
    history_id: int
    headers: list[tuple[str, str]]  # top-level headers, unfolded, in order
    snippet: str = ""

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    @property
    def mime_type(self) -> str:
        value = self.header("Content-Type").split(";", 1)[0].strip().lower()
        return value or "text/plain"

    @property
    def message_id(self) -> str:
        return self.header("Message-ID").strip()

    @property
    def referenced(self) -> list[str]:
        return _MSGID.findall(self.header("References") + " " + self.header("In-Reply-To"))


@dataclass(frozen=True)
class HistoryRecord:
    """One change to one message; several kinds may be set in one record."""

    id: int
    message_id: str
    thread_id: str
    labels_after: tuple[str, ...]
    added: bool = False
    deleted: bool = False
    labels_added: tuple[str, ...] = ()
    labels_removed: tuple[str, ...] = ()

    @property
    def kinds(self) -> set[str]:
        out = set()
        if self.added:
            out.add("messageAdded")
        if self.deleted:
            out.add("messageDeleted")
        if self.labels_added:
            out.add("labelAdded")
        if self.labels_removed:
            out.add("labelRemoved")
        return out

    def touches(self, label: str) -> bool:
        return label in self.labels_after or label in self.labels_removed


@dataclass
class Label:
    id: str
    name: str
    type: str  # "system" | "user"


def parse_headers(raw: bytes) -> list[tuple[str, str]]:
    """Top-level header fields of a raw message, unfolded, values as Gmail shows them."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")
    out = []
    for name, value in parsed.items():
        text = value if isinstance(value, str) else str(value)
        out.append((name, re.sub(r"\r?\n[ \t]+", " ", text).strip()))
    return out


@dataclass
class Mailbox:
    """One user's mailbox."""

    email: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    history_id: int = FIRST_HISTORY_ID
    history_floor: int = FIRST_HISTORY_ID  # startHistoryId below this -> 404
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    threads: dict[str, list[str]] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    labels: dict[str, Label] = field(default_factory=dict)
    by_message_id: dict[str, list[str]] = field(default_factory=dict)  # Message-ID header -> ids
    _label_seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for name in SYSTEM_LABELS:
            self.labels[name] = Label(name, name, "system")

    # ------------------------------------------------------------ labels
    def add_label(self, name: str) -> str:
        """Create a user label; returns its id, e.g. ``"Label_1"``."""
        with self.lock:
            for label in self.labels.values():
                if label.name.lower() == name.lower():
                    raise GmailError(409, "Label name exists or conflicts", "duplicate")
            label_id = f"Label_{next(self._label_seq)}"
            self.labels[label_id] = Label(label_id, name, "user")
            return label_id

    def check_labels(self, ids: Iterable[str]) -> None:
        for label_id in ids:
            if label_id not in self.labels:
                raise GmailError(400, f"Invalid label: {label_id}", "invalidArgument")

    # ------------------------------------------------------------ history
    def _record(self, msg: StoredMessage, **changes: object) -> None:
        self.history_id += 1
        msg.history_id = self.history_id
        rec = HistoryRecord(self.history_id, msg.id, msg.thread_id, tuple(sorted(msg.labels)), **changes)  # type: ignore[arg-type]
        self.history.append(rec)

    def expire_history(self, keep_after: int | None = None) -> None:
        """Forget history up to ``keep_after`` (default: all of it), as Gmail does after
        about a week: a later ``history.list`` from an older id answers 404."""
        with self.lock:
            floor = self.history_id if keep_after is None else keep_after
            self.history_floor = max(self.history_floor, floor)
            self.history = [r for r in self.history if r.id > self.history_floor]

    def history_since(self, start: int) -> list[HistoryRecord]:
        """Records after ``start``; GmailError(404) when ``start`` is older than retained."""
        with self.lock:
            if start < self.history_floor:
                raise GmailError(404, "Requested entity was not found.", "notFound")
            return [r for r in self.history if r.id > start]

    # ------------------------------------------------------------ messages
    def get(self, message_id: str) -> StoredMessage:
        msg = self.messages.get(message_id)
        if msg is None:
            raise GmailError(404, "Requested entity was not found.", "notFound")
        return msg

    def add(
        self,
        raw: bytes,
        labels: Iterable[str] = (),
        *,
        thread_id: str | None = None,
        internal_date_ms: int | None = None,
    ) -> StoredMessage:
        """Store a message (delivery, insert, import or a sent copy) with one history record."""
        labels = set(labels)
        with self.lock:
            self.check_labels(labels)
            headers = parse_headers(raw)
            msg = StoredMessage(
                id=new_id(),
                thread_id="",
                raw=raw,
                labels=labels,
                internal_date_ms=internal_date_ms if internal_date_ms is not None else int(time.time() * 1000),
                history_id=0,
                headers=headers,
                snippet=snippet_of(raw),
            )
            msg.thread_id = self._thread_for(msg, thread_id) or msg.id
            self.messages[msg.id] = msg
            self.threads.setdefault(msg.thread_id, []).append(msg.id)
            self.by_message_id.setdefault(msg.message_id, []).append(msg.id)
            self._record(msg, added=True)
            return msg

    def _thread_for(self, msg: StoredMessage, requested: str | None) -> str | None:
        """Gmail's rule: join the thread of a referenced message whose subject matches."""
        subject = normalise_subject(msg.header("Subject"))
        candidates: list[str] = []
        for ref in msg.referenced:
            for other_id in self.by_message_id.get(ref, ()):
                other = self.messages[other_id]
                same = normalise_subject(other.header("Subject")) == subject
                if same and other.thread_id not in candidates:
                    candidates.append(other.thread_id)
        if requested is not None:
            return requested if requested in candidates else None
        return candidates[0] if candidates else None

    def modify(self, message_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> StoredMessage:
        with self.lock:
            msg = self.get(message_id)
            self.check_labels([*add, *remove])
            added = tuple(sorted(set(add) - msg.labels))
            removed = tuple(sorted((set(remove) - set(add)) & msg.labels))
            msg.labels |= set(added)
            msg.labels -= set(removed)
            if added or removed:
                self._record(msg, labels_added=added, labels_removed=removed)
            return msg

    def trash(self, message_id: str) -> StoredMessage:
        return self.modify(message_id, add=["TRASH"], remove=["INBOX"])

    def untrash(self, message_id: str) -> StoredMessage:
        return self.modify(message_id, remove=["TRASH"])

    def delete(self, message_id: str) -> None:
        """Delete for good (not trash): a messageDeleted history record."""
        with self.lock:
            msg = self.get(message_id)
            del self.messages[message_id]
            thread = self.threads.get(msg.thread_id, [])
            if message_id in thread:
                thread.remove(message_id)
            if not thread:
                self.threads.pop(msg.thread_id, None)
            same = self.by_message_id.get(msg.message_id, [])
            if message_id in same:
                same.remove(message_id)
            msg.labels = set()
            self._record(msg, deleted=True)

    def set_flags(self, message_id: str, flags: Iterable[str]) -> StoredMessage:
        """Server-side helper for tests: IMAP-style flags onto UNREAD/STARRED labels."""
        flags = set(flags)
        add = [label for flag, label in (("\\Flagged", "STARRED"),) if flag in flags]
        remove = [label for flag, label in (("\\Flagged", "STARRED"),) if flag not in flags]
        (remove if "\\Seen" in flags else add).append("UNREAD")
        return self.modify(message_id, add=add, remove=remove)

    def listing(self, label_ids: Sequence[str], include_spam_trash: bool) -> list[StoredMessage]:
        """Messages carrying every label in ``label_ids``, newest first (Gmail's order)."""
        with self.lock:
            self.check_labels(label_ids)
            show_hidden = include_spam_trash or bool(HIDDEN & set(label_ids))
            found = [
                m
                for m in self.messages.values()
                if set(label_ids) <= m.labels and (show_hidden or not (m.labels & HIDDEN))
            ]
        return sorted(found, key=lambda m: (m.internal_date_ms, m.id), reverse=True)

    def by_label(self, label: str) -> list[StoredMessage]:
        """Server-side view for tests: every message with ``label``, oldest first."""
        with self.lock:
            return sorted((m for m in self.messages.values() if label in m.labels), key=lambda m: m.id)


def recipients(headers: list[tuple[str, str]]) -> list[str]:
    """Envelope recipients of a message to send: To, Cc and Bcc addresses, lower-cased."""
    fields = [v for k, v in headers if k.lower() in ("to", "cc", "bcc")]
    return sorted({addr.lower() for _, addr in email.utils.getaddresses(fields) if addr})


def without_bcc(raw: bytes) -> bytes:
    """The copy a recipient receives: the Bcc header (and its continuation lines) removed."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines, skipping = [], False
    for line in re.split(rb"(?<=\n)", head):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            lines.append(line)
    return b"".join(lines) + sep + body
