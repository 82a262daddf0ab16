"""OAuth2 for the EWS backend: how exchangelib 5.6 is made to send our bearer and nothing more.

exchangelib's OAuth credentials can fetch and refresh tokens themselves, but only against
``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`` (hard-coded in
``BaseOAuth2Credentials.token_url``) and without telling us about rotated refresh tokens.
So :class:`BearerCredentials` carries only an access token -- no client id, secret or
``expires_at`` -- and exchangelib's requests-oauthlib session just adds
``Authorization: Bearer ...``. Tokens come from :mod:`providers.microsoft_tokens`;
:class:`RefreshOn401` is the fail-fast retry policy that, on a 401, refreshes once and asks
exchangelib to resend the request with the new token.
"""

from __future__ import annotations

from typing import Any

from exchangelib import FailFast, OAuth2AuthorizationCodeCredentials
from oauthlib.oauth2 import TokenExpiredError

from providers.microsoft_tokens import MicrosoftTokens

# The delegated permission Microsoft documents for EWS ("Authenticate an EWS application by
# using OAuth"); exchangelib's OAuth2LegacyCredentials asks for the same.
EWS_SCOPES = ("https://outlook.office365.com/EWS.AccessAsUser.All",)


class BearerCredentials(OAuth2AuthorizationCodeCredentials):  # type: ignore[misc]
    """An access token for exchangelib to send as it is.

    exchangelib caches one ``Protocol`` (sessions, retry policy) per endpoint and
    credentials, comparing credentials by value. These compare by identity instead, so
    every provider gets a Protocol of its own -- with its own token and policy -- and
    removes it from the cache when it closes.
    """

    def __init__(self, access_token: str) -> None:
        super().__init__(access_token={"access_token": access_token, "token_type": "Bearer"})

    def use(self, access_token: str) -> None:
        """Sessions created from now on send ``access_token``."""
        with self.lock:
            self.access_token = {"access_token": access_token, "token_type": "Bearer"}

    @property
    def bearer(self) -> str:
        return str(self.access_token["access_token"])

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class RefreshOn401(FailFast):  # type: ignore[misc]
    """:class:`exchangelib.FailFast`, except that a 401 for a token we have not just
    refreshed gets a fresh token (msal) and a resend.

    Raising ``TokenExpiredError`` from here is exchangelib's own "token expired" path:
    ``post_ratelimited`` retires the session (its replacement is built from the
    credentials, which already hold the new token) and ``_get_elements`` resends at once.
    A 401 for the token fetched after a 401 is refused for good: ``UnauthorizedError``.
    """

    def __init__(self, credentials: BearerCredentials, tokens: MicrosoftTokens) -> None:
        super().__init__()
        self._credentials, self._tokens = credentials, tokens
        self._after_401: str | None = None

    def raise_response_errors(self, response: Any) -> None:
        if response.status_code == 401 and b"currently locked out" not in response.content:
            sent = str(response.request.headers.get("Authorization", "")).partition(" ")[2]
            if sent and sent != self._after_401:
                self._after_401 = self._tokens.refresh()  # AuthError on invalid_grant
                self._credentials.use(self._after_401)
                raise TokenExpiredError(description="EWS answered 401; resending with a refreshed token")
        super().raise_response_errors(response)
