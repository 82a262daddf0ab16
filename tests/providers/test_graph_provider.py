"""What the Graph backend does beyond the shared contract: delta, request counts, throttling, tokens, sending."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from providers.base import Credentials, FolderRole, OutgoingMessage, ProviderSettings, RemoteFolder
from providers.errors import AuthError, ConfigurationError, CursorInvalidError, ProtocolError, TransientError
from providers.graph import GraphProvider
from providers.registry import backend_class
from tests.rig.messages import make_message, new_message_id
from tests.standins.graph_rig import ADDRESS, GraphRig, graph_rig


@pytest.fixture
def rig() -> Iterator[GraphRig]:
    with graph_rig() as rig:
        yield rig


@pytest.fixture
def provider(rig: GraphRig) -> Iterator[GraphProvider]:
    with rig.provider() as provider:
        yield provider


def roles(provider: GraphProvider) -> dict[FolderRole | None, RemoteFolder]:
    return {f.role: f for f in provider.list_folders()}


def test_registered_and_folders_by_id_with_roles(rig: GraphRig, provider: GraphProvider) -> None:
    assert backend_class("graph") is GraphProvider
    box = rig.graph.mailbox(ADDRESS)
    hiring = box.add_folder("Hiring")
    nested = box.add_folder("2026", parent=hiring)
    found = {f.name: f.role for f in provider.list_folders()}
    assert found[box.folder("inbox").id] == FolderRole.INBOX
    assert found[box.folder("sentitems").id] == FolderRole.SENT
    assert found[box.folder("deleteditems").id] == FolderRole.TRASH
    assert found[box.folder("junkemail").id] == FolderRole.JUNK
    assert found[hiring] is None and found[nested] is None
    assert box.folder("outbox").id not in found  # mail in flight is not a folder to sync


def test_expired_delta_token_is_cursor_invalid_then_resync_lists_everything(
    rig: GraphRig, provider: GraphProvider
) -> None:
    ids = [rig.deliver(make_message()) for _ in range(3)]
    inbox = roles(provider)[FolderRole.INBOX]
    cursor = provider.fetch_changes(inbox, None).cursor
    rig.graph.mailbox(ADDRESS).expire_sync_state()
    with pytest.raises(CursorInvalidError, match="410 SyncStateNotFound"):
        provider.fetch_changes(inbox, cursor)
    again = provider.fetch_changes(inbox, None)
    assert again.new == tuple(ids) and again.present == set(ids)
    assert provider.fetch_changes(inbox, again.cursor).empty


def test_initial_sync_follows_next_links_and_no_change_pass_is_one_request_per_folder(rig: GraphRig) -> None:
    for i in range(25):
        rig.deliver(make_message(subject=f"page {i}"))
    rig.deliver(make_message(), FolderRole.SENT)
    with rig.provider(page_size=10) as first:
        folders = first.list_folders()
        rig.graph.reset_calls()
        initial = {f.name: first.fetch_changes(f, None) for f in folders}
        inbox = roles(first)[FolderRole.INBOX]
    assert len(initial[inbox.name].new) == 25
    assert (
        len([c for c in rig.graph.http_requests() if c.route == "delta"]) == 3 + len(folders) - 1
    )  # 10+10+5, one each other
    with rig.provider(page_size=10) as provider:
        provider.list_folders()
        rig.graph.reset_calls()
        tokens_before = len(rig.identity.token_calls)
        again = {f.name: provider.fetch_changes(f, initial[f.name].cursor) for f in folders}
        assert all(c.empty for c in again.values()), again
        assert [c.route for c in rig.graph.http_requests()] == ["delta"] * len(folders)
        assert len(rig.identity.token_calls) == tokens_before  # the pass reused the token list_folders got


def test_incremental_round_reports_new_changed_and_removed(rig: GraphRig, provider: GraphProvider) -> None:
    box = rig.graph.mailbox(ADDRESS)
    keep, gone = rig.deliver(make_message()), rig.deliver(make_message())
    inbox = roles(provider)[FolderRole.INBOX]
    cursor = provider.fetch_changes(inbox, None).cursor
    fresh = rig.deliver(make_message(subject="fresh"))
    box.set_flags(keep, {"\\Seen", "\\Flagged"})
    box.delete(gone)
    changes = provider.fetch_changes(inbox, cursor)
    assert changes.removed == (gone,)
    assert set(changes.new) == {keep, fresh}  # Graph cannot tell new from changed; the engine skips known ids
    assert {u.remote_id: u.flags for u in changes.changed}[keep] == {"\\Seen", "\\Flagged"}


def test_throttling_honours_retry_after_then_succeeds(rig: GraphRig, provider: GraphProvider) -> None:
    inbox = roles(provider)[FolderRole.INBOX]
    rig.deliver(make_message())
    rig.graph.fail("delta", status=429, retry_after=7)
    rig.graph.fail("delta", status=503)
    assert len(provider.fetch_changes(inbox, None).new) == 1
    assert rig.sleeps == [7.0, 2.0]  # the server's 7 s, then our own 1 s * 2**1
    assert [c.status for c in rig.graph.api_calls("delta")] == [429, 503, 200]


def test_retry_after_beyond_the_cap_is_transient_at_once(rig: GraphRig) -> None:
    rig.graph.fail("batch", status=429, retry_after=120)
    with rig.provider(retry_cap=30) as provider, pytest.raises(TransientError) as info:
        provider.list_folders()
    assert info.value.retry_after == 120 and rig.sleeps == []


def test_throttled_batch_parts_are_retried_alone(rig: GraphRig, provider: GraphProvider) -> None:
    ids = [rig.deliver(make_message(subject=f"batch {i}")) for i in range(25)]
    inbox = roles(provider)[FolderRole.INBOX]
    rig.graph.fail("messages.get", status=429, times=2, retry_after=3)
    rig.graph.reset_calls()
    headers = list(provider.fetch_headers(inbox, [*ids, "AAMkAGI2gone"]))
    assert [m.remote_id for m in headers] == ids
    assert [c.route for c in rig.graph.http_requests()] == ["batch"] * 3  # 20 (2 throttled), their retry, 6
    assert rig.sleeps == [3.0]


@pytest.mark.parametrize(("status", "tries"), [(500, 5), (400, 1)])
def test_a_message_graph_cannot_read_fails_alone_naming_it(rig: GraphRig, status: int, tries: int) -> None:
    ids = [rig.deliver(make_message(subject=f"part {i}")) for i in range(4)]
    rig.graph.break_message(ids[2], status)
    with rig.provider(max_retries=4) as provider:
        inbox = roles(provider)[FolderRole.INBOX]
        with pytest.raises(ProtocolError, match=f"messages.get {ids[2]} answered {status}") as info:
            list(provider.fetch_headers(inbox, ids))
        assert info.value.remote_id == ids[2]  # the engine quarantines this one message, not the folder
        assert [c.status for c in rig.graph.api_calls("messages.get") if c.status >= 400] == [status] * tries
        rig.graph.mend_message(ids[2])
        assert [m.remote_id for m in provider.fetch_headers(inbox, ids)] == ids


def test_a_message_that_fails_while_graph_throttles_is_transient(rig: GraphRig) -> None:
    ids = [rig.deliver(make_message(subject=f"part {i}")) for i in range(3)]
    rig.graph.break_message(ids[0], 500)
    rig.graph.fail("messages.get", status=429, times=1, retry_after=1)  # another part throttled once
    with rig.provider(max_retries=2) as provider, pytest.raises(TransientError, match=r"\(1 of 3 calls\)"):
        list(provider.fetch_headers(roles(provider)[FolderRole.INBOX], ids))


def test_headers_are_rebuilt_for_sent_items_without_transport_headers(rig: GraphRig, provider: GraphProvider) -> None:
    parent, mid = new_message_id(), new_message_id()
    raw = make_message(
        message_id=mid,
        from_=f"Rita Recruiter <{ADDRESS}>",
        to="Zoë Applicant <zoe@example.org>",
        cc="hr@contoso.test",
        reply_to="jobs+42@contoso.test",
        subject="Entretien: prochaine étape",
        in_reply_to=parent,
        references=[parent],
    )
    provider.send(OutgoingMessage(raw, ADDRESS, ("zoe@example.org", "hr@contoso.test"), mid))
    sent = roles(provider)[FolderRole.SENT]
    (copy,) = provider.fetch_headers(sent, provider.fetch_changes(sent, None).new)
    for expected in (f"Message-ID: {mid}", f"In-Reply-To: {parent}", f"References: {parent}", "Cc: hr@contoso.test"):
        assert expected.encode() in copy.headers
    assert b"Reply-To: jobs+42@contoso.test" in copy.headers and b"Date: " in copy.headers
    assert b"=?utf-8?" in copy.headers  # the subject and Zoë's name travel RFC 2047-encoded
    assert copy.flags == {"\\Seen"} and copy.size is not None and copy.size >= len(raw) - raw.count(b"\n")


def test_replies_share_the_conversation_id_as_thread_hint(rig: GraphRig, provider: GraphProvider) -> None:
    first_mid = new_message_id()
    first = make_message(message_id=first_mid, from_=ADDRESS, to="ann@example.org", subject="Your application")
    provider.send(OutgoingMessage(first, ADDRESS, ("ann@example.org",), first_mid))
    reply = rig.deliver(make_message(subject="Re: Your application", in_reply_to=first_mid, references=[first_mid]))
    other = rig.deliver(make_message(subject="Unrelated"))
    folders = roles(provider)
    sent_id = provider.fetch_changes(folders[FolderRole.SENT], None).new[0]
    (sent,) = provider.fetch_headers(folders[FolderRole.SENT], [sent_id])
    incoming = {m.remote_id: m.thread_hint for m in provider.fetch_headers(folders[FolderRole.INBOX], [reply, other])}
    assert sent.thread_hint and incoming[reply] == sent.thread_hint != incoming[other]


def test_send_without_copy_then_one_canonical_sent_copy(rig: GraphRig, provider: GraphProvider) -> None:
    box = rig.graph.mailbox(ADDRESS)
    mid = new_message_id()
    tracked = make_message(message_id=mid, from_=ADDRESS, to="ann@example.org", subject="Offer", html="<p>pixel</p>")
    result = provider.send_without_copy(OutgoingMessage(tracked, ADDRESS, ("ann@example.org",), mid))
    assert not result.sent_copy_stored
    ((_, recipients, delivered),) = rig.graph.outbound
    assert recipients == ["ann@example.org"] and f"Message-ID: {mid}".encode() in delivered
    assert rig.raw_messages(FolderRole.SENT) == [] and box.in_folder(box.folder("drafts").id) == []
    clean = make_message(message_id=mid, from_=ADDRESS, to="ann@example.org", subject="Offer", body="Dear Ann")
    copy_id = provider.store_sent_copy(clean, frozenset({"\\Seen", "\\Flagged"}))
    (copy,) = box.in_folder(box.folder("sentitems").id)
    assert copy.id == copy_id and not copy.is_draft and copy.is_read and copy.flag == "flagged"
    assert f"Message-ID: {mid}".encode() in copy.raw and b"Dear Ann" in copy.raw


def test_refresh_token_rotation_is_persisted_and_used(rig: GraphRig) -> None:
    with rig.provider() as provider:
        provider.list_folders()
    ((access, expiry),) = rig.refreshes
    (rotated,) = rig.rotations
    assert rotated != rig.refresh_token and expiry is not None and expiry.tzinfo is not None
    stored = Credentials(ADDRESS, access_token=access, refresh_token=rotated, token_expiry=expiry)
    settings = dataclasses.replace(rig.settings(), credentials=stored)
    with GraphProvider.open(settings) as again:
        again.list_folders()
        assert len(rig.identity.token_calls) == 1  # the stored access token was used as it is
        rig.identity.expire_access_tokens()  # Graph now answers 401: refresh once with the rotated token, retry
        again.list_folders()
    assert rig.identity.token_calls[-1].refresh_token == rotated and rig.identity.token_calls[-1].status == 200
    assert len(rig.rotations) == 2


@pytest.mark.parametrize(("spoil", "code"), [("revoke", "AADSTS50173"), ("expire_grant", "AADSTS700082")])
def test_revoked_or_expired_grant_is_auth_error(rig: GraphRig, spoil: str, code: str) -> None:
    token = rig.identity.grant(ADDRESS)
    with rig.provider(token) as provider:
        inbox = roles(provider)[FolderRole.INBOX]
        getattr(rig.identity, spoil)(token)
        rig.identity.expire_access_tokens()
        with pytest.raises(AuthError, match=f"invalid_grant: {code}"):
            provider.fetch_changes(inbox, None)


def test_wrong_client_secret_is_auth_error(rig: GraphRig) -> None:
    with rig.provider(client_secret="wrong") as provider, pytest.raises(AuthError, match="invalid_client"):
        provider.list_folders()


@pytest.mark.parametrize(
    ("options", "creds", "message"),
    [
        ({"client_id": "x", "client_secret": "y"}, Credentials(ADDRESS), "needs a refresh token"),
        ({}, Credentials(ADDRESS, refresh_token="1.AQx"), "need client_id and client_secret"),
        (
            {"client_id": "x", "client_secret": "y", "graph_root": "http://graph.test/v1.0"},
            Credentials(ADDRESS, refresh_token="1.AQx"),
            "graph_root must be an https URL",
        ),
    ],
)
def test_misconfiguration_is_one_sentence(options: dict[str, str], creds: Credentials, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GraphProvider.open(ProviderSettings(ADDRESS, creds, options))
