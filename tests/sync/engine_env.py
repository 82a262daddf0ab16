"""One account of each backend on the test database, and the server's side of it: what the engine
contract (test_engine_contract.py) and the per-backend tests (test_*_specific.py) do to a mailbox
without going through the code under test.

:func:`make_env` is the one way to get one: ``"fake"`` (tests/rig/fake_provider.py), ``"imap"``
(a fresh Dovecot mailbox of the mail rig), or ``"gmail"``, ``"graph"`` and ``"ews"`` (their stand-in
started for the test, driven by the real client libraries; ``env.rig`` is the stand-in's rig).
Each environment's account is added the way a user adds it (services.accounts), except the fake's,
which no user can add.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import MailAccount
from providers.base import FolderRole
from services.accounts import EwsAccountRequest, add_ews_account, add_gmail_account, add_graph_account
from sync.store import default_org
from tests.rig import fake_provider
from tests.rig.fake_provider import FakeServer
from tests.rig.fixtures import Mailbox
from tests.standins import ews_rig, gmail_rig, graph_rig
from tests.sync.helpers import connect
from tests.web.microsoft_rig import microsoft_config

BACKENDS = ("fake", "imap", "gmail", "graph", "ews")
MIME_ONLY = ("item:MimeContent",)  # an EWS GetItem that fetches a body


def _message_id_of(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw).get("Message-ID", "")).strip()


@dataclass
class Recipient:
    """Another mailbox on the same server: its address, and the raw messages in its inbox."""

    address: str
    received: Callable[[], list[bytes]]


class EngineEnv:
    """An account on the test database and its mailbox on the server. Subclasses do the server's
    side; remote ids are the server's (a UID, a Gmail message id, a Graph or EWS item id)."""

    backend: str
    auth_error: str = "Login failed"  # in the account's error once its credentials are refused
    all_mail: bool = False  # every message of the inbox and Sent is also in All Mail (Gmail's labels)
    knows_sent_copy_id: bool = True  # the outbox row learns the id of the copy in Sent
    rig: Any = None  # the backend's own rig, for per-backend tests

    def __init__(self, config: Config, sessions: sessionmaker[Session], account_id: int, address: str) -> None:
        self.config, self.sessions, self.account_id, self.address = config, sessions, account_id, address

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        """Put ``raw`` into the folder with ``role`` (mail arriving, or a copy a client stored)."""
        raise NotImplementedError

    def set_flags(self, remote_id: str, flags: set[str], role: FolderRole = FolderRole.INBOX) -> None:
        """Read or flag a message in another client (``\\Seen``, ``\\Flagged``)."""
        raise NotImplementedError

    def remove(self, remote_id: str, role: FolderRole = FolderRole.INBOX) -> None:
        """Delete a message for good."""
        raise NotImplementedError

    def move(self, remote_id: str, source: FolderRole, target: FolderRole) -> None:
        """Move a message in another client (delete into the trash, ...)."""
        raise NotImplementedError

    def expire_cursors(self) -> None:
        """The server forgets every sync state it handed out: IMAP UIDVALIDITY changes, Gmail's
        historyId is too old, Graph answers 410, EWS ErrorInvalidSyncStateData."""
        raise NotImplementedError

    def recipient(self, address: str) -> Recipient:
        """Another mailbox on the server to send to (``address`` where the server can choose it)."""
        raise NotImplementedError

    def sent_copies(self, message_id: str) -> list[str]:
        """Remote ids of the sent (not draft) copies with this Message-ID in the account's Sent folder."""
        raise NotImplementedError

    def refuse_credentials(self) -> None:
        """From now on the server refuses the account's stored credentials (password changed,
        grant revoked)."""
        raise NotImplementedError

    def server_threads(self, message_id: str) -> set[str] | None:
        """The server's thread ids of the account's copies of this message; None: not modelled."""
        return None

    def bodies_fetched(self) -> list[str] | None:
        """Remote ids of the bodies fetched since :meth:`reset_calls`, in order (with repeats);
        None: the backend's rig does not show them."""
        return None

    def reset_calls(self) -> None:
        """Forget the requests the server has seen so far."""

    def per_role(self, **counts: int) -> dict[str, int]:
        """Expected counts by folder role, as :func:`tests.sync.helpers.by_role` reports them."""
        if self.all_mail:
            counts["all"] = counts.get("inbox", 0) + counts.get("sent", 0)
        return {role: n for role, n in counts.items() if n}


