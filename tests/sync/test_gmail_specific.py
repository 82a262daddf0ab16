"""What only a Gmail account does, synced by the real engine against the Gmail stand-in
(google-api-python-client and google-auth on the wire), on SQLite and on PostgreSQL: an idle pass
costs one history call, refreshed access tokens are kept sealed, and labels (an archived message
leaves the inbox, not the history). What every backend does is in test_engine_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.models import Email
from providers.base import FolderRole
from services.applicants import add_applicant
from tests.rig.fixtures import make_message
from tests.sync.engine_env import GmailEnv, env_fixture
from tests.sync.helpers import by_role, copies, count, history_ids, sealed_secret, stored_secret, sync_ok

JANE = "jane.doe@gmail.com"


def _at(days: int) -> datetime:
    return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=days)


env = env_fixture("gmail")


def test_an_idle_pass_costs_one_labels_list_and_one_history_list(env: GmailEnv) -> None:
    env.deliver(make_message(message_id="<m0@x.test>"))
    sync_ok(env.config, env.sessions, env.account_id)

    env.standin.reset_calls()
    idle = sync_ok(env.config, env.sessions, env.account_id)
    assert idle.new == 0
    assert [c.method for c in env.standin.api_calls()] == ["users.labels.list", "users.history.list"]


def test_refreshed_access_token_is_stored_sealed_and_reused(env: GmailEnv) -> None:
    config, sessions, account_id, refresh_token = env.config, env.sessions, env.account_id, env.rig.refresh_token
    assert "access_token" not in stored_secret(config, sessions, account_id)
    sync_ok(config, sessions, account_id)
    first = stored_secret(config, sessions, account_id)
    assert first["access_token"].startswith("ya29.") and first["refresh_token"] == refresh_token
    assert datetime.fromisoformat(first["token_expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    sealed = sealed_secret(sessions, account_id)
    assert first["access_token"].encode() not in sealed and refresh_token.encode() not in sealed

    env.standin.reset_calls()
    sync_ok(config, sessions, account_id)  # the stored token is still good: no refresh
    assert [c for c in env.standin.calls if c.method == "token"] == []

    env.standin.expire_access_tokens()
    sync_ok(config, sessions, account_id)
    assert [c.status for c in env.standin.calls if c.method == "token"] == [200]
    assert stored_secret(config, sessions, account_id)["access_token"] != first["access_token"]


def test_an_archived_reply_reaches_the_applicant_history_once(env: GmailEnv) -> None:
    env.deliver(make_message(message_id="<apply@x.test>", subject="Application", from_=JANE, date=_at(0)))
    answer = make_message(
        message_id="<answer@x.test>", subject="Re: Application", from_=env.address, to=JANE, date=_at(1)
    )
    env.deliver(answer, FolderRole.SENT)
    reply = env.deliver(
        make_message(
            message_id="<reply@x.test>",
            subject="Re: Application",
            from_=JANE,
            in_reply_to="<answer@x.test>",
            references=["<apply@x.test>", "<answer@x.test>"],
            date=_at(2),
        )
    )
    env.box.modify(reply, remove=["INBOX"])  # the recruiter archived it before Postroom first synced
    with env.sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane Doe", [JANE])

    sync_ok(env.config, env.sessions, env.account_id)
    expected = ["<answer@x.test>", "<apply@x.test>", "<reply@x.test>"]
    assert history_ids(env.sessions, applicant.id) == expected  # each once, though two are also in INBOX/SENT
    assert copies(env.sessions, env.account_id, "inbox") == ["<apply@x.test>"]
    assert copies(env.sessions, env.account_id, "all") == expected
    assert count(env.sessions, Email) == 3

    # archiving the application later takes it out of INBOX only: it stays in the history
    env.box.modify(env.box.by_label("INBOX")[0].id, remove=["INBOX"])
    later = sync_ok(env.config, env.sessions, env.account_id)
    assert by_role(env.sessions, env.account_id, later, "new") == {}
    assert by_role(env.sessions, env.account_id, later, "removed") == {"inbox": 1}
    assert copies(env.sessions, env.account_id, "inbox") == []
    assert history_ids(env.sessions, applicant.id) == expected
