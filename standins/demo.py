"""The demo's mail server: the Gmail stand-in on 127.0.0.1, its mailboxes kept on disk.

Demo mode (docs/demo.md) shows Postroom syncing real-looking mailboxes without any account at a
mail provider: ``postroom serve`` runs this server in-process while a demo organisation exists,
and the demo's Gmail accounts point at it, so the real engine syncs them through the real
Gmail backend (google-api-python-client), exactly as it syncs Gmail.

What it adds to :class:`standins.gmail.GmailStandIn`:

* **Its mail outlives the process.** The mailboxes (messages, labels, the history Gmail's
  ``history.list`` answers from, the historyId) are written to a JSON file after every request
  that changed one, atomically (a private temporary file renamed over the old one), and read
  back at the next start. A mail server that forgot the mail it was asked to send, or rewound
  its historyIds, would contradict the index the engine has already built.
* **It starts full.** On its first start the mailboxes are filled with ``seed`` (the
  scenario's copies: :func:`postroom.demo_scenario.deliveries`).
* **Tokens for the accounts.** :meth:`access_token` grants an address and issues an access
  token (an hour, as Google's) for the account to use; the stand-in itself keeps no grant
  across starts, so the demo issues new tokens at each start and before they run out.

>>> server = DemoMailServer(Path("/tmp/demo.json"), seed=list)   # doctest: +SKIP
>>> server.start(); server.api_root                                # doctest: +SKIP
'http://127.0.0.1:41234/'
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from standins.gmail import TOKEN_LIFETIME, GmailStandIn
from standins.gmail_render import snippet_of
from standins.gmail_store import SYSTEM_LABELS, HistoryRecord, Label, Mailbox, StoredMessage, new_id, parse_headers
from standins.httpserver import ServerThread

STATE_VERSION = 1


class Seed(Protocol):
    """One copy to place in a mailbox on the first start (:class:`postroom.demo_scenario.Delivery`)."""

    @property
    def mailbox(self) -> str: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def date_ms(self) -> int: ...


class DemoStateError(Exception):
    """The state file exists but cannot be read back (not JSON, or not what this module writes)."""


class DemoMailServer:
    """A Gmail stand-in whose mailboxes persist in ``state_file``; ``hosts`` are addresses that
    get an (empty) mailbox too, so mail sent to them is delivered (the applicants)."""

    def __init__(self, state_file: Path, seed: Callable[[], Iterable[Seed]], *, hosts: Iterable[str] = ()) -> None:
        # the client secret is never used: the demo's accounts hold access tokens only
        self.gmail = GmailStandIn(client_id="postroom-demo", client_secret=secrets.token_urlsafe(24))
        self.state_file = state_file
        self._seed = seed
        self._hosts = tuple(hosts)
        self._grants: dict[str, str] = {}  # address -> refresh token (this process only)
        self._save_lock = threading.Lock()
        self._saved: tuple[Any, ...] | None = None
        self._server: ServerThread | None = None

    # ------------------------------------------------------------ running
    def start(self) -> None:
        """Read the mailboxes back (or fill them on the first start), then serve them."""
        if self.state_file.exists():
            self._load()
        else:
            for copy in self._seed():
                self.gmail.add_user(copy.mailbox).add(copy.raw, copy.labels, internal_date_ms=copy.date_ms)
        for address in self._hosts:
            self.gmail.add_user(address)
        self.save()
        self._server = ServerThread(self._wsgi)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the demo mail server is not started")
        return self._server.url

    @property
    def api_root(self) -> str:
        return self.url + "/"

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    def close(self) -> None:
        """Stop serving; the mailboxes are on disk."""
        if self._server is not None:
            self._server.close()
        self.save()

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return self.gmail.wsgi(environ, start_response)
        finally:
            self.save()  # only writes when a mailbox changed

    # ------------------------------------------------------------ what the demo does with it
    def access_token(self, address: str) -> tuple[str, float]:
        """A fresh access token for ``address``'s mailbox and when it expires (epoch seconds)."""
        refresh = self._grants.get(address) or self._grants.setdefault(address, self.gmail.grant(address))
        expires = time.time() + TOKEN_LIFETIME
        token = self.gmail.issue_access_token(refresh)
        if token is None:  # only a revoked grant has none, and the demo revokes nothing
            raise RuntimeError(f"no access token for {address}")
        return token, expires

    def messages(self, address: str, label: str = "INBOX") -> list[bytes]:
        """The raw messages of ``address``'s mailbox with ``label``, oldest first."""
        box = self.gmail.mailboxes.get(address.lower())
        return [m.raw for m in box.by_label(label)] if box else []

    def deliver(self, address: str, raw: bytes, labels: Iterable[str] = ("INBOX", "UNREAD")) -> None:
        """Server-side delivery into ``address``'s mailbox (a message from outside arrives)."""
        self.gmail.add_user(address).add(raw, tuple(labels))
        self.save()

    # ------------------------------------------------------------ the state file
    def _version(self) -> tuple[Any, ...]:
        return tuple(sorted((b.email, b.history_id, len(b.labels)) for b in list(self.gmail.mailboxes.values())))

    def save(self) -> None:
        """Write the mailboxes if they changed since the last write (atomically, mode 0600)."""
        with self._save_lock:
            version = self._version()
            if version == self._saved:
                return
            state = {
                "version": STATE_VERSION,
                "mailboxes": [_dump(box) for box in list(self.gmail.mailboxes.values())],
            }
            self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state, fh)
            os.replace(tmp, self.state_file)
            self._saved = version

    def _load(self) -> None:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"version {state.get('version')!r}")
            boxes = [_restore(item) for item in state["mailboxes"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DemoStateError(f"The demo's mail in {self.state_file} cannot be read ({exc}).") from None
        highest = 0
        for box in boxes:
            self.gmail.mailboxes[box.email] = box
            highest = max([highest, *(int(i, 16) for i in box.messages)])
        while int(new_id(), 16) <= highest:  # ids keep growing across starts, as Gmail's do
            pass
        self._saved = self._version()


def _dump(box: Mailbox) -> dict[str, Any]:
    with box.lock:
        messages = [
            [m.id, m.thread_id, base64.b64encode(m.raw).decode(), sorted(m.labels), m.internal_date_ms, m.history_id]
            for m in box.messages.values()
        ]
        history = [
            [r.id, r.message_id, r.thread_id, list(r.labels_after), r.added, r.deleted, *_changes(r)]
            for r in box.history
        ]
        return {
            "email": box.email,
            "history_id": box.history_id,
            "history_floor": box.history_floor,
            "labels": [[label.id, label.name] for label in box.labels.values() if label.type == "user"],
            "messages": messages,
            "history": history,
        }


def _changes(record: HistoryRecord) -> tuple[list[str], list[str]]:
    return list(record.labels_added), list(record.labels_removed)


def _restore(item: dict[str, Any]) -> Mailbox:
    box = Mailbox(str(item["email"]))
    box.history_id, box.history_floor = int(item["history_id"]), int(item["history_floor"])
    for label_id, name in item["labels"]:
        if label_id not in SYSTEM_LABELS:
            box.labels[label_id] = Label(label_id, name, "user")
    numbers = [int(i.split("_")[1]) for i in box.labels if i.startswith("Label_")]
    box._label_seq = itertools.count(max(numbers, default=0) + 1)
    for msg_id, thread_id, raw64, labels, date_ms, history_id in item["messages"]:
        raw = base64.b64decode(raw64)
        msg = StoredMessage(
            msg_id, thread_id, raw, set(labels), int(date_ms), int(history_id), parse_headers(raw), snippet_of(raw)
        )
        box.messages[msg.id] = msg
        box.threads.setdefault(msg.thread_id, []).append(msg.id)
        box.by_message_id.setdefault(msg.message_id, []).append(msg.id)
    for rid, msg_id, thread_id, after, added, deleted, labels_added, labels_removed in item["history"]:
        box.history.append(
            HistoryRecord(
                int(rid),
                msg_id,
                thread_id,
                tuple(after),
                added=bool(added),
                deleted=bool(deleted),
                labels_added=tuple(labels_added),
                labels_removed=tuple(labels_removed),
            )
        )
    return box
