"""Access tokens from a Microsoft refresh token, with msal: shared by the Graph and EWS backends.

``invalid_grant`` (AADSTS50173 revoked, 700082 expired, 65001 never consented...) and
``invalid_client`` become :class:`~providers.errors.AuthError`; an unreachable identity
platform, ``temporarily_unavailable`` or ``server_error`` become
:class:`~providers.errors.TransientError`. Microsoft rotates refresh tokens on every
refresh: ``settings.on_refresh_token_rotated(new_refresh_token)`` is called, then
``settings.on_token_refresh(access_token, expiry)``. What both backends take from the
``[microsoft]`` config is :meth:`MicrosoftBackend.options_with_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msal
import requests

from providers.base import Credentials, ProviderSettings
from providers.common.backend import Backend
from providers.common.http import MsalHttp
from providers.errors import AuthError, TransientError

if TYPE_CHECKING:
    from postroom.config import Config

EXPIRY_SKEW = timedelta(minutes=5)  # refresh this long before the stored expiry


class MicrosoftBackend(Backend):
    """The base of the Microsoft backends (Graph, EWS): what they take from ``[microsoft]``."""

    @classmethod
    def options_with_config(
        cls, options: Mapping[str, Any], credentials: Credentials, config: Config
    ) -> dict[str, Any]:
        """With a refresh token, the Entra ID app's id and authority unless the account names
        those its grant came from, and always the app's secret, which is never stored with the
        account; and the CA to trust for the identity platform and Graph (``ca_bundle``) when
        one is configured; with ``smtp_submission``, where Exchange Online's SMTP submission is
        (``smtp_host``, ``smtp_port``, ``smtp_security``) unless the account says."""
        options = dict(options)
        ms = config.microsoft
        if credentials.refresh_token:
            options.setdefault("client_id", ms.client_id)
            options.setdefault("authority", ms.authority)
            options["client_secret"] = ms.client_secret
        if ms.ca_file:
            options.setdefault("ca_bundle", ms.ca_file)
        if options.get("smtp_submission"):  # Exchange Online's SMTP submission (Graph accounts)
            for key in ("smtp_host", "smtp_port", "smtp_security"):
                options.setdefault(key, getattr(ms, key))
        return options


class MicrosoftTokens:
    """One account's access token for ``scopes``: the stored one while it is valid, else
    a fresh one from the refresh token (msal ``acquire_token_by_refresh_token``)."""

    def __init__(
        self,
        settings: ProviderSettings,
        session: requests.Session,
        *,
        authority: str,
        scopes: Sequence[str],
        verify: str | bool | None,
        where: str,
    ) -> None:
        creds = settings.credentials
        self._settings, self._session, self._verify, self._where = settings, session, verify, where
        self._authority, self._scopes = authority, list(scopes)
        self._refresh_token = creds.refresh_token
        self.access_token = creds.access_token
        expiry = creds.token_expiry
        self.expiry = expiry if expiry is None or expiry.tzinfo else expiry.replace(tzinfo=UTC)
        self._app: msal.ConfidentialClientApplication | None = None
        self._others: dict[tuple[str, ...], tuple[str, datetime]] = {}  # token_for: scopes -> (token, expiry)

    def token(self) -> str:
        """The access token, refreshed first when it is missing or expires within five minutes."""
        now = datetime.now(UTC)
        if self.access_token and (self.expiry is None or self.expiry - EXPIRY_SKEW > now):
            return self.access_token
        return self.refresh()

    def _msal(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            opts = self._settings.options
            try:
                self._app = msal.ConfidentialClientApplication(
                    str(opts["client_id"]),
                    client_credential=str(opts["client_secret"]),
                    authority=self._authority,
                    http_client=MsalHttp(self._session, self._verify, self._settings.timeout),
                    instance_discovery=opts.get("instance_discovery"),
                )
            except requests.RequestException as exc:
                raise TransientError(f"{self._where}: the identity platform is unreachable: {exc!r}") from exc
            except ValueError as exc:  # msal: the authority's OpenID configuration could not be read
                if "HTTP status: 4" in str(exc) or "invalid_instance" in str(exc):
                    raise AuthError(f"{self._where}: the authority {self._authority} refused us: {exc}") from exc
                raise TransientError(f"{self._where}: the authority {self._authority} failed: {exc}") from exc
        return self._app

    def refresh(self) -> str:
        """A fresh access token from the refresh token; rotated refresh tokens are reported."""
        self.access_token, self.expiry = self._redeem(self._scopes)
        if self._settings.on_token_refresh is not None:
            self._settings.on_token_refresh(self.access_token, self.expiry)
        return self.access_token

    def token_for(self, scopes: Sequence[str], *, fresh: bool = False) -> str:
        """An access token for another resource from the same refresh token, e.g. Exchange
        Online's ``["https://outlook.office.com/SMTP.Send"]`` (the identity platform issues a
        token for one resource at a time): kept until five minutes before it expires, or
        redeemed afresh with ``fresh``. It is not the account's stored token, so it is never
        reported through ``on_token_refresh``; a rotated refresh token is, as always.

        >>> tokens.token_for(["https://outlook.office.com/SMTP.Send"])     # doctest: +SKIP
        'eyJ0eXAiOiJKV1Qi...'
        """
        key = tuple(scopes)
        held = self._others.get(key)
        if held is not None and not fresh and held[1] - EXPIRY_SKEW > datetime.now(UTC):
            return held[0]
        token, expiry = self._redeem(scopes)
        self._others[key] = (token, expiry)
        return token

    def _redeem(self, scopes: Sequence[str]) -> tuple[str, datetime]:
        if not self._refresh_token:
            raise AuthError(f"{self._where}: the access token expired and there is no refresh token.")
        try:
            result = self._msal().acquire_token_by_refresh_token(self._refresh_token, scopes=list(scopes))
        except requests.RequestException as exc:
            raise TransientError(f"{self._where}: token refresh failed: {exc!r}") from exc
        if "access_token" not in result:
            error = str(result.get("error", "unknown_error"))
            description = str(result.get("error_description", "")).split(" Trace ID:")[0]
            text = f"{self._where}: Microsoft refused the grant: {error}: {description}"
            if error in ("temporarily_unavailable", "server_error"):
                raise TransientError(text)
            raise AuthError(text)
        expiry = datetime.now(UTC) + timedelta(seconds=int(result.get("expires_in", 3600)))
        rotated = result.get("refresh_token")
        if rotated and rotated != self._refresh_token:
            self._refresh_token = str(rotated)
            if self._settings.on_refresh_token_rotated is not None:
                self._settings.on_refresh_token_rotated(self._refresh_token)
        return str(result["access_token"]), expiry
