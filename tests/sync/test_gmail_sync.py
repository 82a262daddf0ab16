"""A Gmail account synced by the real engine against the Gmail stand-in (google-api-python-client and
google-auth on the wire), on SQLite and on PostgreSQL: threads and applicant history as for IMAP,
incremental passes, recovery from an expired historyId, persisted token refreshes, a revoked grant, and
sending through the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import Email, MailAccount, OutboxMessage
from providers.base import FolderRole
from sync.accounts import add_gmail_account
from sync.history import add_applicant, applicant_history
from sync.outbox import SendRequest, send_message
from sync.scheduler import Scheduler, sync_all
from sync.threads import account_threads
from tests.rig.fixtures import Mailbox, make_message
from tests.standins.gmail_rig import ADDRESS, GmailRig, gmail_rig
from tests.sync.helpers import connect, copies, count, history_ids, sync_ok

JANE = "jane.doe@gmail.com"


def _at(days: int) -> datetime:
    return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=days)


@pytest.fixture
def rig() -> Iterator[GmailRig]:
    with gmail_rig() as rig:
        yield rig


@pytest.fixture
def gconfig(config: Config, rig: GmailRig) -> Config:
    """The test config with [google] pointing at the stand-in (its own token endpoint)."""
    return rig.config(config)


@pytest.fixture
def account_id(gconfig: Config, sessions, rig: GmailRig) -> int:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        return add_gmail_account(s, gconfig, ADDRESS, rig.refresh_token).id


def _secret(config: Config, sessions, account_id: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id))
    return SecretBox(config.security.secret_key).open(sealed)


def test_threads_and_applicant_history_across_inbox_and_sent(
    gconfig: Config, sessions, rig: GmailRig, account_id: int
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
        applicant, _ = add_applicant(s, "Jane Doe", ["janedoe@gmail.com"])  # Gmail ignores dots

    result = sync_ok(gconfig, sessions, account_id)
    assert {f.name: f.new for f in result.folders if f.new} == {"INBOX": 2, "SENT": 1, "ALL": 3}
    assert count(sessions, Email) == 3  # a message in INBOX and ALL is one email with two copies
    with sessions() as s:
        threads = sorted(t["message_ids"] for t in account_threads(s, account_id))  # type: ignore[type-var]
        history = applicant_history(s, applicant.id)
    assert threads == [["<apply@x.test>", "<answer@x.test>"], ["<lunch@x.test>"]]
    assert [(h.message_id, h.direction) for h in history] == [
        ("<apply@x.test>", "inbound"),
        ("<answer@x.test>", "outbound"),
    ]
    assert copies(sessions, account_id, "sent") == ["<answer@x.test>"]


def test_incremental_pass_picks_up_new_mail_with_one_history_call(
    gconfig: Config, sessions, rig: GmailRig, account_id: int
) -> None:
    rig.deliver(make_message(message_id="<m0@x.test>"))
    sync_ok(gconfig, sessions, account_id)

    rig.standin.reset_calls()
    idle = sync_ok(gconfig, sessions, account_id)
    assert idle.new == 0
    assert [c.method for c in rig.standin.api_calls()] == ["users.labels.list", "users.history.list"]

    rig.deliver(make_message(message_id="<m1@x.test>"))
    later = sync_ok(gconfig, sessions, account_id)
    assert {f.name: f.new for f in later.folders if f.new} == {"INBOX": 1, "ALL": 1}
    assert copies(sessions, account_id) == ["<m0@x.test>", "<m1@x.test>"]


def test_expired_history_id_resyncs_the_folder_without_duplicates(
    gconfig: Config, sessions, rig: GmailRig, account_id: int
) -> None:
    for i in range(3):
        rig.deliver(make_message(message_id=f"<e{i}@x.test>", from_=JANE))
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane", [JANE])
    sync_ok(gconfig, sessions, account_id)
    rig.deliver(make_message(message_id="<e3@x.test>", from_=JANE))
    rig.standin.mailbox(ADDRESS).expire_history()  # Gmail keeps history for about a week

    result = sync_ok(gconfig, sessions, account_id)
    assert [f.resynced for f in result.folders if f.name == "INBOX"] == [True]
    assert copies(sessions, account_id) == [f"<e{i}@x.test>" for i in range(4)]
    assert count(sessions, Email) == 4
    assert history_ids(sessions, applicant.id) == [f"<e{i}@x.test>" for i in range(4)]


def test_refreshed_access_token_is_stored_sealed_and_reused(
    gconfig: Config, sessions, rig: GmailRig, account_id: int
) -> None:
    assert "access_token" not in _secret(gconfig, sessions, account_id)
    sync_ok(gconfig, sessions, account_id)
    first = _secret(gconfig, sessions, account_id)
    assert first["access_token"].startswith("ya29.") and first["refresh_token"] == rig.refresh_token
    assert datetime.fromisoformat(first["token_expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    with sessions() as s:
        sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id))
    assert first["access_token"].encode() not in sealed and rig.refresh_token.encode() not in sealed

    rig.standin.reset_calls()
    sync_ok(gconfig, sessions, account_id)  # the stored token is still good: no refresh
    assert [c for c in rig.standin.calls if c.method == "token"] == []

    rig.standin.expire_access_tokens()
    sync_ok(gconfig, sessions, account_id)
    assert [c.status for c in rig.standin.calls if c.method == "token"] == [200]
    assert _secret(gconfig, sessions, account_id)["access_token"] != first["access_token"]


def test_revoked_grant_needs_reconnect_while_an_imap_account_keeps_syncing(
    gconfig: Config, sessions, rig: GmailRig, account_id: int, mailbox: Mailbox
) -> None:
    imap_id = connect(gconfig, sessions, mailbox)
    mailbox.append(make_message(message_id="<imap1@x.test>"))
    sync_all(gconfig, sessions)
    rig.standin.revoke(rig.refresh_token)  # the user removed Postroom from their Google account
    rig.standin.expire_access_tokens()
    mailbox.append(make_message(message_id="<imap2@x.test>"))

    results = {r.account_id: r for r in sync_all(gconfig, sessions)}
    assert results[imap_id].ok and results[imap_id].new == 1
    assert not results[account_id].ok and "invalid_grant" in (results[account_id].error or "")
    with sessions() as s:
        gmail = s.get_one(MailAccount, account_id)
        assert (gmail.status, gmail.last_error_class) == ("reconnect-needed", "AuthError")
        assert s.get_one(MailAccount, imap_id).status == "active"
    # the worker does not come back to it (no retry storm) until it is reconnected
    due = Scheduler(gconfig, sessions).due(datetime.now(UTC) + timedelta(days=1), 10)
    assert account_id not in due and imap_id in due


def test_reply_sent_through_the_outbox_reaches_the_applicant_once_in_sent(
    gconfig: Config, sessions, rig: GmailRig, account_id: int
) -> None:
    jane = rig.standin.add_user(JANE)
    rig.deliver(make_message(message_id="<ask@x.test>", subject="Question", from_=JANE, to=ADDRESS))
    sync_ok(gconfig, sessions, account_id)

    row = send_message(
        gconfig,
        sessions,
        SendRequest(account_id, [JANE], "Re: Question", "Happy to help.", in_reply_to="<ask@x.test>"),
    )
    assert row.status == "sent" and row.error is None and row.sent_copy_id
    (received,) = jane.by_label("INBOX")
    assert received.message_id == row.message_id
    assert received.header("In-Reply-To") == "<ask@x.test>" and received.header("References") == "<ask@x.test>"
    sent = [m for m in rig.standin.mailbox(ADDRESS).by_label("SENT") if m.message_id == row.message_id]
    assert [m.id for m in sent] == [row.sent_copy_id]  # Gmail's own copy, not a second one inserted
    assert sent[0].thread_id == rig.standin.mailbox(ADDRESS).by_label("INBOX")[0].thread_id

    sync_ok(gconfig, sessions, account_id)
    assert copies(sessions, account_id, "sent") == [row.message_id]
    with sessions() as s:
        (thread,) = account_threads(s, account_id)
        assert s.scalar(select(OutboxMessage.status).where(OutboxMessage.id == row.id)) == "sent"
    assert thread["message_ids"] == ["<ask@x.test>", row.message_id]


def test_an_archived_reply_reaches_the_applicant_history_once(
    gconfig: Config, sessions, rig: GmailRig, account_id: int
) -> None:
    box = rig.standin.mailbox(ADDRESS)
    rig.deliver(make_message(message_id="<apply@x.test>", subject="Application", from_=JANE, date=_at(0)))
    answer = make_message(message_id="<answer@x.test>", subject="Re: Application", from_=ADDRESS, to=JANE, date=_at(1))
    rig.deliver(answer, FolderRole.SENT)
    reply = rig.deliver(
        make_message(
            message_id="<reply@x.test>",
            subject="Re: Application",
            from_=JANE,
            in_reply_to="<answer@x.test>",
            references=["<apply@x.test>", "<answer@x.test>"],
            date=_at(2),
        )
    )
    box.modify(reply, remove=["INBOX"])  # the recruiter archived it before Postroom first synced
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane Doe", [JANE])

    sync_ok(gconfig, sessions, account_id)
    expected = ["<answer@x.test>", "<apply@x.test>", "<reply@x.test>"]
    assert history_ids(sessions, applicant.id) == expected  # each once, though two are also in INBOX/SENT
    assert copies(sessions, account_id, "inbox") == ["<apply@x.test>"]
    assert copies(sessions, account_id, "all") == expected
    assert count(sessions, Email) == 3

    # archiving the application later takes it out of INBOX only: it stays in the history
    box.modify(rig.standin.mailbox(ADDRESS).by_label("INBOX")[0].id, remove=["INBOX"])
    later = sync_ok(gconfig, sessions, account_id)
    assert {f.name: (f.new, f.removed) for f in later.folders if f.new or f.removed} == {"INBOX": (0, 1)}
    assert copies(sessions, account_id, "inbox") == []
    assert history_ids(sessions, applicant.id) == expected
