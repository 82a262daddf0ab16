"""Settings a backend cannot work with stop the account, as refused credentials do.

A :class:`providers.errors.ConfigurationError` (plaintext to a remote host, no OAuth client
configured, no EWS endpoint) is raised when the provider is opened. Retrying cannot help,
so the engine marks the account ``reconnect-needed`` with a message that names what to
fix, instead of backing off and trying again forever. SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import MailAccount
from sync.scheduler import Scheduler
from sync.store import default_org

CASES = [
    pytest.param(
        "imap",
        {"imap_host": "mail.example.test", "imap_security": "none", "smtp_host": "mail.example.test"},
        {"password": "pw"},
        "IMAP: refusing an unencrypted connection to mail.example.test; use 'ssl' or 'starttls', "
        "or set allow_plaintext",
        id="imap-plaintext-to-a-remote-host",
    ),
    pytest.param(
        "imap",  # an /etc/hosts name, not one that can only mean this machine (tests/core/test_loopback.py)
        {"imap_host": "localhost.localdomain", "imap_security": "none"},
        {"password": "pw"},
        "IMAP: refusing an unencrypted connection to localhost.localdomain",
        id="imap-plaintext-to-localhost-localdomain",
    ),
    pytest.param(
        "gmail",  # [google] has no client_id / client_secret
        {},
        {"refresh_token": "1//refresh"},
        "Gmail settings need client_id and client_secret for the Google OAuth client.",
        id="gmail-without-an-oauth-client",
    ),
    pytest.param(
        "gmail",  # tracked sends over SMTP would send the OAuth token in the clear
        {"smtp_submission": True, "smtp_host": "smtp.example.test", "smtp_security": "none"},
        {"access_token": "ya29.token"},
        "Gmail SMTP: refusing to send the OAuth token unencrypted to smtp.example.test; "
        "smtp_security must be starttls or ssl (none only for this machine).",
        id="gmail-smtp-submission-in-plaintext",
    ),
    pytest.param(
        "ews",
        {"auth": "basic"},
        {"password": "pw"},
        "EWS settings need ews_url (or autodiscover = true).",
        id="ews-without-an-endpoint",
    ),
]


def _add(
    sessions: sessionmaker[Session], config: Config, provider: str, settings: dict[str, Any], secret: dict[str, Any]
) -> int:
    with sessions.begin() as s:
        account = MailAccount(
            org_id=default_org(s).id,
            email="rita@example.test",
            provider=provider,
            settings=settings,
            secret=SecretBox.for_config(config.security).seal(secret),
        )
        s.add(account)
        s.flush()
        return account.id


@pytest.mark.parametrize(("provider", "settings", "secret", "message"), CASES)
def test_settings_that_cannot_work_stop_the_account_until_they_are_fixed(
    config: Config,
    sessions: sessionmaker[Session],
    provider: str,
    settings: dict[str, Any],
    secret: dict[str, Any],
    message: str,
) -> None:
    account_id = _add(sessions, config, provider, settings, secret)
    scheduler = Scheduler(config, sessions)
    result = scheduler.sync(account_id, force=True)
    assert not result.ok and result.needs_reconnect and result.error_class == "ConfigurationError"
    with sessions() as s:
        account = s.get_one(MailAccount, account_id)
        assert account.status == "reconnect-needed" and account.next_sync_at is None
        assert account.last_error is not None and account.last_error.startswith(f"Settings need fixing: {message}")
        assert account.last_error_class == "ConfigurationError"
    assert account_id not in scheduler.due(datetime.now(UTC) + timedelta(days=1), 10)  # no retry storm
