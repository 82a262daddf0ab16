"""An in-memory mail server and a :class:`providers.base.MailProvider` for it.

It passes the shared provider contract (``tests/providers/test_fake_contract.py``) and
runs the engine contract beside the real backends (``tests/sync/test_engine_contract.py``),
so the engine's behaviour can be read, and tested quickly, without a server's quirks.

* A :class:`FakeServer` holds mailboxes by address; each has folders with roles (INBOX,
  Sent, Drafts, Trash, Archive), messages with flags, and a change log per folder.
* Cursors are ``{"epoch": E, "seq": N}``: the changes after log entry N. ``expire_cursors``
  starts a new epoch in every folder (as an IMAP UIDVALIDITY change, an expired Gmail
  historyId, Graph's 410 or EWS's invalid SyncState do): old cursors raise
  :class:`CursorInvalidError`, remote ids stay.
* ``send`` delivers to the recipients that have a mailbox on the server and files one copy
  in the sender's Sent (``sent_copy_stored``), as Gmail, Graph and EWS do.
* Thread hints (``SERVER_THREAD_IDS``) are declared only with the option ``thread_hints``;
  the server threads every message anyway, by Gmail's rule (a referenced message with the
  same normalised subject), so a test can see which thread a copy landed in.

The engine opens providers through :mod:`providers.registry`; :func:`registered` lists this
class there as ``"fake"`` for the duration of a test. Accounts name their server in the
option ``server`` (see :meth:`FakeServer.settings`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from providers import registry
from providers.base import (
    Capability,
    ChangeSet,
    Credentials,
    FlagUpdate,
    FolderListing,
    FolderRole,
    OutgoingMessage,
    ProviderSettings,
    RemoteFolder,
    RemoteMessage,
    SendResult,
)
from providers.errors import AuthError, CursorInvalidError, FolderNotFound, NotSupported, ProviderError

if TYPE_CHECKING:
    from postroom.config import Config

BACKEND = "fake"
FOLDERS = {
    "INBOX": FolderRole.INBOX,
    "Sent": FolderRole.SENT,
    "Drafts": FolderRole.DRAFTS,
    "Trash": FolderRole.TRASH,
    "Archive": FolderRole.ARCHIVE,
}
ROLE_FOLDERS = {role: name for name, role in FOLDERS.items()}
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|fwd?|wg)\s*:\s*)+", re.IGNORECASE)


def _subject(raw: bytes) -> str:
    subject = str(BytesHeaderParser().parsebytes(raw).get("Subject", ""))
    return _REPLY_PREFIX.sub("", subject).strip().lower()


def _headers(raw: bytes) -> bytes:
    """The header block with its blank line, as an IMAP ``BODY.PEEK[HEADER]`` gives it."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            return raw[: end + len(sep)]
    return raw


@dataclass
class FakeMessage:
    uid: int
    raw: bytes
    flags: frozenset[str]
    thread: str
    received: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @property
    def message_id(self) -> str:
        return str(BytesHeaderParser().parsebytes(self.raw).get("Message-ID", "")).strip()


@dataclass
class _Folder:
    name: str
    role: FolderRole
    epoch: int
    next_uid: int = 1
    messages: dict[int, FakeMessage] = field(default_factory=dict)
    log: list[tuple[int, str, int]] = field(default_factory=list)  # (seq, "new" | "flags" | "removed", uid)


