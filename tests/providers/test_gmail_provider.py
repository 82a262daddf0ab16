"""What the Gmail backend does beyond the shared contract: history, quota, backoff, threads, tokens."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from providers.base import Credentials, FolderRole, OutgoingMessage, ProviderSettings, RemoteFolder
from providers.errors import (
    AuthError,
    ConfigurationError,
    CursorInvalidError,
    ProtocolError,
    SendError,
    TransientError,
)
from providers.gmail import GmailProvider
from providers.registry import backend_class
from tests.rig.messages import make_message, new_message_id
from tests.standins.gmail_rig import ADDRESS, GmailRig, gmail_rig


@pytest.fixture
def rig() -> Iterator[GmailRig]:
    with gmail_rig() as rig:
        yield rig


@pytest.fixture
def provider(rig: GmailRig) -> Iterator[GmailProvider]:
    with rig.provider() as provider:
        yield provider


def folders(provider: GmailProvider) -> dict[str, RemoteFolder]:
    return {f.name: f for f in provider.list_folders()}


def initial_pass(provider: GmailProvider) -> dict[str, str]:
    return {name: provider.fetch_changes(f, None).cursor for name, f in folders(provider).items()}


def test_registered_and_folders_are_labels_and_all_mail(rig: GmailRig, provider: GmailProvider) -> None:
    assert backend_class("gmail") is GmailProvider
    label = rig.standin.mailbox(ADDRESS).add_label("Candidates")
    found = folders(provider)
    assert {n: f.role for n, f in found.items()} == {
        "INBOX": FolderRole.INBOX,
        "SENT": FolderRole.SENT,
        "TRASH": FolderRole.TRASH,
        "SPAM": FolderRole.JUNK,
        "DRAFT": FolderRole.DRAFTS,
        label: None,
        "ALL": FolderRole.ALL,
    }


def test_expired_history_is_cursor_invalid_then_resync_lists_everything(rig: GmailRig, provider: GmailProvider) -> None:
    ids = [rig.deliver(make_message()) for _ in range(3)]
    inbox = folders(provider)["INBOX"]
    cursor = provider.fetch_changes(inbox, None).cursor
    rig.deliver(make_message())
    rig.standin.mailbox(ADDRESS).expire_history()
    provider.list_folders()
    with pytest.raises(CursorInvalidError, match="no longer available"):
        provider.fetch_changes(inbox, cursor)
    again = provider.fetch_changes(inbox, None)
    assert again.new[:3] == tuple(ids) and len(again.new) == 4  # oldest first
    assert provider.fetch_changes(inbox, again.cursor).empty


def test_no_change_pass_over_all_folders_costs_one_history_call(rig: GmailRig) -> None:
    box = rig.standin.mailbox(ADDRESS)
    box.add_label("Candidates")
    for role in (FolderRole.INBOX, FolderRole.SENT, FolderRole.TRASH):
        rig.deliver(make_message(), role)
    with rig.provider() as first:
        cursors = initial_pass(first)
    assert len(cursors) == 7  # five system labels, the user label, ALL
    for _ in range(2):  # a fresh provider per pass, as the engine opens one
        with rig.provider() as provider:
            rig.standin.reset_calls()
            found = folders(provider)
            changes = {name: provider.fetch_changes(found[name], cursor) for name, cursor in cursors.items()}
            assert all(c.empty for c in changes.values()), changes
            assert [c.method for c in rig.standin.api_calls()] == ["users.labels.list", "users.history.list"]
            cursors = {name: c.cursor for name, c in changes.items()}
    assert "ALL" in cursors and rig.standin.quota_units() == 1 + 2


def test_one_history_window_serves_every_folder_correctly(rig: GmailRig, provider: GmailProvider) -> None:
    box = rig.standin.mailbox(ADDRESS)
    starred = rig.deliver(make_message(subject="star me"))
    sent = rig.deliver(make_message(subject="sent"), FolderRole.SENT)
    cursors = initial_pass(provider)
    fresh = rig.deliver(make_message(subject="new"))
    box.set_flags(starred, {"\\Seen", "\\Flagged"})
    box.trash(sent)
    found = folders(provider)
    rig.standin.reset_calls()
    inbox, sent_box, trash = (provider.fetch_changes(found[n], cursors[n]) for n in ("INBOX", "SENT", "TRASH"))
    assert len(rig.standin.api_calls()) == 1
    assert inbox.new == (fresh,) and not inbox.removed
    assert {u.remote_id: u.flags for u in inbox.changed}[starred] == {"\\Seen", "\\Flagged"}
    assert sent_box.removed == (sent,) and not sent_box.new
    assert trash.new == (sent,)
    # asking about a folder again is a new pass: fresh history, nothing new since
    assert provider.fetch_changes(found["INBOX"], inbox.cursor).empty
    assert len(rig.standin.api_calls()) == 2


def archive(rig: GmailRig, message_id: str) -> None:
    """What Gmail's Archive button does: the message loses INBOX and keeps its other labels."""
    rig.standin.mailbox(ADDRESS).modify(message_id, remove=["INBOX"])


