"""IMAP behaviour against real Dovecot beyond the shared contract."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from providers.base import Credentials, FolderRole, ProviderSettings, RemoteFolder
from providers.errors import ConfigurationError, CursorInvalidError, TransientError
from providers.imap import ImapProvider
from providers.registry import backend_class
from tests.rig.connect_proxy import ConnectProxy
from tests.rig.fixtures import Mailbox
from tests.rig.messages import make_message


def test_registry_resolves_imap() -> None:
    assert backend_class("imap") is ImapProvider


def test_uidvalidity_change_invalidates_cursor(mailbox: Mailbox) -> None:
    mailbox.ensure_folders()
    mailbox.rig.doveadm("mailbox", "create", "-u", mailbox.address, "Applicants")
    mailbox.append(make_message(), "Applicants")
    folder = RemoteFolder("Applicants")
    with ImapProvider.open(mailbox.settings()) as provider:
        cursor = provider.fetch_changes(folder, None).cursor
        provider.close()
        mailbox.rig.doveadm("mailbox", "delete", "-u", mailbox.address, "Applicants")
        mailbox.rig.doveadm("mailbox", "create", "-u", mailbox.address, "Applicants")
        mailbox.append(make_message(), "Applicants")
        with pytest.raises(CursorInvalidError):
            provider.fetch_changes(folder, cursor)


@pytest.mark.parametrize("extensions", [[], ["CONDSTORE", "QRESYNC"]], ids=["condstore", "plain"])
def test_no_change_pass_costs_the_same_at_any_size(mailbox: Mailbox, extensions: list[str]) -> None:
    mailbox.seed_corpus(100, folder="Archive", seed=3)
    mailbox.seed_corpus(2000, folder="Junk", seed=4)
    costs = []
    with ImapProvider.open(mailbox.settings(disable_extensions=extensions)) as provider:
        for name, size in (("Archive", 100), ("Junk", 2000)):
            folder = RemoteFolder(name)
            initial = provider.fetch_changes(folder, None)
            assert len(initial.new) == size
            for _ in range(2):  # a fresh connection (STATUS) and a re-selected folder
                before = provider.command_count
                again = provider.fetch_changes(folder, initial.cursor)
                costs.append(provider.command_count - before)
                assert again.empty
                provider.close()
    # [folder already selected, fresh connection] for 100 and for 2,000 messages
    assert costs[:2] == costs[2:], costs
    assert costs[0] <= 2, costs  # one STATUS/SELECT (+ one UID FETCH without CONDSTORE)


def test_no_change_pass_over_every_folder_is_login_list_logout(mailbox: Mailbox) -> None:
    """LIST-STATUS answers every folder's STATUS at once, the login reply carries the
    capabilities, and SASL-IR logs in with one command: an idle account costs three."""
    mailbox.seed_corpus(50, folder="Archive", seed=5)
    mailbox.append(make_message())
    with ImapProvider.open(mailbox.settings()) as provider:
        folders = provider.list_folders()
        cursors = {f.name: provider.fetch_changes(f, None).cursor for f in folders}
    assert len(folders) >= 6
    provider = ImapProvider.open(mailbox.settings())
    before = provider.command_count
    for folder in provider.list_folders():
        assert provider.fetch_changes(folder, cursors[folder.name]).empty
    provider.close()
    # greeting, AUTHENTICATE, LIST ... RETURN (SPECIAL-USE STATUS (...)), LOGOUT is not counted
    assert provider.command_count - before == 3


def test_listed_status_loses_nothing_that_arrives_after_the_list(mailbox: Mailbox) -> None:
    mailbox.append(make_message())
    with ImapProvider.open(mailbox.settings()) as provider:
        inbox = next(f for f in provider.list_folders() if f.role == FolderRole.INBOX)
        cursor = provider.fetch_changes(inbox, None).cursor
        provider.list_folders()
        late = str(mailbox.append(make_message(subject="after the LIST")))
        # answered from the LIST's snapshot at most once: the next look sees the new message
        first = provider.fetch_changes(inbox, cursor)
        later = first if first.new else provider.fetch_changes(inbox, first.cursor)
    assert later.new == (late,)


def test_plain_login_without_sasl_ir_or_listed_status(mailbox: Mailbox) -> None:
    """Servers without SASL-IR, LIST-STATUS or ENABLE get the classic commands."""
    mailbox.append(make_message(subject="classic"))
    options = {"disable_extensions": ["SASL-IR", "LIST-STATUS", "ENABLE"]}
    with ImapProvider.open(mailbox.settings(**options)) as provider:
        inbox = next(f for f in provider.list_folders() if f.role == FolderRole.INBOX)
        first = provider.fetch_changes(inbox, None)
        assert len(first.new) == 1
        assert provider.fetch_changes(inbox, first.cursor).empty


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy()
    yield p
    p.close()


@pytest.mark.parametrize("security", ["none", "ssl"])
def test_http_connect_proxy(mailbox: Mailbox, proxy: ConnectProxy, security: str) -> None:
    mailbox.append(make_message(subject="through the proxy"))
    settings = mailbox.settings(security=security, proxy=f"http://127.0.0.1:{proxy.port}")
    with ImapProvider.open(settings) as provider:
        inbox = RemoteFolder("INBOX", FolderRole.INBOX)
        changes = provider.fetch_changes(inbox, None)
        (msg,) = provider.fetch_headers(inbox, changes.new)
        assert b"through the proxy" in msg.headers
    port = mailbox.rig.ports["imaps" if security == "ssl" else "imap"]
    assert proxy.tunnels == [f"127.0.0.1:{port}"]


def test_plaintext_to_remote_host_refused() -> None:
    settings = ProviderSettings(
        "a@example.com",
        Credentials("a@example.com", password="x"),
        {"imap_host": "imap.example.com", "imap_security": "none"},
    )
    with pytest.raises(ConfigurationError, match="unencrypted"):
        ImapProvider.open(settings)
    allowed = ProviderSettings(settings.email, settings.credentials, {**settings.options, "allow_plaintext": True})
    ImapProvider.open(allowed).close()


def test_untrusted_certificate_is_transient(mailbox: Mailbox) -> None:
    provider = ImapProvider.open(mailbox.settings(security="ssl", ca_file=None))
    with provider, pytest.raises(TransientError, match="certificate"):
        provider.list_folders()


def test_connection_refused_is_transient(mailbox: Mailbox) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ImapProvider.open(mailbox.settings(imap_port=port)) as provider, pytest.raises(TransientError):
        provider.list_folders()


def test_capabilities_follow_server_and_options(mailbox: Mailbox) -> None:
    with ImapProvider.open(mailbox.settings(disable_extensions=["QRESYNC"], disable_move=True)) as provider:
        provider.list_folders()
        caps = {c.value for c in provider.capabilities}
    assert {"condstore", "push", "send", "store-sent-copy"} <= caps
    assert not caps & {"qresync", "move", "labels", "server-thread-ids"}


def test_store_sent_copy_returns_uid_and_seen(mailbox: Mailbox) -> None:
    mailbox.ensure_folders()
    with ImapProvider.open(mailbox.settings()) as provider:
        uid = provider.store_sent_copy(make_message(subject="copy"))
        sent = next(f for f in provider.list_folders() if f.role == FolderRole.SENT)
        (msg,) = provider.fetch_headers(sent, [uid or ""])
    assert "\\Seen" in msg.flags


def test_delete_in_the_trash_removes_for_good(mailbox: Mailbox) -> None:
    """A message deleted from Trash leaves the server (moving it into Trash again would keep it)."""
    mailbox.ensure_folders()
    kept, gone = mailbox.append(make_message(subject="kept"), "Trash"), mailbox.append(make_message(), "Trash")
    with ImapProvider.open(mailbox.settings()) as provider:
        (trash,) = [f for f in provider.list_folders() if f.role == FolderRole.TRASH]
        provider.delete(trash, [str(gone)])
    assert list(mailbox.fetch_raw("Trash")) == [kept]