class FakeEnv(EngineEnv):
    backend = "fake"
    ADDRESS, PASSWORD = "rita@fake.test", "Spring2026!"

    def __init__(self, config: Config, sessions: sessionmaker[Session], server: FakeServer) -> None:
        self.server = self.rig = server
        self.box = server.add_mailbox(self.ADDRESS, self.PASSWORD)
        with sessions.begin() as s:
            account = MailAccount(
                org_id=default_org(s).id,
                email=self.ADDRESS,
                provider=fake_provider.BACKEND,
                settings={"server": server.name, "thread_hints": True},
                secret=SecretBox.for_config(config.security).seal(
                    {"username": self.ADDRESS, "password": self.PASSWORD}
                ),
                status="active",
            )
            s.add(account)
            s.flush()
            account_id = account.id
        super().__init__(config, sessions, account_id, self.ADDRESS)

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return self.box.deliver(raw, role)

    def set_flags(self, remote_id: str, flags: set[str], role: FolderRole = FolderRole.INBOX) -> None:
        self.box.set_flags(remote_id, flags, role)

    def remove(self, remote_id: str, role: FolderRole = FolderRole.INBOX) -> None:
        self.box.remove(remote_id, role)

    def move(self, remote_id: str, source: FolderRole, target: FolderRole) -> None:
        self.box.move(remote_id, source, target)

    def expire_cursors(self) -> None:
        self.box.expire_cursors()

    def recipient(self, address: str) -> Recipient:
        box = self.server.add_mailbox(address)
        return Recipient(box.address, lambda: [m.raw for m in box.messages(FolderRole.INBOX)])

    def sent_copies(self, message_id: str) -> list[str]:
        return [str(m.uid) for m in self.box.messages(FolderRole.SENT) if m.message_id == message_id]

    def refuse_credentials(self) -> None:
        self.box.password = "changed-elsewhere"

    def server_threads(self, message_id: str) -> set[str] | None:
        return {m.thread for f in self.box.folders.values() for m in f.messages.values() if m.message_id == message_id}

    def bodies_fetched(self) -> list[str] | None:
        return list(self.server.bodies_served)

    def reset_calls(self) -> None:
        self.server.reset_calls()


class ImapEnv(EngineEnv):
    backend = "imap"
    # the mail rig's Dovecot names each special-use folder after its role
    FOLDERS = {FolderRole.INBOX: "INBOX"} | {
        role: role.value.title()
        for role in (FolderRole.SENT, FolderRole.TRASH, FolderRole.DRAFTS, FolderRole.JUNK, FolderRole.ARCHIVE)
    }

    def __init__(self, config: Config, sessions: sessionmaker[Session], mailboxes: Callable[[], Mailbox]) -> None:
        self.mailboxes = mailboxes
        self.box = self.rig = mailboxes()
        self.box.ensure_folders()
        super().__init__(config, sessions, connect(config, sessions, self.box), self.box.address)

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return str(self.box.append(raw, self.FOLDERS[role]))

    def set_flags(self, remote_id: str, flags: set[str], role: FolderRole = FolderRole.INBOX) -> None:
        self.box.set_flags(int(remote_id), flags, self.FOLDERS[role])

    def remove(self, remote_id: str, role: FolderRole = FolderRole.INBOX) -> None:
        self.box.expunge(int(remote_id), self.FOLDERS[role])

    def move(self, remote_id: str, source: FolderRole, target: FolderRole) -> None:
        with self.box.imap(self.FOLDERS[source]) as conn:
            typ, data = conn.uid("MOVE", remote_id, f'"{self.FOLDERS[target]}"')
            assert typ == "OK", data

    def expire_cursors(self) -> None:
        """Every folder with mail is deleted and created again with its messages, as when it is
        restored from a backup: a new UIDVALIDITY and new UIDs. INBOX cannot be deleted, and an
        empty folder need not be: they get a new UIDVALIDITY."""
        rig, user = self.box.rig, self.address
        for folder in self.FOLDERS.values():
            raws = list(self.box.fetch_raw(folder).values()) if folder != "INBOX" else []
            if raws:
                rig.doveadm("mailbox", "delete", "-u", user, folder)
                rig.doveadm("mailbox", "create", "-u", user, folder)
                for raw in raws:
                    self.box.append(raw, folder)
            else:
                uidvalidity = str(random.randrange(1, 2**31))
                rig.doveadm("mailbox", "update", "-u", user, "--uid-validity", uidvalidity, folder)

    def recipient(self, address: str) -> Recipient:
        box = self.mailboxes()  # the rig's users have addresses of their own
        return Recipient(box.address, lambda: list(box.fetch_raw("INBOX").values()))

    def sent_copies(self, message_id: str) -> list[str]:
        sent = self.box.fetch_raw("Sent")
        return [str(uid) for uid, raw in sorted(sent.items()) if _message_id_of(raw) == message_id]

    def refuse_credentials(self) -> None:
        """The password was changed elsewhere: the stored one no longer works."""
        box = SecretBox.for_config(self.config.security)
        with self.sessions.begin() as s:
            account = s.get_one(MailAccount, self.account_id)
            account.secret = box.seal({**box.open(account.secret), "password": "changed-elsewhere"})