class FakeMailbox:
    """One account's mail on the server; every method here bypasses the provider."""

    _epochs = itertools.count(1000)

    def __init__(self, server: FakeServer, address: str, password: str) -> None:
        self.server, self.address, self.password = server, address.lower(), password
        self.folders = {name: _Folder(name, role, next(self._epochs)) for name, role in FOLDERS.items()}
        self._seq = 0

    def folder(self, name_or_role: str | FolderRole) -> _Folder:
        name = ROLE_FOLDERS.get(name_or_role, name_or_role) if isinstance(name_or_role, FolderRole) else name_or_role
        try:
            return self.folders[name]
        except KeyError:
            raise FolderNotFound(f"no folder {name!r}") from None

    def _log(self, folder: _Folder, kind: str, uid: int) -> None:
        self._seq += 1
        folder.log.append((self._seq, kind, uid))

    def deliver(
        self,
        raw: bytes,
        folder: str | FolderRole = FolderRole.INBOX,
        flags: Iterable[str] = (),
        thread: str | None = None,
    ) -> str:
        """Store ``raw`` in ``folder``; returns its remote id."""
        with self.server.lock:
            f = self.folder(folder)
            uid, f.next_uid = f.next_uid, f.next_uid + 1
            msg = FakeMessage(uid, raw, frozenset(flags), "")
            msg.thread = thread or self._thread_for(raw) or uuid.uuid4().hex[:12]
            f.messages[uid] = msg
            self._log(f, "new", uid)
            return str(uid)

    def _thread_for(self, raw: bytes) -> str | None:
        """Gmail's rule: the thread of a referenced message whose subject matches."""
        headers = BytesHeaderParser().parsebytes(raw)
        refs = re.findall(r"<[^<>\s]+>", f"{headers.get('References', '')} {headers.get('In-Reply-To', '')}")
        for f in self.folders.values():
            for msg in f.messages.values():
                if msg.message_id in refs and _subject(msg.raw) == _subject(raw):
                    return msg.thread
        return None

    def message(self, remote_id: str, folder: str | FolderRole = FolderRole.INBOX) -> FakeMessage:
        return self.folder(folder).messages[int(remote_id)]

    def messages(self, folder: str | FolderRole) -> list[FakeMessage]:
        with self.server.lock:
            f = self.folder(folder)
            return [f.messages[uid] for uid in sorted(f.messages)]

    def set_flags(self, remote_id: str, flags: Iterable[str], folder: str | FolderRole = FolderRole.INBOX) -> None:
        with self.server.lock:
            f = self.folder(folder)
            f.messages[int(remote_id)].flags = frozenset(flags)
            self._log(f, "flags", int(remote_id))

    def remove(self, remote_id: str, folder: str | FolderRole = FolderRole.INBOX) -> FakeMessage:
        """Delete for good (IMAP expunge, Shift+Delete)."""
        with self.server.lock:
            f = self.folder(folder)
            msg = f.messages.pop(int(remote_id))
            self._log(f, "removed", msg.uid)
            return msg

    def move(self, remote_id: str, source: str | FolderRole, target: str | FolderRole) -> str:
        """Move a message; returns its id in ``target``."""
        with self.server.lock:
            msg = self.remove(remote_id, source)
            return self.deliver(msg.raw, target, msg.flags, msg.thread)

    def expire_cursors(self) -> None:
        """The server forgets every folder's sync state: old cursors no longer apply."""
        with self.server.lock:
            for f in self.folders.values():
                f.epoch = next(self._epochs)

    def changes(self, name: str, cursor: str | None) -> ChangeSet:
        with self.server.lock:
            f = self.folder(name)
            fresh = json.dumps({"epoch": f.epoch, "seq": self._seq})
            if cursor is None:
                return ChangeSet(new=tuple(str(uid) for uid in sorted(f.messages)), cursor=fresh)
            try:
                since = json.loads(cursor)
                epoch, seq = int(since["epoch"]), int(since["seq"])
            except (ValueError, TypeError, KeyError) as exc:
                raise CursorInvalidError(f"not a cursor: {cursor!r}") from exc
            if epoch != f.epoch:
                raise CursorInvalidError(f"folder {name} has a new epoch")
            added: set[int] = set()
            flagged: set[int] = set()
            removed: set[int] = set()
            for s, kind, uid in f.log:
                if s <= seq:
                    continue
                if kind == "new":
                    added.add(uid)
                elif kind == "flags":
                    flagged.add(uid)
                elif uid in added:
                    added.discard(uid)
                else:
                    removed.add(uid)
            return ChangeSet(
                new=tuple(str(u) for u in sorted(added)),
                changed=tuple(
                    FlagUpdate(str(u), f.messages[u].flags) for u in sorted(flagged - added) if u in f.messages
                ),
                removed=tuple(str(u) for u in sorted(removed)),
                cursor=fresh,
            )


@dataclass
class FakeCall:
    address: str
    method: str
    folder: str | None = None
    ids: tuple[str, ...] = ()


class FakeServer:
    """Mailboxes in memory, thread-safe; found by the providers through their ``server`` option."""

    _running: ClassVar[dict[str, FakeServer]] = {}

    def __init__(self) -> None:
        self.name = f"fake-{uuid.uuid4().hex[:8]}"
        self.lock = threading.RLock()
        self.mailboxes: dict[str, FakeMailbox] = {}
        self.calls: list[FakeCall] = []
        self.bodies_served: list[str] = []  # remote ids whose raw MIME fetch_bodies handed out, in order
        self.relayed: list[tuple[str, bytes]] = []  # mail for addresses with no mailbox here

    @classmethod
    def named(cls, name: str) -> FakeServer:
        try:
            return cls._running[name]
        except KeyError:
            raise ProviderError(f"no fake mail server named {name!r} is running") from None

    @contextmanager
    def running(self) -> Iterator[FakeServer]:
        self._running[self.name] = self
        try:
            yield self
        finally:
            self._running.pop(self.name, None)

    def add_mailbox(self, address: str, password: str = "secret") -> FakeMailbox:
        with self.lock:
            return self.mailboxes.setdefault(address.lower(), FakeMailbox(self, address, password))

    def mailbox(self, address: str) -> FakeMailbox:
        return self.mailboxes[address.lower()]

    def settings(self, address: str, password: str | None = None, **options: Any) -> ProviderSettings:
        box = self.mailbox(address)
        creds = Credentials(box.address, password=box.password if password is None else password)
        return ProviderSettings(box.address, creds, {"server": self.name, **options})

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()
            self.bodies_served.clear()


