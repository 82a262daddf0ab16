"""Issue 9, item 5: stored credentials are re-sealed under a new key with `postroom keys rotate`,
the old key readable (security.previous_keys) until that is done. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom.config import Config, load_config
from postroom.crypto import SecretBox, SecretError
from postroom.models import MailAccount
from services.accounts import ImapAccountRequest, add_imap_account
from services.keys import rotate_secrets
from sync.credentials import TokenSaver
from tests.cli.harness import Cli

OLD = "test-secret-key-0123456789abcdef"  # the `env` fixture's key
NEW = "the-new-secret-key-fedcba9876543210"
LOST = "a-key-nobody-has-any-more-0000000"


def _add(cli: Cli, monkeypatch: pytest.MonkeyPatch, email: str, password: str) -> int:
    """`postroom accounts add-imap` (nothing is contacted until the account syncs)."""
    monkeypatch.setenv("MAIL_PASSWORD", password)
    data = cli.json(
        *("accounts", "add-imap", "--email", email, "--username", email, "--password-env", "MAIL_PASSWORD"),
        *("--imap-host", "127.0.0.1", "--imap-port", "143", "--imap-security", "none"),
        *("--smtp-host", "127.0.0.1", "--smtp-port", "25", "--smtp-security", "none"),
    )
    assert isinstance(data, dict)
    return int(data["id"])


def _secrets(config: Config) -> dict[int, bytes]:
    engine = db.make_engine(config.database)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(MailAccount.id, MailAccount.secret)).tuples().all())
    finally:
        engine.dispose()


def test_rotate_reseals_every_credential_so_the_old_key_can_go(
    cli: Cli, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = _add(cli, monkeypatch, "alice@example.test", "alice-password")
    bob = _add(cli, monkeypatch, "bob@example.test", "bob-password")

    # the new key alone cannot read what the old one sealed: rotate says so in one sentence, exit 1
    monkeypatch.setenv("POSTROOM_SECRET_KEY", NEW)
    code, out, err = cli("keys", "rotate", ok=False)
    assert code == 1
    assert out == "Stored credentials: 0 re-sealed under the current key, 0 already sealed under it, 2 unreadable.\n"
    assert err.startswith("postroom: error: 2 stored credentials (accounts 1, 2) open with neither ")
    assert err.count("\n") == 1 and err.rstrip().endswith(".")

    # with the old key among the previous ones, everything is re-sealed under the new key
    monkeypatch.setenv("POSTROOM_PREVIOUS_SECRET_KEYS", f"{LOST}, {OLD}")
    assert cli.json("keys", "rotate") == {
        "resealed": 2,
        "current": 0,
        "unreadable": 0,
        "unreadable_accounts": [],
        "busy_accounts": [],
        "webhooks_resealed": 0,
        "webhooks_current": 0,
        "unreadable_webhooks": [],
        "busy_webhooks": [],
    }
    assert cli.json("keys", "rotate")["current"] == 2  # type: ignore[index]  # nothing left to do

    # the old key can go: the new one alone opens every secret, unchanged; the old one opens none
    monkeypatch.delenv("POSTROOM_PREVIOUS_SECRET_KEYS")
    sealed = _secrets(load_config(env={**env, "POSTROOM_SECRET_KEY": NEW}))
    assert SecretBox(NEW).open(sealed[alice]) == {"username": "alice@example.test", "password": "alice-password"}
    assert SecretBox(NEW).open(sealed[bob])["password"] == "bob-password"
    for token in sealed.values():
        with pytest.raises(SecretError):
            SecretBox(OLD).open(token)
    assert cli.json("accounts", "list")[0]["email"] == "alice@example.test"  # type: ignore[index]


def test_rotate_counts_what_no_key_opens_and_reseals_the_rest(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _add(cli, monkeypatch, "alice@example.test", "alice-password")
    lost = _add(cli, monkeypatch, "lost@example.test", "lost-password")
    config = load_config(env=cli.env)
    engine = db.make_engine(config.database)
    with engine.begin() as conn:  # sealed under a key that is gone
        conn.execute(
            update(MailAccount).where(MailAccount.id == lost).values(secret=SecretBox(LOST).seal({"password": "x"}))
        )
    engine.dispose()
    monkeypatch.setenv("POSTROOM_SECRET_KEY", NEW)
    monkeypatch.setenv("POSTROOM_PREVIOUS_SECRET_KEYS", OLD)
    code, out, err = cli("keys", "rotate", "--json", ok=False)
    assert code == 1
    assert json.loads(out) == {
        "resealed": 1,
        "current": 0,
        "unreadable": 1,
        "unreadable_accounts": [lost],
        "busy_accounts": [],
        "webhooks_resealed": 0,
        "webhooks_current": 0,
        "unreadable_webhooks": [],
        "busy_webhooks": [],
    }
    assert err.startswith(f"postroom: error: 1 stored credentials (accounts {lost}) open with neither")


@pytest.fixture
def other_sessions(config: Config) -> Iterator[sessionmaker[Session]]:
    """A second engine: what a worker refreshing tokens in another process would use."""
    engine = db.make_engine(config.database)
    yield db.make_sessionmaker(engine)
    engine.dispose()


def test_rotate_never_overwrites_a_token_refreshed_meanwhile(
    config: Config, sessions: sessionmaker[Session], other_sessions: sessionmaker[Session]
) -> None:
    """A worker (already restarted with the new key) refreshes an OAuth token between rotate's
    read of the account and its write: the refreshed token survives."""
    old = _with_keys(config, OLD)
    new = _with_keys(config, NEW, OLD)
    with sessions.begin() as s:
        account = add_imap_account(
            s,
            old,
            ImapAccountRequest("rita@example.test", "rita", "pw", "127.0.0.1", 143, "none", "127.0.0.1", 25, "none"),
        )
        account_id = account.id
        expiry = datetime.now(UTC) + timedelta(hours=1)
        s.execute(
            update(MailAccount)
            .where(MailAccount.id == account_id)
            .values(secret=SecretBox(OLD).seal({"refresh_token": "rt-1", "access_token": "at-1"}))
        )

    engine = sessions.kw["bind"]
    refreshed = []

    def refresh_first(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE MAIL_ACCOUNTS") and not refreshed:
            refreshed.append(True)
            TokenSaver(new, account_id, "rt-1", other_sessions)("at-2", expiry)  # commits before our write

    event.listen(engine, "before_cursor_execute", refresh_first)
    try:
        done = rotate_secrets(new, sessions)
    finally:
        event.remove(engine, "before_cursor_execute", refresh_first)
    assert refreshed, "rotate never wrote"
    with sessions() as s:
        secret = SecretBox(NEW).open(s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id)))
    assert secret["refresh_token"] == "rt-1" and secret["access_token"] == "at-2"  # the refresh was kept
    assert done.current == [account_id] and done.resealed == []  # the worker had re-sealed it already


def _with_keys(config: Config, key: str, *previous: str) -> Config:
    from dataclasses import replace

    return replace(config, security=replace(config.security, secret_key=key, previous_keys=previous))


def test_rotate_reseals_webhook_secrets_and_the_one_being_retired(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from postroom.models import WebhookSubscription

    added = cli.json("webhooks", "add", "--url", "https://hooks.example.com/x", "--events", "message.opened")
    assert isinstance(added, dict)
    config = load_config(env=cli.env)
    engine = db.make_engine(config.database)
    with engine.begin() as conn:  # a webhook secret rotation in progress: the old one kept too
        conn.execute(update(WebhookSubscription).values(previous_secret=SecretBox(OLD).seal({"secret": "whsec_old"})))
    engine.dispose()
    monkeypatch.setenv("POSTROOM_SECRET_KEY", NEW)
    monkeypatch.setenv("POSTROOM_PREVIOUS_SECRET_KEYS", OLD)
    done = cli.json("keys", "rotate")
    assert isinstance(done, dict) and (done["webhooks_resealed"], done["unreadable_webhooks"]) == (1, [])
    assert cli.json("keys", "rotate")["webhooks_current"] == 1  # type: ignore[index]
    engine = db.make_engine(config.database)
    with engine.connect() as conn:
        secret, previous = conn.execute(select(WebhookSubscription.secret, WebhookSubscription.previous_secret)).one()
    engine.dispose()
    assert SecretBox(NEW).open(secret) == {"secret": added["secret"]}
    assert SecretBox(NEW).open(previous) == {"secret": "whsec_old"}
    monkeypatch.delenv("POSTROOM_PREVIOUS_SECRET_KEYS")
    assert "Webhook secrets: 0 re-sealed, 1 already" in cli("keys", "rotate")[1]