class _StandInEnv(EngineEnv):
    """A cloud account against its stand-in: mail is delivered by the rig, flags and deletions
    are the stand-in mailbox's own (``self.box``), whatever the folder."""

    box: Any

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return str(self.rig.deliver(raw, role))

    def set_flags(self, remote_id: str, flags: set[str], role: FolderRole = FolderRole.INBOX) -> None:
        self.box.set_flags(remote_id, flags)

    def remove(self, remote_id: str, role: FolderRole = FolderRole.INBOX) -> None:
        self.box.delete(remote_id)  # for good (Shift+Delete), not into the trash


class GmailEnv(_StandInEnv):
    backend = "gmail"
    auth_error = "invalid_grant"
    all_mail = True
    LABELS = {FolderRole.INBOX: "INBOX", FolderRole.SENT: "SENT", FolderRole.TRASH: "TRASH"}

    def __init__(self, config: Config, sessions: sessionmaker[Session], rig: gmail_rig.GmailRig) -> None:
        self.rig, self.standin = rig, rig.standin
        self.box = rig.standin.mailbox(rig.address)
        config = rig.config(config)
        with sessions.begin() as s:
            account_id = add_gmail_account(s, config, rig.address, rig.refresh_token).id
        super().__init__(config, sessions, account_id, rig.address)

    def move(self, remote_id: str, source: FolderRole, target: FolderRole) -> None:
        self.box.modify(remote_id, add=[self.LABELS[target]], remove=[self.LABELS[source]])

    def expire_cursors(self) -> None:
        self.box.expire_history()  # Gmail keeps history for about a week

    def recipient(self, address: str) -> Recipient:
        box = self.standin.add_user(address)
        return Recipient(address, lambda: [m.raw for m in box.by_label("INBOX")])

    def sent_copies(self, message_id: str) -> list[str]:
        return [m.id for m in self.box.by_label("SENT") if m.message_id == message_id]

    def refuse_credentials(self) -> None:
        self.standin.revoke(self.rig.refresh_token)  # the user removed Postroom from their Google account
        self.standin.expire_access_tokens()

    def server_threads(self, message_id: str) -> set[str] | None:
        return {m.thread_id for m in self.box.messages.values() if m.message_id == message_id}


class GraphEnv(_StandInEnv):
    backend = "graph"
    auth_error = "AADSTS50173"
    knows_sent_copy_id = False  # sendMail answers 202 with no id

    def __init__(self, config: Config, sessions: sessionmaker[Session], rig: graph_rig.GraphRig) -> None:
        self.rig, self.graph = rig, rig.graph
        self.box = rig.graph.mailbox(rig.address)
        config = dataclasses.replace(config, microsoft=microsoft_config(rig))
        with sessions.begin() as s:
            account_id = add_graph_account(s, config, rig.address, rig.refresh_token).id
        super().__init__(config, sessions, account_id, rig.address)

    def move(self, remote_id: str, source: FolderRole, target: FolderRole) -> None:
        self.box.move(remote_id, graph_rig.ROLE_FOLDERS[target])

    def expire_cursors(self) -> None:
        self.box.expire_sync_state()  # Graph answers 410 SyncStateNotFound

    def recipient(self, address: str) -> Recipient:
        box = self.graph.add_user(address)
        return Recipient(address, lambda: [i.raw for i in box.in_folder(box.folder("inbox").id)])

    def sent_copies(self, message_id: str) -> list[str]:
        sent = self.box.in_folder(self.box.folder("sentitems").id)
        return [i.id for i in sent if i.headers()["Message-ID"] == message_id]

    def refuse_credentials(self) -> None:
        self.rig.identity.revoke(self.rig.refresh_token)  # consent removed in My Apps, or sessions revoked
        self.rig.identity.expire_access_tokens()

    def server_threads(self, message_id: str) -> set[str] | None:
        return {i.conversation_id for i in self.box.by_message_id(message_id)}