class FakeProvider:
    """The provider contract over a :class:`FakeServer`; logs in on the first call."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.server = FakeServer.named(str(settings.options.get("server")))
        self._box: FakeMailbox | None = None
        self.closed = False

    @classmethod
    def open(cls, settings: ProviderSettings) -> FakeProvider:
        return cls(settings)

    @classmethod
    def options_with_config(
        cls, options: Mapping[str, Any], credentials: Credentials, config: Config
    ) -> dict[str, Any]:
        """Nothing comes from the Postroom config: the server is named in the account's options."""
        return dict(options)

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = {Capability.MOVE, Capability.SEND, Capability.STORE_SENT_COPY}
        if self.settings.options.get("thread_hints"):
            caps.add(Capability.SERVER_THREAD_IDS)
        return frozenset(caps)

    def _mailbox(self, method: str, folder: RemoteFolder | None = None, ids: Sequence[str] = ()) -> FakeMailbox:
        if self.closed:
            raise ProviderError("the provider was closed")
        if self._box is None:
            box = self.server.mailboxes.get(self.settings.email.lower())
            if box is None or box.password != self.settings.credentials.password:
                raise AuthError("authentication failed: wrong user name or password")
            self._box = box
        with self.server.lock:
            self.server.calls.append(FakeCall(self._box.address, method, folder and folder.name, tuple(ids)))
        return self._box

    def list_folders(self) -> list[RemoteFolder]:
        box = self._mailbox("list_folders")
        return [RemoteFolder(f.name, f.role) for f in box.folders.values()]

    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        return self._mailbox("fetch_changes", folder).changes(folder.name, cursor)

    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        box = self._mailbox("fetch_headers", folder, remote_ids)
        hints = Capability.SERVER_THREAD_IDS in self.capabilities
        with self.server.lock:
            found = [box.folder(folder.name).messages.get(int(rid)) for rid in remote_ids]
        for msg in found:
            if msg is not None:
                yield RemoteMessage(
                    remote_id=str(msg.uid),
                    headers=_headers(msg.raw),
                    flags=msg.flags,
                    size=len(msg.raw),
                    internal_date=msg.received,
                    thread_hint=msg.thread if hints else None,
                )

    def fetch_bodies(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> dict[str, bytes]:
        box = self._mailbox("fetch_bodies", folder, remote_ids)
        with self.server.lock:
            messages = box.folder(folder.name).messages
            bodies = {rid: messages[int(rid)].raw for rid in remote_ids if int(rid) in messages}
            self.server.bodies_served.extend(bodies)
        return bodies

    def send(self, message: OutgoingMessage) -> SendResult:
        return self._submit(message, keep_copy=True)

    def send_without_copy(self, message: OutgoingMessage) -> SendResult:
        return self._submit(message, keep_copy=False)

    def _submit(self, message: OutgoingMessage, keep_copy: bool) -> SendResult:
        box = self._mailbox("send")
        with self.server.lock:
            for rcpt in message.recipients:
                to = self.server.mailboxes.get(rcpt.lower())
                if to is None:
                    self.server.relayed.append((rcpt, message.raw))
                else:
                    to.deliver(message.raw, FolderRole.INBOX)
            if not keep_copy:
                return SendResult(message.message_id, sent_copy_stored=False)
            copy = box.deliver(message.raw, FolderRole.SENT, {"\\Seen"}, self._thread(box, message.thread_hint))
        return SendResult(message.message_id, provider_id=copy, sent_copy_stored=True)

    @staticmethod
    def _thread(box: FakeMailbox, hint: str | None) -> str | None:
        known = {m.thread for f in box.folders.values() for m in f.messages.values()}
        return hint if hint in known else None

    def find_sent(self, message_id: str) -> str | None:
        box = self._mailbox("find_sent")
        for msg in box.messages(FolderRole.SENT):
            if msg.message_id == message_id:
                return str(msg.uid)
        return None

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        return self._mailbox("store_sent_copy").deliver(raw, FolderRole.SENT, flags)

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        box = self._mailbox("move", folder, remote_ids)
        for rid in remote_ids:
            box.move(rid, folder.name, target.name)

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        raise NotSupported("the fake backend cannot serve as a processing mailbox (not supported by this backend)")

    def ensure_folder(self, name: str) -> RemoteFolder:
        raise NotSupported("the fake backend cannot serve as a processing mailbox (not supported by this backend)")

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        raise NotSupported("the fake backend cannot serve as a processing mailbox (not supported by this backend)")

    def delete(self, folder: RemoteFolder, remote_ids: Sequence[str], *, for_good: bool = False) -> None:
        """Into Trash, or for good when asked or when already in Trash; vanished ids are skipped."""
        box = self._mailbox("delete", folder, remote_ids)
        with self.server.lock:
            present = [rid for rid in remote_ids if str(rid).isdigit() and int(rid) in box.folder(folder.name).messages]
            for rid in present:
                if for_good or folder.role == FolderRole.TRASH:
                    box.remove(rid, folder.name)
                else:
                    box.move(rid, folder.name, FolderRole.TRASH)

    def close(self) -> None:
        self.closed = True


@contextmanager
def registered() -> Iterator[None]:
    """List :class:`FakeProvider` in the provider registry as ``"fake"`` (only while in use)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.BACKENDS, BACKEND, f"{__name__}:FakeProvider")
        yield