def test_archived_mail_is_listed_by_the_initial_sync_of_all_mail(rig: GmailRig, provider: GmailProvider) -> None:
    box = rig.standin.mailbox(ADDRESS)
    kept, archived = rig.deliver(make_message(subject="kept")), rig.deliver(make_message(subject="archived"))
    sent = rig.deliver(make_message(subject="sent"), FolderRole.SENT)
    trashed, spam = rig.deliver(make_message()), rig.deliver(make_message())
    archive(rig, archived)
    box.trash(trashed)
    box.modify(spam, add=["SPAM"], remove=["INBOX"])
    found = folders(provider)
    assert provider.fetch_changes(found["INBOX"], None).new == (kept,)
    everything = provider.fetch_changes(found["ALL"], None)
    assert everything.new == (kept, archived, sent)  # oldest first; TRASH and SPAM left out
    assert everything.present == {kept, archived, sent}


def test_archiving_removes_from_inbox_but_not_from_all_mail(rig: GmailRig, provider: GmailProvider) -> None:
    box = rig.standin.mailbox(ADDRESS)
    reply, other = rig.deliver(make_message(subject="Re: Application")), rig.deliver(make_message())
    cursors = initial_pass(provider)
    archive(rig, reply)
    box.set_flags(other, {"\\Seen"})
    found = folders(provider)
    inbox = provider.fetch_changes(found["INBOX"], cursors["INBOX"])
    everything = provider.fetch_changes(found["ALL"], cursors["ALL"])
    assert inbox.removed == (reply,) and not inbox.new
    assert not everything.new and not everything.removed  # still in All Mail: nothing to re-fetch
    assert [(u.remote_id, u.flags) for u in everything.changed] == [(other, {"\\Seen"})]


def test_trash_spam_and_delete_leave_all_mail_untrash_returns(rig: GmailRig, provider: GmailProvider) -> None:
    box = rig.standin.mailbox(ADDRESS)
    trashed, spam, deleted = (rig.deliver(make_message()) for _ in range(3))
    archived = rig.deliver(make_message())
    archive(rig, archived)
    cursors = initial_pass(provider)
    box.trash(trashed)
    box.modify(spam, add=["SPAM"])
    box.delete(deleted)
    box.trash(archived)
    fresh = rig.deliver(make_message())
    found = folders(provider)
    everything = provider.fetch_changes(found["ALL"], cursors["ALL"])
    assert everything.new == (fresh,)
    assert set(everything.removed) == {trashed, spam, deleted, archived}
    assert set(provider.fetch_changes(found["TRASH"], cursors["TRASH"]).new) == {trashed, archived}
    box.untrash(archived)  # back to All Mail (not to the inbox it had already left)
    found = folders(provider)
    again = provider.fetch_changes(found["ALL"], everything.cursor)
    assert again.new == (archived,) and not again.removed