class EwsEnv(_StandInEnv):
    backend = "ews"
    knows_sent_copy_id = False  # CreateItem with SendAndSaveCopy returns no item

    def __init__(self, config: Config, sessions: sessionmaker[Session], rig: ews_rig.EwsRig) -> None:
        self.rig, self.ews = rig, rig.ews
        self.box = rig.ews.mailbox(rig.address)
        super().__init__(config, sessions, add_ews(config, sessions, rig), rig.address)

    def move(self, remote_id: str, source: FolderRole, target: FolderRole) -> None:
        self.box.move(remote_id, ews_rig.ROLE_FOLDERS[target])  # a new item id, as in Exchange

    def expire_cursors(self) -> None:
        self.box.expire_sync_states()  # Exchange answers ErrorInvalidSyncStateData

    def recipient(self, address: str) -> Recipient:
        box = self.ews.add_user(address)
        return Recipient(address, lambda: [i.raw for i in box.in_folder("inbox")])

    def sent_copies(self, message_id: str) -> list[str]:
        sent = [i for i in self.box.in_folder("sentitems") if i.header("Message-ID") == message_id]
        return [i.id for i in sent if not i.is_draft]  # a draft left in Sent Items is no sent copy

    def refuse_credentials(self) -> None:
        self.ews.add_user(self.address, password="changed-in-outlook")

    def server_threads(self, message_id: str) -> set[str] | None:
        return {i.conversation_id for i in self.box.items.values() if i.header("Message-ID") == message_id}

    def bodies_fetched(self) -> list[str] | None:
        fetches = [c.body for c in self.ews.requests("GetItem") if c.fields == MIME_ONLY]
        return [i.decode() for body in fetches for i in re.findall(rb'<t:ItemId Id="([^"]+)"', body)]

    def reset_calls(self) -> None:
        self.ews.reset_calls()


def add_ews(
    config: Config,
    sessions: sessionmaker[Session],
    rig: ews_rig.EwsRig,
    email: str = ews_rig.ADDRESS,
    password: str = ews_rig.PASSWORD,
) -> int:
    """Add an Exchange mailbox as `postroom accounts add-ews --auth basic --ca-file ...` does; its id."""
    assert rig.ca_file is not None and rig.endpoint.startswith("https://")
    req = EwsAccountRequest(
        email=email, ews_url=rig.endpoint, auth="basic", username=email, password=password, ca_file=rig.ca_file
    )
    with sessions.begin() as s:
        return add_ews_account(s, config, req).id


def env_fixture(*backends: str) -> Any:
    """A pytest fixture named ``env``: an environment of each of ``backends`` in turn, for each
    test (and database): ``env = env_fixture("gmail")`` in a module about one backend,
    ``env_fixture(*BACKENDS)`` for the engine contract."""

    @pytest.fixture(name="env", params=backends)
    def env(request: pytest.FixtureRequest, config: Config, sessions: sessionmaker[Session]) -> Iterator[EngineEnv]:
        mailboxes = request.getfixturevalue("new_mailbox") if request.param == "imap" else None
        with make_env(request.param, config, sessions, mailboxes) as made:
            yield made

    return env


@contextmanager
def make_env(
    backend: str, config: Config, sessions: sessionmaker[Session], mailboxes: Callable[[], Mailbox] | None = None
) -> Iterator[EngineEnv]:
    """An account of ``backend`` with an empty mailbox; ``mailboxes`` (the ``new_mailbox``
    fixture) is needed for ``"imap"`` only. Stand-ins are stopped, and checked for schema
    violations, when the block ends."""
    if backend == "fake":
        with FakeServer().running() as server, fake_provider.registered():
            yield FakeEnv(config, sessions, server)
    elif backend == "imap":
        assert mailboxes is not None, "an IMAP environment needs the new_mailbox fixture"
        yield ImapEnv(config, sessions, mailboxes)
    elif backend == "gmail":
        with gmail_rig.gmail_rig() as grig:
            yield GmailEnv(config, sessions, grig)
    elif backend == "graph":
        with graph_rig.graph_rig() as mrig:
            yield GraphEnv(config, sessions, mrig)
    elif backend == "ews":
        with ews_rig.ews_rig(https=True) as erig:
            yield EwsEnv(config, sessions, erig)
    else:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
