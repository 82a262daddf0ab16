"""A Microsoft 365 account synced by the real engine against the Graph and identity stand-ins (requests
and msal over HTTPS), on SQLite and on PostgreSQL: threads and applicant history as for IMAP,
incremental passes, recovery from an expired delta token, refresh tokens rotated and persisted, a
revoked grant, and sending through the outbox."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import Email, MailAccount, OutboxMessage
from providers.base import FolderRole
from sync.accounts import add_graph_account, provider_settings
from sync.history import add_applicant, applicant_history
from sync.outbox import SendRequest, send_message
from sync.scheduler import Scheduler, sync_all
from sync.threads import account_threads
from tests.rig.fixtures import Mailbox, make_message
from tests.standins.graph_rig import ADDRESS, GraphRig, graph_rig
from tests.sync.helpers import connect, copies, count, history_ids, sync_ok
from tests.web.microsoft_rig import microsoft_config

JANE = "jane.doe@contoso.test"


def _at(days: int) -> datetime:
    return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=days)


@pytest.fixture
def rig() -> Iterator[GraphRig]:
    with graph_rig() as rig:
        yield rig


@pytest.fixture
def mconfig(config: Config, rig: GraphRig) -> Config:
    """The test config with [microsoft] pointing at the stand-ins."""
    return dataclasses.replace(config, microsoft=microsoft_config(rig))


@pytest.fixture
def account_id(mconfig: Config, sessions, rig: GraphRig) -> int:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        return add_graph_account(s, mconfig, ADDRESS, rig.refresh_token).id


def _secret(config: Config, sessions, account_id: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id))
    return SecretBox(config.security.secret_key).open(sealed)


def test_threads_and_applicant_history_across_inbox_and_sent(
    mconfig: Config, sessions, rig: GraphRig, account_id: int
) -> None:
    rig.deliver(make_message(message_id="<apply@x.test>", subject="Application", from_=f"Jane <{JANE}>", date=_at(0)))
    rig.deliver(
        make_message(
            message_id="<answer@x.test>",
            subject="Re: Application",
            from_=ADDRESS,
            to=JANE,
            in_reply_to="<apply@x.test>",
            references=["<apply@x.test>"],
            date=_at(1),
        ),
        FolderRole.SENT,
    )
    rig.deliver(make_message(message_id="<lunch@x.test>", subject="Lunch?", from_="colleague@corp.test", date=_at(1)))
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane Doe", ["Jane.Doe+jobs@contoso.test"])  # case and +tag ignored

    result = sync_ok(mconfig, sessions, account_id)
    assert result.new == 3
    with sessions() as s:
        threads = sorted(t["message_ids"] for t in account_threads(s, account_id))  # type: ignore[type-var]
        history = applicant_history(s, applicant.id)
    assert threads == [["<apply@x.test>", "<answer@x.test>"], ["<lunch@x.test>"]]
    assert [(h.message_id, h.direction) for h in history] == [
        ("<apply@x.test>", "inbound"),
        ("<answer@x.test>", "outbound"),
    ]
    assert copies(sessions, account_id, "sent") == ["<answer@x.test>"]


def test_incremental_pass_costs_one_delta_request_per_folder_and_picks_up_new_mail(
    mconfig: Config, sessions, rig: GraphRig, account_id: int
) -> None:
    rig.deliver(make_message(message_id="<m0@x.test>"))
    first = sync_ok(mconfig, sessions, account_id)

    rig.graph.reset_calls()
    idle = sync_ok(mconfig, sessions, account_id)
    assert idle.new == 0
    deltas = [c.route for c in rig.graph.http_requests() if c.route != "batch"]  # the folder list is one batch
    assert deltas == ["delta"] * len(first.folders)

    rig.deliver(make_message(message_id="<m1@x.test>"))
    later = sync_ok(mconfig, sessions, account_id)
    assert later.new == 1
    assert copies(sessions, account_id) == ["<m0@x.test>", "<m1@x.test>"]


def test_expired_delta_token_resyncs_the_folder_without_duplicates(
    mconfig: Config, sessions, rig: GraphRig, account_id: int
) -> None:
    for i in range(3):
        rig.deliver(make_message(message_id=f"<e{i}@x.test>", from_=JANE))
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane", [JANE])
    sync_ok(mconfig, sessions, account_id)
    rig.deliver(make_message(message_id="<e3@x.test>", from_=JANE))
    rig.graph.mailbox(ADDRESS).expire_sync_state()  # Graph answers 410 SyncStateNotFound

    result = sync_ok(mconfig, sessions, account_id)
    inbox = rig.graph.mailbox(ADDRESS).folder("inbox").id
    assert [f.resynced for f in result.folders if f.name == inbox] == [True]
    assert copies(sessions, account_id) == [f"<e{i}@x.test>" for i in range(4)]
    assert count(sessions, Email) == 4
    assert history_ids(sessions, applicant.id) == [f"<e{i}@x.test>" for i in range(4)]


def test_rotated_refresh_token_is_stored_sealed_and_used_on_the_next_pass(
    mconfig: Config, sessions, rig: GraphRig, account_id: int
) -> None:
    assert "access_token" not in _secret(mconfig, sessions, account_id)
    sync_ok(mconfig, sessions, account_id)
    first = _secret(mconfig, sessions, account_id)
    assert first["refresh_token"] != rig.refresh_token  # Microsoft issued a new one, and it was kept
    assert rig.identity.user_for(first["access_token"])[0] == ADDRESS
    assert datetime.fromisoformat(first["token_expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    with sessions() as s:
        sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id))
    for token in (first["refresh_token"], first["access_token"], rig.refresh_token):
        assert token.encode() not in sealed

    calls = len(rig.identity.token_calls)
    sync_ok(mconfig, sessions, account_id)  # the stored access token is still good: no refresh
    assert len(rig.identity.token_calls) == calls

    rig.identity.expire_access_tokens()
    sync_ok(mconfig, sessions, account_id)
    (refresh,) = rig.identity.token_calls[calls:]
    assert (refresh.grant_type, refresh.refresh_token, refresh.status) == ("refresh_token", first["refresh_token"], 200)
    second = _secret(mconfig, sessions, account_id)
    assert second["refresh_token"] not in (first["refresh_token"], rig.refresh_token)
    assert second["access_token"] != first["access_token"]


def test_revoked_grant_needs_reconnect_while_an_imap_account_keeps_syncing(
    mconfig: Config, sessions, rig: GraphRig, account_id: int, mailbox: Mailbox
) -> None:
    imap_id = connect(mconfig, sessions, mailbox)
    mailbox.append(make_message(message_id="<imap1@x.test>"))
    sync_all(mconfig, sessions)
    rig.identity.revoke(rig.refresh_token)  # consent removed in My Apps, or an admin revoked sessions
    rig.identity.expire_access_tokens()
    mailbox.append(make_message(message_id="<imap2@x.test>"))

    results = {r.account_id: r for r in sync_all(mconfig, sessions)}
    assert results[imap_id].ok and results[imap_id].new == 1
    assert not results[account_id].ok and "AADSTS50173" in (results[account_id].error or "")
    with sessions() as s:
        graph = s.get_one(MailAccount, account_id)
        assert (graph.status, graph.last_error_class) == ("reconnect-needed", "AuthError")
        assert s.get_one(MailAccount, imap_id).status == "active"
    # the worker does not come back to it (no retry storm) until it is reconnected
    due = Scheduler(mconfig, sessions).due(datetime.now(UTC) + timedelta(days=1), 10)
    assert account_id not in due and imap_id in due


def test_reply_sent_through_the_outbox_reaches_the_applicant_once_in_sent(
    mconfig: Config, sessions, rig: GraphRig, account_id: int
) -> None:
    jane = rig.graph.add_user(JANE)
    rig.deliver(make_message(message_id="<ask@x.test>", subject="Question", from_=JANE, to=ADDRESS))
    sync_ok(mconfig, sessions, account_id)

    row = send_message(
        mconfig,
        sessions,
        SendRequest(account_id, [JANE], "Re: Question", "Happy to help.", in_reply_to="<ask@x.test>"),
    )
    assert row.status == "sent" and row.error is None
    (received,) = jane.in_folder(jane.folder("inbox").id)
    headers = received.headers()
    assert headers["Message-ID"] == row.message_id
    assert headers["In-Reply-To"] == "<ask@x.test>" and headers["References"] == "<ask@x.test>"
    box = rig.graph.mailbox(ADDRESS)
    sent = [i for i in box.in_folder(box.folder("sentitems").id) if i.headers()["Message-ID"] == row.message_id]
    assert len(sent) == 1  # Graph's own copy, not a second one stored by Postroom

    sync_ok(mconfig, sessions, account_id)
    assert copies(sessions, account_id, "sent") == [row.message_id]
    with sessions() as s:
        (thread,) = account_threads(s, account_id)
        assert s.scalar(select(OutboxMessage.status).where(OutboxMessage.id == row.id)) == "sent"
    assert thread["message_ids"] == ["<ask@x.test>", row.message_id]


def test_tokens_from_a_pass_that_began_before_a_reconnect_do_not_undo_it(
    mconfig: Config, sessions, rig: GraphRig, account_id: int
) -> None:
    with sessions() as s:
        settings = provider_settings(s.get_one(MailAccount, account_id), mconfig, sessions)  # a pass begins
    fresh = rig.identity.grant(ADDRESS)
    with sessions.begin() as s:  # meanwhile the recruiter connects again
        add_graph_account(s, mconfig, ADDRESS, fresh, reconnect=True)
    assert settings.on_refresh_token_rotated is not None and settings.on_token_refresh is not None
    settings.on_refresh_token_rotated("1.AQ-rotated-from-the-old-grant")  # the old pass refreshes late
    settings.on_token_refresh("old-access-token", datetime.now(UTC) + timedelta(hours=1))
    assert _secret(mconfig, sessions, account_id) == {"refresh_token": fresh}
    assert sync_ok(mconfig, sessions, account_id).ok