def test_a_message_in_inbox_and_all_mail_is_fetched_once_per_pass(rig: GmailRig, provider: GmailProvider) -> None:
    box = rig.standin.mailbox(ADDRESS)
    inbox_ids = [rig.deliver(make_message(subject=f"inbox {i}")) for i in range(10)]
    archived = rig.deliver(make_message(subject="archived"))
    archive(rig, archived)
    found = folders(provider)
    rig.standin.reset_calls()
    inbox = list(provider.fetch_headers(found["INBOX"], provider.fetch_changes(found["INBOX"], None).new))
    everything = list(provider.fetch_headers(found["ALL"], provider.fetch_changes(found["ALL"], None).new))
    assert [m.remote_id for m in everything] == [*inbox_ids, archived]
    assert everything[:10] == inbox  # the same headers, labels and flags
    assert len(rig.standin.api_calls("users.messages.get")) == 11  # not 21
    # the next pass (list_folders) fetches afresh: a message read meanwhile shows as read
    waiting = rig.deliver(make_message(subject="later"))
    found = folders(provider)
    (first,) = provider.fetch_headers(found["INBOX"], [waiting])
    box.set_flags(waiting, {"\\Seen"})
    found = folders(provider)
    (second,) = provider.fetch_headers(found["ALL"], [waiting])
    assert "\\Seen" not in first.flags and "\\Seen" in second.flags
    assert len(rig.standin.api_calls("users.messages.get")) == 11 + 2


def test_rate_limit_honours_retry_after_then_succeeds(rig: GmailRig, provider: GmailProvider) -> None:
    rig.standin.fail("users.labels.list", status=429, retry_after=7)
    rig.standin.fail("users.labels.list", status=403, reason="userRateLimitExceeded")
    assert "INBOX" in folders(provider)
    assert rig.sleeps == [7.0, 2.0]  # the server's 7 s, then our own 1 s * 2**1


def test_retry_after_beyond_budget_is_transient_at_once(rig: GmailRig) -> None:
    rig.standin.fail("users.labels.list", status=429, retry_after=120)
    with rig.provider(retry_budget=30) as provider, pytest.raises(TransientError) as info:
        provider.list_folders()
    assert info.value.retry_after == 120 and rig.sleeps == []


def test_server_errors_back_off_exponentially_then_give_up(rig: GmailRig) -> None:
    rig.standin.fail("users.labels.list", status=503, times=10)
    with rig.provider(max_retries=3) as provider, pytest.raises(TransientError, match="503"):
        provider.list_folders()
    assert rig.sleeps == [1.0, 2.0, 4.0]
    assert len(rig.standin.api_calls("users.labels.list")) == 4


def test_batch_retries_only_the_failed_parts(rig: GmailRig, provider: GmailProvider) -> None:
    ids = [rig.deliver(make_message(subject=f"batch {i}")) for i in range(5)]
    inbox = folders(provider)["INBOX"]
    rig.standin.fail("users.messages.get", status=429, times=2, retry_after=3)
    rig.standin.reset_calls()
    headers = list(provider.fetch_headers(inbox, [*ids, "deadbeef00000000"]))
    assert [m.remote_id for m in headers] == ids
    assert [b"Subject: batch %d" % i in m.headers for i, m in enumerate(headers)] == [True] * 5
    gets = rig.standin.api_calls("users.messages.get")
    assert [c.status for c in gets] == [429, 429, 200, 200, 200, 404, 200, 200] and all(c.in_batch for c in gets)
    assert rig.sleeps == [3.0]


