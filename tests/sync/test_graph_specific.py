"""What only a Microsoft 365 account does, synced by the real engine against the Graph and identity
stand-ins (requests and msal over HTTPS), on SQLite and on PostgreSQL: an idle pass costs one delta
request per folder, and Microsoft's rotating refresh tokens are kept sealed, without undoing a
reconnect. What every backend does is in test_engine_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroom.models import MailAccount
from services.accounts import add_graph_account
from sync.credentials import provider_settings
from tests.rig.fixtures import make_message
from tests.sync.engine_env import GraphEnv, env_fixture
from tests.sync.helpers import sealed_secret, stored_secret, sync_ok

env = env_fixture("graph")


def test_an_idle_pass_costs_one_delta_request_per_folder(env: GraphEnv) -> None:
    env.deliver(make_message(message_id="<m0@x.test>"))
    first = sync_ok(env.config, env.sessions, env.account_id)

    env.graph.reset_calls()
    idle = sync_ok(env.config, env.sessions, env.account_id)
    assert idle.new == 0
    deltas = [c.route for c in env.graph.http_requests() if c.route != "batch"]  # the folder list is one batch
    assert deltas == ["delta"] * len(first.folders)


def test_rotated_refresh_token_is_stored_sealed_and_used_on_the_next_pass(env: GraphEnv) -> None:
    config, sessions, account_id, identity = env.config, env.sessions, env.account_id, env.rig.identity
    granted = env.rig.refresh_token
    assert "access_token" not in stored_secret(config, sessions, account_id)
    sync_ok(config, sessions, account_id)
    first = stored_secret(config, sessions, account_id)
    assert first["refresh_token"] != granted  # Microsoft issued a new one, and it was kept
    assert identity.user_for(first["access_token"])[0] == env.address
    assert datetime.fromisoformat(first["token_expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    sealed = sealed_secret(sessions, account_id)
    for token in (first["refresh_token"], first["access_token"], granted):
        assert token.encode() not in sealed

    calls = len(identity.token_calls)
    sync_ok(config, sessions, account_id)  # the stored access token is still good: no refresh
    assert len(identity.token_calls) == calls

    identity.expire_access_tokens()
    sync_ok(config, sessions, account_id)
    (refresh,) = identity.token_calls[calls:]
    assert (refresh.grant_type, refresh.refresh_token, refresh.status) == ("refresh_token", first["refresh_token"], 200)
    second = stored_secret(config, sessions, account_id)
    assert second["refresh_token"] not in (first["refresh_token"], granted)
    assert second["access_token"] != first["access_token"]


def test_tokens_from_a_pass_that_began_before_a_reconnect_do_not_undo_it(env: GraphEnv) -> None:
    config, sessions, account_id = env.config, env.sessions, env.account_id
    with sessions() as s:
        settings = provider_settings(s.get_one(MailAccount, account_id), config, sessions)  # a pass begins
    fresh = env.rig.identity.grant(env.address)
    with sessions.begin() as s:  # meanwhile the recruiter connects again
        add_graph_account(s, config, env.address, fresh, reconnect=True)
    assert settings.on_refresh_token_rotated is not None and settings.on_token_refresh is not None
    settings.on_refresh_token_rotated("1.AQ-rotated-from-the-old-grant")  # the old pass refreshes late
    settings.on_token_refresh("old-access-token", datetime.now(UTC) + timedelta(hours=1))
    assert stored_secret(config, sessions, account_id) == {"refresh_token": fresh}
    assert sync_ok(config, sessions, account_id).ok
