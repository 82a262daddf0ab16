"""What the EWS backend does beyond the shared contract: sync states, request counts, throttling, sending."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from providers.base import Credentials, FolderRole, OutgoingMessage, ProviderSettings, RemoteFolder
from providers.errors import ConfigurationError, CursorInvalidError, TransientError
from providers.ews import EwsProvider
from providers.registry import backend_class
from tests.rig.messages import make_message, new_message_id
from tests.standins.ews_rig import ADDRESS, EwsRig, ews_rig


@pytest.fixture
def rig() -> Iterator[EwsRig]:
    with ews_rig() as rig:
        yield rig


@pytest.fixture
def provider(rig: EwsRig) -> Iterator[EwsProvider]:
    with rig.provider() as provider:
        yield provider


def roles(provider: EwsProvider) -> dict[FolderRole | None, RemoteFolder]:
    return {f.role: f for f in provider.list_folders()}


def test_registered_and_folders_by_id_with_roles(rig: EwsRig, provider: EwsProvider) -> None:
    assert backend_class("ews") is EwsProvider
    box = rig.ews.mailbox(ADDRESS)
    hiring = box.add_folder("Hiring")
    nested = box.add_folder("2026", parent=hiring)
    found = {f.name: f.role for f in provider.list_folders()}
    assert found[box.folder("inbox").id] == FolderRole.INBOX
    assert found[box.folder("sentitems").id] == FolderRole.SENT
    assert found[box.folder("deleteditems").id] == FolderRole.TRASH
    assert found[box.folder("junkemail").id] == FolderRole.JUNK
    assert found[hiring] is None and found[nested] is None
    assert box.folder("outbox").id not in found and box.folder("msgfolderroot").id not in found
    assert [c.operation for c in rig.ews.calls] == ["GetFolder", "SyncFolderHierarchy"]


def test_invalid_sync_state_is_cursor_invalid_then_resync_lists_everything_once(
    rig: EwsRig, provider: EwsProvider
) -> None:
    ids = [rig.deliver(make_message()) for _ in range(3)]
    inbox = roles(provider)[FolderRole.INBOX]
    cursor = provider.fetch_changes(inbox, None).cursor
    rig.ews.mailbox(ADDRESS).expire_sync_states()
    with pytest.raises(CursorInvalidError, match="ErrorInvalidSyncStateData"):
        provider.fetch_changes(inbox, cursor)
    again = provider.fetch_changes(inbox, None)
    assert again.new == tuple(ids) and again.present == set(ids)
    assert provider.fetch_changes(inbox, again.cursor).empty
    sent = roles(provider)[FolderRole.SENT]
    with pytest.raises(CursorInvalidError, match="another folder"):
        provider.fetch_changes(sent, again.cursor)


def test_paging_follows_includes_last_item_and_no_change_pass_is_one_request_per_folder(rig: EwsRig) -> None:
    for i in range(25):
        rig.deliver(make_message(subject=f"page {i}"))
    with rig.provider(page_size=10) as first:
        folders = first.list_folders()
        rig.ews.reset_calls()
        initial = {f.name: first.fetch_changes(f, None) for f in folders}
        inbox = roles(first)[FolderRole.INBOX]
    assert len(initial[inbox.name].new) == 25
    syncs = [c for c in rig.ews.calls if c.operation == "SyncFolderItems"]
    assert len(syncs) == 3 + len(folders) - 1  # 10 + 10 + 5 in the inbox, one page for each other folder
    with rig.provider(page_size=10) as provider:  # a fresh provider, as in a new sync pass
        rig.ews.reset_calls()
        again = {f.name: provider.fetch_changes(f, initial[f.name].cursor) for f in folders}
    assert all(c.empty for c in again.values()), again
    assert [c.operation for c in rig.ews.calls] == ["SyncFolderItems"] * len(folders)


def test_only_the_needed_properties_are_requested(rig: EwsRig, provider: EwsProvider) -> None:
    ids = [rig.deliver(make_message()) for _ in range(2)]
    inbox = roles(provider)[FolderRole.INBOX]
    rig.ews.reset_calls()
    provider.fetch_changes(inbox, None)
    list(provider.fetch_headers(inbox, ids))
    sync, headers = rig.ews.calls
    assert set(sync.fields) == {"item:IsDraft", "message:IsRead", (0x1090, "Integer")}
    assert "item:MimeContent" not in headers.fields and "item:Body" not in headers.fields
    assert {"message:InternetMessageId", "item:InReplyTo", "message:References", "item:ConversationId"} <= set(
        headers.fields
    )
    assert len(headers.fields) < 20  # exchangelib's default is ~100 properties
    rig.ews.reset_calls()
    provider.fetch_bodies(inbox, ids)
    (bodies,) = rig.ews.calls
    assert bodies.fields == ("item:MimeContent",)


def test_read_and_flag_changes_keep_each_other(rig: EwsRig, provider: EwsProvider) -> None:
    box = rig.ews.mailbox(ADDRESS)
    flagged, read, gone = (rig.deliver(make_message()) for _ in range(3))
    box.set_flags(flagged, {"\\Flagged"})
    inbox = roles(provider)[FolderRole.INBOX]
    cursor = provider.fetch_changes(inbox, None).cursor
    box.set_flags(flagged, {"\\Flagged", "\\Seen"})  # EWS reports only the read state: ReadFlagChange
    box.set_flags(read, {"\\Seen"})
    box.delete(gone)
    changes = provider.fetch_changes(inbox, cursor)
    assert {u.remote_id: u.flags for u in changes.changed} == {
        flagged: {"\\Flagged", "\\Seen"},
        read: {"\\Seen"},
    }
    assert changes.removed == (gone,) and not changes.new


def test_server_busy_is_transient_at_once_and_other_accounts_on_the_endpoint_carry_on(rig: EwsRig) -> None:
    """Both mailboxes are opened by one service account, so exchangelib gives them one shared Protocol."""
    rig.ews.add_user("svc-postroom@contoso.test", password="S3rvice!")
    bob = "bob@contoso.test"
    rig.ews.add_user(bob)
    rig.ews.grant_delegate("svc-postroom@contoso.test", ADDRESS)
    rig.ews.grant_delegate("svc-postroom@contoso.test", bob)
    creds = Credentials("svc-postroom@contoso.test", password="S3rvice!")
    opts = {"ews_url": rig.endpoint, "auth": "basic", "backoff_cap": 120}
    rig.deliver(make_message())
    rita_p = EwsProvider.open(ProviderSettings(ADDRESS, creds, opts))
    bob_p = EwsProvider.open(ProviderSettings(bob, creds, opts))
    with rita_p, bob_p:
        rita_inbox, bob_inbox = roles(rita_p)[FolderRole.INBOX], roles(bob_p)[FolderRole.INBOX]
        assert rita_p._acc().protocol is bob_p._acc().protocol  # the shared one
        rig.ews.busy(back_off_ms=45_000, mailbox=ADDRESS, operation="SyncFolderItems")
        started = time.monotonic()
        with pytest.raises(TransientError, match="server busy") as info:
            rita_p.fetch_changes(rita_inbox, None)
        assert info.value.retry_after == 45.0
        assert bob_p.fetch_changes(bob_inbox, None).cursor  # at once: nothing sleeps in the shared Protocol
        assert time.monotonic() - started < 5
        assert len(rita_p.fetch_changes(rita_inbox, None).new) == 1  # Rita's next turn works
        rig.ews.busy(back_off_ms=3_600_000, mailbox=ADDRESS)
        with pytest.raises(TransientError) as capped:
            rita_p.list_folders()
        assert capped.value.retry_after == 120  # backoff_cap


def test_replies_share_the_conversation_id_as_thread_hint(rig: EwsRig, provider: EwsProvider) -> None:
    first_mid = new_message_id()
    first = make_message(message_id=first_mid, from_=ADDRESS, to="ann@example.org", subject="Your application")
    provider.send(OutgoingMessage(first, ADDRESS, ("ann@example.org",), first_mid))
    reply = rig.deliver(make_message(subject="Re: Your application", in_reply_to=first_mid, references=[first_mid]))
    other = rig.deliver(make_message(subject="Unrelated"))
    folders = roles(provider)
    (sent_id,) = provider.fetch_changes(folders[FolderRole.SENT], None).new
    (sent,) = provider.fetch_headers(folders[FolderRole.SENT], [sent_id])
    incoming = {m.remote_id: m.thread_hint for m in provider.fetch_headers(folders[FolderRole.INBOX], [reply, other])}
    assert sent.thread_hint and incoming[reply] == sent.thread_hint != incoming[other]
    assert f"Message-ID: {first_mid}".encode() in sent.headers and sent.flags == {"\\Seen"}
    assert type(sent.internal_date) is datetime  # not exchangelib's EWSDateTime, which the database cannot store
    assert sent.internal_date.astimezone(timezone(timedelta(hours=2))).utcoffset() == timedelta(hours=2)


def test_send_without_copy_then_one_canonical_sent_copy(rig: EwsRig, provider: EwsProvider) -> None:
    box = rig.ews.mailbox(ADDRESS)
    mid, parent = new_message_id(), new_message_id()
    tracked = make_message(message_id=mid, from_=ADDRESS, to="ann@example.org", subject="Offer", html="<p>pixel</p>")
    result = provider.send_without_copy(OutgoingMessage(tracked, ADDRESS, ("ann@example.org",), mid))
    assert not result.sent_copy_stored
    ((_, recipients, delivered),) = rig.ews.outbound
    assert recipients == ["ann@example.org"] and f"Message-ID: {mid}".encode() in delivered
    assert rig.raw_messages(FolderRole.SENT) == [] and box.in_folder("drafts") == []
    clean = make_message(
        message_id=mid, from_=ADDRESS, to="ann@example.org", subject="Offer", body="Dear Ann", in_reply_to=parent
    )
    copy_id = provider.store_sent_copy(clean, frozenset({"\\Seen", "\\Flagged"}))
    (copy,) = box.in_folder("sentitems")
    assert copy.id == copy_id and not copy.is_draft and copy.is_read and copy.raw == clean
    sent = roles(provider)[FolderRole.SENT]
    (indexed,) = provider.fetch_headers(sent, [copy_id])
    assert indexed.flags == {"\\Seen", "\\Flagged"} and f"In-Reply-To: {parent}".encode() in indexed.headers


@pytest.mark.parametrize(
    ("options", "creds", "message"),
    [
        ({"auth": "basic"}, Credentials(ADDRESS, password="x"), "need ews_url"),
        ({"ews_url": "https://x/EWS/Exchange.asmx", "auth": "kerberos"}, Credentials(ADDRESS, password="x"), "auth"),
        ({"ews_url": "https://x/EWS/Exchange.asmx", "auth": "oauth2"}, Credentials(ADDRESS), "access token"),
        ({"ews_url": "https://x/EWS/Exchange.asmx"}, Credentials(ADDRESS), "needs a password"),
        (
            {"ews_url": "https://x/EWS/Exchange.asmx", "version": "fifteen"},
            Credentials(ADDRESS, password="x"),
            "version",
        ),
    ],
)
def test_misconfiguration_is_one_sentence(options: dict[str, str], creds: Credentials, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        EwsProvider.open(ProviderSettings(ADDRESS, creds, options))