@pytest.mark.parametrize("alone", [False, True])
def test_a_message_gmail_cannot_read_fails_alone_naming_it(rig: GmailRig, alone: bool) -> None:
    ids = [rig.deliver(make_message(subject=f"part {i}")) for i in range(3)]
    rig.standin.break_message(ids[1], 500)
    with rig.provider(max_retries=2) as provider:
        inbox = folders(provider)["INBOX"]  # Gmail answered this call: a batch of one is not the server's fault
        with pytest.raises(ProtocolError, match=r"\(every retry\)") as info:
            list(provider.fetch_headers(inbox, [ids[1]] if alone else ids))
        assert info.value.remote_id == ids[1]
        assert rig.sleeps == [1.0, 2.0]


def test_a_first_call_that_keeps_failing_is_the_server_s_trouble(rig: GmailRig) -> None:
    broken = rig.deliver(make_message())
    rig.standin.break_message(broken, 500)
    with rig.provider(max_retries=1) as provider, pytest.raises(TransientError, match=r"\(1 of 1 calls\)"):
        list(provider.fetch_headers(RemoteFolder("INBOX"), [broken]))  # nothing was answered yet


def test_batches_hold_at_most_fifty_calls(rig: GmailRig, provider: GmailProvider) -> None:
    ids = [rig.deliver(make_message()) for _ in range(120)]
    inbox = folders(provider)["INBOX"]
    rig.standin.reset_calls()
    assert len(list(provider.fetch_headers(inbox, ids))) == 120
    assert len(provider.fetch_bodies(inbox, ids[:45])) == 45
    assert [c.method for c in rig.standin.calls].count("batch") == 3 + 3  # 50+50+20 headers, 20+20+5 bodies


def test_reply_lands_in_the_same_thread(rig: GmailRig, provider: GmailProvider) -> None:
    first_mid = new_message_id()
    first = make_message(message_id=first_mid, from_=ADDRESS, to="ann@example.org", subject="Your application")
    sent = provider.send(OutgoingMessage(first, ADDRESS, ("ann@example.org",), first_mid))
    assert sent.sent_copy_stored and sent.provider_id
    inbox_id = rig.deliver(make_message(subject="Re: Your application", in_reply_to=first_mid, references=[first_mid]))
    reply_mid = new_message_id()
    reply = make_message(
        message_id=reply_mid,
        from_=ADDRESS,
        subject="Re: Your application",
        in_reply_to=first_mid,
        references=[first_mid],
    )
    answer = provider.send(
        OutgoingMessage(reply, ADDRESS, ("ann@example.org",), reply_mid, thread_hint=sent.provider_id)
    )
    assert answer.provider_id is not None
    sent_box = folders(provider)["SENT"]
    threads = {
        m.remote_id: m.thread_hint for m in provider.fetch_headers(sent_box, [sent.provider_id, answer.provider_id])
    }
    assert threads == {sent.provider_id: sent.provider_id, answer.provider_id: sent.provider_id}
    (incoming,) = provider.fetch_headers(folders(provider)["INBOX"], [inbox_id])
    assert incoming.thread_hint == sent.provider_id and incoming.labels == {"INBOX", "UNREAD"}


def test_send_refused_is_send_error(provider: GmailProvider) -> None:
    raw = make_message(to="", from_=ADDRESS)
    with pytest.raises(SendError):
        provider.send(OutgoingMessage(raw, ADDRESS, (), "<x@y>"))


def test_sent_copy_trash_and_delete_primitives(rig: GmailRig, provider: GmailProvider) -> None:
    box = rig.standin.mailbox(ADDRESS)
    copy_id = provider.store_sent_copy(make_message(from_=ADDRESS), frozenset({"\\Flagged"}))
    assert copy_id is not None and box.get(copy_id).labels == {"SENT", "UNREAD", "STARRED"}
    a, b = rig.deliver(make_message()), rig.deliver(make_message())
    inbox = folders(provider)["INBOX"]
    provider.delete(inbox, [a, "deadbeef00000000"])
    assert box.get(a).labels == {"TRASH", "UNREAD"}
    provider.delete(inbox, [a, b], for_good=True)
    assert box.messages.keys() == {copy_id}
    label = box.add_label("Hired")
    c = rig.deliver(make_message())
    provider.move(folders(provider)["INBOX"], [c], folders(provider)[label])
    assert box.get(c).labels == {label, "UNREAD"}


