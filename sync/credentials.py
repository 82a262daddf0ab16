"""Opening an account's provider with its sealed credentials, and keeping refreshed tokens.

Credentials are sealed with :class:`postroom.crypto.SecretBox` before they reach
the database and unsealed only here, to build a :class:`providers.base.ProviderSettings`.
That covers IMAP and EWS passwords and OAuth grants alike: an OAuth account's
secret holds its refresh token and the last access token with its expiry. The
OAuth client's id is kept in the account's settings (the grant belongs to that
client), with the endpoints the grant came from; the client's secret comes from
``[google]`` or ``[microsoft]`` each time the account is opened and is never
stored per account. When the provider refreshes the access token — and, with
Microsoft, receives a new refresh token on every refresh — the new tokens are
sealed and written back, each in a short transaction of its own (:class:`TokenSaver`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.logs import error_summary
from postroom.models import MailAccount
from providers.base import Credentials, MailProvider, ProviderSettings
from providers.registry import backend_class, open_provider

log = logging.getLogger("postroom.accounts")


def iso(when: datetime | None) -> str | None:
    """An aware UTC ISO timestamp (naive input is taken as UTC), as sealed secrets keep them."""
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


class StoredAccount(Protocol):
    """What opening a provider needs of an account: a ``MailAccount`` or a row of its table."""

    id: int
    email: str
    provider: str
    settings: dict[str, Any]
    secret: bytes


def provider_settings(account: StoredAccount, config: Config, sessions: sessionmaker[Session]) -> ProviderSettings:
    """What the account's backend needs: its stored settings plus what the backend takes from
    the config (:meth:`providers.base.ProviderFactory.options_with_config`: OAuth client
    secrets live in the config only, never with the account). For OAuth backends that
    refresh their own tokens (Gmail, Microsoft Graph, EWS with oauth2), new tokens are
    persisted through ``sessions``."""
    secret = SecretBox.for_config(config.security).open(account.secret)
    expiry = secret.get("token_expiry")
    creds = Credentials(
        username=secret.get("username") or account.email,
        password=secret.get("password"),
        access_token=secret.get("access_token"),
        oauth_mechanism=secret.get("oauth_mechanism", "XOAUTH2"),
        refresh_token=secret.get("refresh_token"),
        token_expiry=datetime.fromisoformat(expiry) if expiry else None,
    )
    options = backend_class(account.provider).options_with_config(account.settings or {}, creds, config)
    saver = TokenSaver(config, account.id, creds.refresh_token, sessions) if creds.refresh_token else None
    return ProviderSettings(
        email=account.email,
        credentials=creds,
        options=options,
        timeout=config.sync.connect_timeout,
        on_token_refresh=saver,
        on_refresh_token_rotated=saver.rotated if saver else None,
    )


def open_account(account: StoredAccount, config: Config, sessions: sessionmaker[Session]) -> MailProvider:
    return open_provider(account.provider, provider_settings(account, config, sessions))


class TokenSaver:
    """Persists one account's refreshed OAuth tokens, sealed, each in one short transaction,
    called between network calls (never inside a transaction of the sync):

    * as ``on_token_refresh(access_token, expiry)``: the new access token;
    * as ``on_refresh_token_rotated(refresh_token)`` (:meth:`rotated`): the new refresh
      token Microsoft issues on every refresh; later refreshes must use it.

    A save happens only while the account still holds the refresh token this saver knows:
    if the account was reconnected meanwhile (another grant), the new grant is left alone.
    A database failure is logged, not raised: the provider goes on with the tokens in
    memory (Microsoft's previous refresh token stays valid) and refreshes again next time."""

    def __init__(self, config: Config, account_id: int, refresh_token: str, sessions: sessionmaker[Session]) -> None:
        self._config, self._account_id, self._refresh_token = config, account_id, refresh_token
        self._sessions = sessions

    def __call__(self, access_token: str, expiry: datetime | None) -> None:
        self._save("access token", {"access_token": access_token, "token_expiry": iso(expiry)})

    def rotated(self, refresh_token: str) -> None:
        if self._save("rotated refresh token", {"refresh_token": refresh_token}):
            self._refresh_token = refresh_token

    def _save(self, what: str, changes: dict[str, Any]) -> bool:
        try:
            return self._update(self._sessions, changes)
        except SQLAlchemyError as exc:
            log.warning("could not store the %s: %s", what, error_summary(exc), extra={"account_id": self._account_id})
            return False

    def _update(self, sessions: sessionmaker[Session], changes: dict[str, Any]) -> bool:
        box = SecretBox.for_config(self._config.security)
        with sessions.begin() as s:
            sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == self._account_id).with_for_update())
            if sealed is None:
                return False
            secret = box.open(sealed)
            if secret.get("refresh_token") != self._refresh_token:
                return False  # reconnected meanwhile: the new grant wins
            secret.update(changes)
            s.execute(
                update(MailAccount)
                .where(MailAccount.id == self._account_id)
                .values(secret=box.seal(secret))
                .execution_options(synchronize_session=False)
            )
            return True
