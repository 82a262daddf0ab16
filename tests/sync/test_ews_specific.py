"""What only an Exchange mailbox does (EWS, basic auth over HTTPS with the stand-in's CA), synced by
the real engine against the EWS stand-in (exchangelib over the wire), on SQLite and on PostgreSQL: the
cost of an idle pass (also right after a resync), ErrorServerBusy backing off one account only, and a
refused password asked once. What every backend does is in test_engine_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.models import MailAccount
from providers.base import FolderRole
from sync.scheduler import Scheduler, sync_all
from tests.rig.fixtures import make_message
from tests.sync.engine_env import EwsEnv, add_ews, env_fixture
from tests.sync.helpers import copies, sync_account, sync_ok

BOB, BOB_PASSWORD = "bob@contoso.test", "Summer2026!"


def _aware(when: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive (they are stored in UTC)."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


env = env_fixture("ews")


def test_an_idle_pass_costs_the_folder_listing_and_one_sync_per_folder_also_after_a_resync(env: EwsEnv) -> None:
    env.deliver(make_message(message_id="<m0@x.test>"))
    env.deliver(make_message(message_id="<s0@x.test>", from_=env.address), FolderRole.SENT)
    first = sync_ok(env.config, env.sessions, env.account_id)
    idle_pass = ["GetFolder", "SyncFolderHierarchy"] + ["SyncFolderItems"] * len(first.folders)

    env.ews.reset_calls()
    assert sync_ok(env.config, env.sessions, env.account_id).new == 0
    assert [c.operation for c in env.ews.calls] == idle_pass
    assert all(c.status == 200 for c in env.ews.calls)  # no auth round trips or retries either

    env.expire_cursors()  # Exchange answers ErrorInvalidSyncStateData
    assert sync_ok(env.config, env.sessions, env.account_id).new == 2  # indexed afresh
    env.ews.reset_calls()
    assert sync_ok(env.config, env.sessions, env.account_id).new == 0  # the new SyncStates hold
    assert [c.operation for c in env.ews.calls] == idle_pass


def test_server_busy_backs_off_that_account_while_another_on_the_database_syncs(env: EwsEnv) -> None:
    config, sessions, account_id = env.config, env.sessions, env.account_id
    env.ews.add_user(BOB, password=BOB_PASSWORD, name="Bob")
    bob_id = add_ews(config, sessions, env.rig, BOB, BOB_PASSWORD)
    env.deliver(make_message(message_id="<r0@x.test>"))
    env.ews.mailbox(BOB).add(make_message(message_id="<b0@x.test>", to=BOB))
    env.ews.busy(back_off_ms=600_000, mailbox=env.address)  # ten minutes; sync.backoff_base is 30 s
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


def test_a_refused_password_is_asked_once_reads_nothing_and_is_not_retried(env: EwsEnv) -> None:
    config, sessions = env.config, env.sessions
    env.ews.add_user(BOB, password=BOB_PASSWORD, name="Bob")
    env.ews.mailbox(BOB).add(make_message(message_id="<never@x.test>", to=BOB))
    wrong = add_ews(config, sessions, env.rig, BOB, "not-the-password")
    result = sync_account(config, sessions, wrong)
    assert not result.ok and result.status == "reconnect-needed"
    with sessions() as s:
        account = s.get_one(MailAccount, wrong)
        assert (account.status, account.last_error_class) == ("reconnect-needed", "AuthError")
        assert "Login failed" in (account.last_error or "")
    assert copies(sessions, wrong) == []
    assert {c.status for c in env.ews.calls} == {401}  # refused, and nothing read
    # the worker does not come back to it (no lock-out by retry storm) until it is reconnected
    assert wrong not in Scheduler(config, sessions).due(datetime.now(UTC) + timedelta(days=1), 10)