def test_token_refresh_is_reported_and_tokens_reused(rig: GmailRig) -> None:
    with rig.provider() as provider:
        provider.list_folders()
        ((token, expiry),) = rig.refreshes
        assert expiry is not None and expiry.tzinfo is not None
        assert timedelta(minutes=55) < expiry - datetime.now(UTC) <= timedelta(hours=1)
        rig.standin.expire_access_tokens()  # revoked server-side mid-session: 401, refresh, retry
        provider.list_folders()
        assert len(rig.refreshes) == 2 and rig.refreshes[1][0] != token
    stored = Credentials(
        ADDRESS, access_token=rig.refreshes[1][0], refresh_token=rig.refresh_token, token_expiry=rig.refreshes[1][1]
    )
    settings = rig.settings()
    with GmailProvider.open(
        ProviderSettings(ADDRESS, stored, settings.options, on_token_refresh=settings.on_token_refresh)
    ) as again:
        again.list_folders()
    assert len(rig.refreshes) == 2  # the persisted token was used as it is


def test_revoked_grant_mid_session_is_auth_error(rig: GmailRig) -> None:
    token = rig.standin.grant(ADDRESS)
    with rig.provider(token) as provider:
        inbox = folders(provider)["INBOX"]
        rig.standin.revoke(token)
        with pytest.raises(AuthError, match="invalid_grant"):
            provider.fetch_changes(inbox, None)


@pytest.mark.parametrize(
    ("options", "creds", "message"),
    [
        ({"client_id": "x", "client_secret": "y"}, Credentials(ADDRESS), "needs a refresh token"),
        ({}, Credentials(ADDRESS, refresh_token="1//x"), "need client_id and client_secret"),
    ],
)
def test_misconfiguration_is_one_sentence(options: dict[str, str], creds: Credentials, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GmailProvider.open(ProviderSettings(ADDRESS, creds, options))


def test_credentials_repr_hides_tokens() -> None:
    creds = Credentials(ADDRESS, access_token="ya29.secret", refresh_token="1//secret")
    assert "secret" not in repr(creds)


def test_send_without_copy_to_the_senders_own_address_keeps_that_one_message(
    rig: GmailRig, provider: GmailProvider
) -> None:
    """Gmail files a message to oneself once, in INBOX and SENT: trashing the Sent copy would
    take the delivered one with it, so it stays and the result says a copy is left."""
    mid = new_message_id()
    raw = make_message(message_id=mid, from_=ADDRESS, to=ADDRESS)
    result = provider.send_without_copy(OutgoingMessage(raw, ADDRESS, (ADDRESS,), mid))
    assert result.sent_copy_stored and result.provider_id is not None
    assert {"INBOX", "SENT"} <= rig.standin.mailbox(ADDRESS).get(result.provider_id).labels
    assert rig.raw_messages(FolderRole.TRASH) == []


def test_send_without_copy_whose_trash_fails_is_sent_once_and_says_the_copy_stays(
    rig: GmailRig, provider: GmailProvider
) -> None:
    peer = rig.standin.add_user("ann@gmail-peer.test")
    rig.standin.fail("users.messages.trash", status=400, reason="failedPrecondition")
    mid = new_message_id()
    raw = make_message(message_id=mid, from_=ADDRESS, to=peer.email)
    result = provider.send_without_copy(OutgoingMessage(raw, ADDRESS, (peer.email,), mid))
    assert result.sent_copy_stored  # not raised: the message went out and must not be resent
    assert [mid.encode() in m.raw for m in peer.by_label("INBOX")] == [True]
    assert [mid.encode() in m for m in rig.raw_messages(FolderRole.SENT)] == [True]
