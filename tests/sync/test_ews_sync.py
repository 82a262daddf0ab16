"""An Exchange mailbox (EWS, basic auth over HTTPS with the stand-in's CA) synced by the real engine
against the EWS stand-in (exchangelib over the wire), on SQLite and on PostgreSQL: threads and
applicant history as for IMAP, incremental passes and their cost, recovery from an expired
SyncState, ErrorServerBusy backing off one account only, a refused password, and sending
through the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import Body, Email, HistoryEntry, MailAccount, MessageCopy, OutboxMessage
from providers.base import FolderRole
from sync.accounts import EwsAccountRequest, add_ews_account
from sync.history import add_applicant, applicant_history
from sync.outbox import SendRequest, deliver, queue_message
from sync.scheduler import Scheduler, sync_account, sync_all
from sync.threads import account_threads
from tests.rig.fixtures import make_message
from tests.standins.ews_rig import ADDRESS, PASSWORD, EwsRig, ews_rig
from tests.sync.helpers import copies, count, history_ids, sync_ok

JANE = "jane.doe@contoso.test"
KEN = "ken.applicant@example.org"
BOB, BOB_PASSWORD = "bob@contoso.test", "Summer2026!"
MIME_ONLY = ("item:MimeContent",)


def _at(days: int) -> datetime:
    return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=days)


def _aware(when: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive (they are stored in UTC)."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


@pytest.fixture
def rig() -> Iterator[EwsRig]:
    with ews_rig(https=True) as rig:
        yield rig


def _add(
    config: Config, sessions: sessionmaker[Session], rig: EwsRig, email: str = ADDRESS, password: str = PASSWORD
) -> int:
    """Add the mailbox as `postroom accounts add-ews --auth basic --ca-file ...` does; returns its id."""
    assert rig.ca_file is not None and rig.endpoint.startswith("https://")
    req = EwsAccountRequest(
        email=email, ews_url=rig.endpoint, auth="basic", username=email, password=password, ca_file=rig.ca_file
    )
    with sessions.begin() as s:
        return add_ews_account(s, config, req).id


@pytest.fixture
def account_id(config: Config, sessions, rig: EwsRig) -> int:  # type: ignore[no-untyped-def]
    return _add(config, sessions, rig)


def _bodies(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as s:
        return sorted(s.scalars(select(Email.message_id).where(Email.body_id.is_not(None))))


def test_threads_history_and_backfill_with_bodies_for_applicant_mail_only(
    config: Config, sessions, rig: EwsRig, account_id: int
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
    lunch = rig.deliver(make_message(message_id="<lunch@x.test>", subject="Lunch?", from_="colleague@contoso.test"))
    ken_mail = rig.deliver(
        make_message(
            message_id="<ken@x.test>", subject="Lebenslauf – Jürgen", from_=f'"Müller, Ken" <{KEN}>', date=_at(2)
        )
    )
    with sessions.begin() as s:
        jane, _ = add_applicant(s, "Jane Doe", ["Jane.Doe+jobs@contoso.test"])  # case and +tag ignored

    first = sync_ok(config, sessions, account_id)
    fetched = b"".join(c.body for c in rig.ews.requests("GetItem") if c.fields == MIME_ONLY)
    assert fetched and lunch.encode() not in fetched and ken_mail.encode() not in fetched
    assert first.new == 4
    with sessions() as s:
        threads = sorted(t["message_ids"] for t in account_threads(s, account_id))  # type: ignore[type-var]
        history = applicant_history(s, jane.id)
    assert threads == [["<apply@x.test>", "<answer@x.test>"], ["<ken@x.test>"], ["<lunch@x.test>"]]
    assert [(h.message_id, h.direction) for h in history] == [
        ("<apply@x.test>", "inbound"),
        ("<answer@x.test>", "outbound"),
    ]
    assert history[0].thread_id == history[1].thread_id
    assert copies(sessions, account_id, "sent") == ["<answer@x.test>"]
    assert _bodies(sessions) == ["<answer@x.test>", "<apply@x.test>"]  # private and unknown mail: headers only

    # Ken is added after the first sync: his history comes from the header index at once...
    with sessions.begin() as s:
        ken, backfilled = add_applicant(s, "Ken", [KEN])
    assert backfilled == 1
    assert history_ids(sessions, ken.id) == ["<ken@x.test>"]
    with sessions() as s:
        (shown,) = applicant_history(s, ken.id)
        assert s.execute(select(Email.subject, Email.from_name).where(Email.message_id == "<ken@x.test>")).one() == (
            "Lebenslauf – Jürgen",
            "Müller, Ken",
        )
    assert shown.direction == "inbound"
    # ...and the next pass fetches exactly his body from Exchange, and nothing twice.
    rig.ews.reset_calls()
    later = sync_ok(config, sessions, account_id)
    assert later.new == 0 and sum(f.bodies for f in later.folders) == 1
    (fetch,) = [c for c in rig.ews.requests("GetItem") if c.fields == MIME_ONLY]
    assert ken_mail.encode() in fetch.body
    assert _bodies(sessions) == ["<answer@x.test>", "<apply@x.test>", "<ken@x.test>"]
    assert count(sessions, Body) == 3
    assert count(sessions, HistoryEntry) == 3  # each message once in the history
    assert history_ids(sessions, jane.id) == ["<answer@x.test>", "<apply@x.test>"]


def test_incremental_pass_picks_up_new_mail_drops_deleted_and_an_idle_pass_is_cheap(
    config: Config, sessions, rig: EwsRig, account_id: int
) -> None:
    keep = rig.deliver(make_message(message_id="<m0@x.test>"))
    gone = rig.deliver(make_message(message_id="<gone@x.test>"))
    binned = rig.deliver(make_message(message_id="<binned@x.test>"))
    first = sync_ok(config, sessions, account_id)
    assert copies(sessions, account_id) == ["<binned@x.test>", "<gone@x.test>", "<m0@x.test>"]

    rig.ews.reset_calls()
    idle = sync_ok(config, sessions, account_id)
    assert idle.new == 0
    listing = ["GetFolder", "SyncFolderHierarchy"]
    assert [c.operation for c in rig.ews.calls] == listing + ["SyncFolderItems"] * len(first.folders)
    assert all(c.status == 200 for c in rig.ews.calls)  # no auth round trips or retries either

    box = rig.ews.mailbox(ADDRESS)
    box.delete(gone)  # Shift+Delete: gone for good
    box.move(binned, "deleteditems")  # Delete: into Deleted Items, with a new item id
    box.set_flags(keep, {"\\Seen", "\\Flagged"})  # read in Outlook and flagged for follow-up
    rig.deliver(make_message(message_id="<m1@x.test>"))
    later = sync_ok(config, sessions, account_id)
    assert later.new == 2  # the newcomer, and the deleted one in its new folder
    inbox = box.folder("inbox").id
    assert [(f.removed, f.changed) for f in later.folders if f.name == inbox] == [(2, 1)]
    assert copies(sessions, account_id) == ["<m0@x.test>", "<m1@x.test>"]
    assert copies(sessions, account_id, "trash") == ["<binned@x.test>"]
    with sessions() as s:
        flags = s.scalar(
            select(MessageCopy.flags)
            .join(Email, Email.id == MessageCopy.email_id)
            .where(Email.message_id == "<m0@x.test>")
        )
    assert flags == "\\Flagged \\Seen"


def test_expired_sync_state_resyncs_the_folder_without_duplicates_or_loss(
    config: Config, sessions, rig: EwsRig, account_id: int
) -> None:
    for i in range(3):
        rig.deliver(make_message(message_id=f"<e{i}@x.test>", from_=JANE))
    rig.deliver(make_message(message_id="<s0@x.test>", from_=ADDRESS, to=JANE), FolderRole.SENT)
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane", [JANE])
    sync_ok(config, sessions, account_id)
    rig.deliver(make_message(message_id="<e3@x.test>", from_=JANE))
    rig.ews.mailbox(ADDRESS).expire_sync_states()  # Exchange answers ErrorInvalidSyncStateData

    result = sync_ok(config, sessions, account_id)
    box = rig.ews.mailbox(ADDRESS)
    resynced = {f.name for f in result.folders if f.resynced}
    assert {box.folder("inbox").id, box.folder("sentitems").id} <= resynced
    assert result.new == 4 + 1  # the inbox and Sent Items indexed afresh, the newcomer among them
    assert copies(sessions, account_id) == [f"<e{i}@x.test>" for i in range(4)]
    assert copies(sessions, account_id, "sent") == ["<s0@x.test>"]
    assert count(sessions, Email) == 5
    assert history_ids(sessions, applicant.id) == [*(f"<e{i}@x.test>" for i in range(4)), "<s0@x.test>"]
    assert count(sessions, HistoryEntry) == 5
    assert count(sessions, Body) == 5  # bodies already stored were not fetched and stored again

    rig.ews.reset_calls()
    assert sync_ok(config, sessions, account_id).new == 0  # the new SyncStates hold
    assert {c.operation for c in rig.ews.calls} == {"GetFolder", "SyncFolderHierarchy", "SyncFolderItems"}


def test_server_busy_backs_off_that_account_while_another_on_the_database_syncs(
    config: Config, sessions, rig: EwsRig, account_id: int
) -> None:
    rig.ews.add_user(BOB, password=BOB_PASSWORD, name="Bob")
    bob_id = _add(config, sessions, rig, BOB, BOB_PASSWORD)
    rig.deliver(make_message(message_id="<r0@x.test>"))
    rig.ews.mailbox(BOB).add(make_message(message_id="<b0@x.test>", to=BOB))
    rig.ews.busy(back_off_ms=600_000, mailbox=ADDRESS)  # ten minutes; sync.backoff_base is 30 s
    before = datetime.now(UTC)

    results = {r.account_id: r for r in sync_all(config, sessions)}
    assert datetime.now(UTC) - before < timedelta(seconds=30)  # nobody slept through the back-off
    assert not results[account_id].ok and "server busy" in (results[account_id].error or "")
    assert results[account_id].retry_after == 600
    assert results[bob_id].ok and results[bob_id].new == 1
    with sessions() as s:
        rita = s.get_one(MailAccount, account_id)
        assert (rita.status, rita.last_error_class) == ("backing-off", "TransientError")
        next_at = _aware(rita.next_sync_at)
        assert s.get_one(MailAccount, bob_id).status == "active"
    assert next_at is not None and next_at >= before + timedelta(seconds=600)
    assert copies(sessions, bob_id) == ["<b0@x.test>"] and copies(sessions, account_id) == []

    # The worker leaves Rita alone until the back-off has passed; then she syncs with nothing lost.
    scheduler = Scheduler(config, sessions)
    assert account_id not in scheduler.due(before + timedelta(seconds=599), 10)
    assert bob_id in scheduler.due(before + timedelta(seconds=599), 10)
    assert account_id in scheduler.due(next_at + timedelta(seconds=1), 10)
    assert scheduler.sync(account_id, force=True).ok
    assert copies(sessions, account_id) == ["<r0@x.test>"]
    with sessions() as s:
        assert s.get_one(MailAccount, account_id).status == "active"


def test_refused_password_needs_reconnect_and_is_not_retried(config: Config, sessions, rig: EwsRig) -> None:
    rig.deliver(make_message(message_id="<never@x.test>"))
    wrong = _add(config, sessions, rig, password="not-the-password")
    result = sync_account(config, sessions, wrong)
    assert not result.ok and result.status == "reconnect-needed"
    with sessions() as s:
        account = s.get_one(MailAccount, wrong)
        assert (account.status, account.last_error_class) == ("reconnect-needed", "AuthError")
        assert "Login failed" in (account.last_error or "")
    assert copies(sessions, wrong) == []
    assert {c.status for c in rig.ews.calls} == {401}  # refused, and nothing read
    # the worker does not come back to it (no lock-out by retry storm) until it is reconnected
    assert wrong not in Scheduler(config, sessions).due(datetime.now(UTC) + timedelta(days=1), 10)


def test_reply_sent_through_the_outbox_reaches_the_applicant_once_in_sent_items(
    config: Config, sessions, rig: EwsRig, account_id: int
) -> None:
    jane = rig.ews.add_user(JANE)
    rig.deliver(make_message(message_id="<ask@x.test>", subject="Question", from_=JANE, to=ADDRESS))
    sync_ok(config, sessions, account_id)

    with sessions.begin() as s:
        outbox_id = queue_message(
            s, SendRequest(account_id, [JANE], "Re: Question", "Happy to help.", in_reply_to="<ask@x.test>")
        ).id
    row = deliver(config, sessions, outbox_id)
    assert row.status == "sent" and row.error is None
    (received,) = jane.in_folder("inbox")
    assert received.header("Message-ID") == row.message_id
    assert received.header("In-Reply-To") == "<ask@x.test>" and received.header("References") == "<ask@x.test>"
    assert b"Happy to help." in received.raw
    box = rig.ews.mailbox(ADDRESS)
    sent = [i for i in box.in_folder("sentitems") if i.header("Message-ID") == row.message_id]
    assert len(sent) == 1  # Exchange's own copy (SendAndSaveCopy), not a second one stored by Postroom
    assert not sent[0].is_draft

    sync_ok(config, sessions, account_id)
    assert copies(sessions, account_id, "sent") == [row.message_id]
    with sessions() as s:
        (thread,) = account_threads(s, account_id)
        assert s.scalar(select(OutboxMessage.status).where(OutboxMessage.id == outbox_id)) == "sent"
    assert thread["message_ids"] == ["<ask@x.test>", row.message_id]
