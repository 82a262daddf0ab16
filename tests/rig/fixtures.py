"""pytest fixtures for tests that need real mail servers.

Import them into a conftest with ``from tests.rig.fixtures import *``:

``mail_rig`` (session)
    One running :class:`~tests.rig.mailrig.MailRig` (Dovecot + Postfix or aiosmtpd).
``mailbox`` (function)
    A fresh :class:`Mailbox`: a unique user ``u<hex>@example.test`` with a password and an
    OAuth token, so tests never see each other's mail. Seed it with ``mailbox.append(raw)``
    (IMAP APPEND, returns the UID), ``mailbox.seed(items)`` / ``mailbox.seed_corpus(n)``
    (direct Maildir writes, fast for thousands), change it with ``set_flags``/``expunge``,
    and get provider settings with ``mailbox.settings(...)``.
"""

from __future__ import annotations

import imaplib
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from providers.base import Credentials, ProviderSettings
from tests.rig.corpus import Item, generate
from tests.rig.faulty_smtp import FaultySmtp, faulty_smtp
from tests.rig.mailrig import MailRig
from tests.rig.messages import make_message

__all__ = ["Mailbox", "mail_rig", "mailbox", "make_message", "new_mailbox", "smtp"]


@dataclass
class Mailbox:
    """One throwaway account on the rig, with helpers that bypass the code under test."""

    rig: MailRig
    address: str
    password: str
    token: str

    # ------------------------------------------------------------ provider settings
    def settings(
        self,
        security: str = "none",
        auth: str = "password",
        smtp_security: str = "none",
        timeout: float = 15.0,
        files_sent: bool = False,
        **options: Any,
    ) -> ProviderSettings:
        """Settings for :class:`providers.imap.ImapProvider` against the rig.

        ``security``: "none" | "ssl" | "starttls"; ``auth``: "password" | "XOAUTH2" | "OAUTHBEARER".
        SMTP goes to the AUTH-requiring submission port; with ``files_sent`` to the one whose
        server files a copy of every submitted message in the sender's Sent itself, as Gmail
        does (it shows up there shortly after the send: wait for it; see :mod:`tests.rig.mailrig`).
        """
        port = self.rig.ports["imaps"] if security == "ssl" else self.rig.ports["imap"]
        if auth == "password":
            creds = Credentials(self.address, password=self.password)
        else:
            creds = Credentials(self.address, access_token=self.token, oauth_mechanism=auth.upper())
        opts: dict[str, Any] = {
            "imap_host": "127.0.0.1",
            "imap_port": port,
            "imap_security": security,
            "smtp_host": "127.0.0.1",
            "smtp_port": self.rig.ports["smtp_files_sent" if files_sent else "smtp_submission"],
            "smtp_security": smtp_security,
            "ca_file": self.rig.tls_ca,
        }
        opts.update(options)
        return ProviderSettings(email=self.address, credentials=creds, options=opts, timeout=timeout)

    def add_imap_args(self, password_env: str = "BOX_PASSWORD", email: str | None = None) -> list[str]:
        """``postroom accounts add-imap`` arguments for this mailbox (plain IMAP/SMTP on loopback)."""
        return [
            "accounts", "add-imap", "--email", email or self.address, "--username", self.address,
            "--password-env", password_env,
            "--imap-host", "127.0.0.1", "--imap-port", str(self.rig.ports["imap"]), "--imap-security", "none",
            "--smtp-host", "127.0.0.1", "--smtp-port", str(self.rig.ports["smtp_submission"]),
            "--smtp-security", "none",
        ]  # fmt: skip

    # ------------------------------------------------------------ direct IMAP access
    @contextmanager
    def imap(self, folder: str | None = None) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection as this user (folder selected if given)."""
        conn = imaplib.IMAP4("127.0.0.1", self.rig.ports["imap"], timeout=15)
        try:
            conn.login(self.address, self.password)
            if folder is not None:
                typ, data = conn.select(_q(folder))
                assert typ == "OK", data
            yield conn
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def append(self, raw: bytes, folder: str = "INBOX", flags: Iterable[str] = ()) -> int:
        """Deliver ``raw`` into ``folder`` with IMAP APPEND; returns the new UID."""
        with self.imap() as conn:
            flag_text = f"({' '.join(flags)})" if flags else None
            typ, data = conn.append(_q(folder), flag_text, None, raw)
            assert typ == "OK", data
            m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            assert m, data
            return int(m.group(1))

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.imap(folder) as conn:
            typ, data = conn.uid("SEARCH", "ALL")
            assert typ == "OK", data
            return sorted(int(x) for x in (data[0] or b"").split())

    def set_flags(self, uid: int, flags: Iterable[str], folder: str = "INBOX") -> None:
        """Replace the flags of one message."""
        with self.imap(folder) as conn:
            typ, data = conn.uid("STORE", str(uid), "FLAGS", f"({' '.join(flags)})")
            assert typ == "OK", data

    def expunge(self, uid: int, folder: str = "INBOX") -> None:
        with self.imap(folder) as conn:
            typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
            assert typ == "OK", data
            typ, data = conn.uid("EXPUNGE", str(uid))
            assert typ == "OK", data

    def fetch_raw(self, folder: str = "INBOX") -> dict[int, bytes]:
        """Every message in ``folder`` as raw bytes, by UID."""
        out: dict[int, bytes] = {}
        uids = self.uids(folder)
        if not uids:
            return out
        with self.imap(folder) as conn:
            typ, data = conn.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
            assert typ == "OK", data
            for item in data:
                if isinstance(item, tuple):
                    m = re.search(rb"UID (\d+)", item[0])
                    assert m, item[0]
                    out[int(m.group(1))] = item[1]
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(0.05)

    def can_login(self) -> bool:
        try:
            with self.imap():
                return True
        except imaplib.IMAP4.error:
            return False

    # ------------------------------------------------------------ bulk seeding
    def ensure_folders(self) -> None:
        """Log in once so Dovecot creates the auto-subscribed special-use folders."""
        with self.imap():
            pass

    def seed(self, items: Iterable[Item], folder: str = "INBOX") -> int:
        """Write messages straight into the Maildir (thousands per second); returns the count."""
        self.ensure_folders()
        count, _ = self.rig.seed_maildir(self.address, items, folder=folder)
        return count

    def seed_corpus(self, n: int, folder: str = "INBOX", seed: int = 1) -> int:
        """Seed ``n`` messages of the deterministic corpus (see :mod:`tests.rig.corpus`)."""
        return self.seed(generate(n, seed), folder=folder)


def _q(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Dovecot's passwd-file driver looks at the file at most once a second, so a user
# added mid-run may be refused for up to a second. Users are created up front
# instead, and each test takes fresh ones from this pool.
POOL_SIZE = 2000  # tests take one or more each; running out fails the rest of the run


def _pool() -> dict[str, str]:
    run = uuid.uuid4().hex[:6]
    return {f"u{run}{i:04d}@example.test": f"pw-{run}-{i}" for i in range(POOL_SIZE)}


@pytest.fixture(scope="session")
def mail_rig() -> Iterator[MailRig]:
    """One Dovecot + SMTP server for the whole test run, with a pool of ready users."""
    with MailRig(users=_pool()) as rig:
        rig.free_users = list(rig.users)  # type: ignore[attr-defined]
        yield rig


@pytest.fixture
def new_mailbox(mail_rig: MailRig) -> Callable[[], Mailbox]:
    """A factory of fresh, empty accounts (password + OAuth token) on the shared rig."""

    def make() -> Mailbox:
        address = mail_rig.free_users.pop()  # type: ignore[attr-defined]
        token = f"tok-{uuid.uuid4().hex[:12]}"
        mail_rig.add_token(token, address)
        return Mailbox(mail_rig, address, mail_rig.users[address], token)

    return make


@pytest.fixture
def mailbox(new_mailbox: Callable[[], Mailbox]) -> Mailbox:
    """A fresh, empty account of its own (password + OAuth token) on the shared rig."""
    return new_mailbox()


@pytest.fixture(scope="module")
def smtp(mail_rig: MailRig) -> Iterator[FaultySmtp]:
    """A capturing SMTP submission server with fault modes (:mod:`tests.rig.faulty_smtp`), one
    per test module, authenticating the rig's users."""
    with faulty_smtp(mail_rig) as server:
        yield server
