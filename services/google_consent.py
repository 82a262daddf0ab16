"""Google's OAuth consent for connecting a Gmail mailbox, on the real ``google_auth_oauthlib.flow.Flow``.

Two steps, one per request of the connect flow (:mod:`web.blueprints.google_connect`):

1. :func:`start` builds the consent URL: authorization code with PKCE (S256;
   the code verifier is handed back to be kept in the signed session),
   ``access_type=offline`` (a refresh token, so Postroom syncs while nobody is
   signed in), ``prompt=consent`` (Google then issues a refresh token on every
   connect, also when reconnecting) and ``include_granted_scopes=true``.
2. :func:`finish` exchanges the code for tokens, checks that the Gmail scope was
   granted (Google's consent screen lets the user untick it) and asks Gmail for
   the mailbox's address (``users.getProfile``).

Scopes: only ``https://www.googleapis.com/auth/gmail.modify`` — reading and
labelling mail (sync: messages.list/get, history.list, labels.list), sending
(messages.send), placing a copy in Sent (messages.insert), moving to Trash
(messages.trash) and ``users.getProfile``, which gives the mailbox's address. No
``openid email``: getProfile answers with the address actually synced, under
the grant already asked for. Not ``https://mail.google.com/``: it would allow
permanent deletion (messages.delete), which Postroom does not need; it trashes. Except
as an opt-in: with ``google.smtp_send`` the consent also asks for it, because Gmail's SMTP
server takes no narrower scope, and a grant that includes it is stored with
``smtp_submission`` on (tracked sends over SMTP, docs/gmail.md); a user who unticks it still
connects, with tracked sends over the API (:attr:`GoogleGrant.smtp_submission` False).

Plain http endpoints are accepted only for this machine (the config checks it):
oauthlib refuses http unless ``OAUTHLIB_INSECURE_TRANSPORT`` is set, so it is set
only around the calls that talk to such an endpoint, under a lock, and restored
at once; with Google's https endpoints it is never touched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from postroom.config import GoogleConfig
from postroom.errors import UserError
from postroom.urls import is_loopback_host

GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
MAIL_SCOPE = "https://mail.google.com/"  # full access; Gmail's SMTP submission needs it
SCOPES = (GMAIL_SCOPE,)
SUFFICIENT = {GMAIL_SCOPE, MAIL_SCOPE}  # either lets Postroom sync and send
_INSECURE = "OAUTHLIB_INSECURE_TRANSPORT"
_ENV_LOCK = threading.Lock()


class ConnectError(UserError):
    """The consent flow cannot go on; the message says why in one sentence."""


@dataclass(frozen=True)
class Consent:
    """Where to send the browser, and what to keep in the session until it comes back."""

    url: str
    state: str
    code_verifier: str


@dataclass(frozen=True)
class GoogleGrant:
    email: str
    refresh_token: str
    access_token: str
    expiry: datetime | None
    scopes: frozenset[str]

    @property
    def smtp_submission(self) -> bool:
        """Whether the grant lets Postroom send over Gmail's SMTP (it includes https://mail.google.com/).

        >>> GoogleGrant("r@x.test", "1//r", "ya29", None, frozenset({GMAIL_SCOPE})).smtp_submission
        False
        """
        return MAIL_SCOPE in self.scopes


def scopes(google: GoogleConfig) -> tuple[str, ...]:
    """What the consent asks for: gmail.modify, and https://mail.google.com/ with ``google.smtp_send``.

    >>> scopes(GoogleConfig(smtp_send=True))
    ('https://www.googleapis.com/auth/gmail.modify', 'https://mail.google.com/')
    """
    return (*SCOPES, MAIL_SCOPE) if google.smtp_send else SCOPES


def _flow(google: GoogleConfig, redirect_uri: str, **kwargs: Any) -> Any:
    from google_auth_oauthlib.flow import Flow

    if not (google.client_id and google.client_secret):
        raise ConnectError(
            "Connecting Gmail is not set up: set google.client_id and google.client_secret (see docs/gmail.md)."
        )
    client = {
        "web": {
            "client_id": google.client_id,
            "client_secret": google.client_secret,
            "auth_uri": google.auth_uri,
            "token_uri": google.token_uri,
            "redirect_uris": [redirect_uri],
        }
    }
    return Flow.from_client_config(client, scopes=list(scopes(google)), redirect_uri=redirect_uri, **kwargs)


@contextmanager
def _http_allowed_for_loopback(url: str) -> Iterator[None]:
    parts = urlsplit(url)
    if parts.scheme == "https":
        yield
        return
    if not is_loopback_host(parts.hostname or ""):  # the config refuses this already
        raise ConnectError(f"Refusing to send OAuth secrets over plain http to {parts.hostname}.")
    with _ENV_LOCK:
        before = os.environ.get(_INSECURE)
        os.environ[_INSECURE] = "1"
        try:
            yield
        finally:
            if before is None:
                del os.environ[_INSECURE]
            else:
                os.environ[_INSECURE] = before


def start(google: GoogleConfig, redirect_uri: str) -> Consent:
    flow = _flow(google, redirect_uri)
    with _http_allowed_for_loopback(google.auth_uri):
        url, state = flow.authorization_url(access_type="offline", include_granted_scopes="true", prompt="consent")
    return Consent(url, state, flow.code_verifier)


def finish(google: GoogleConfig, redirect_uri: str, code: str, code_verifier: str, timeout: float) -> GoogleGrant:
    """Exchange the authorization code, check the scopes, learn the address."""
    from oauthlib.oauth2 import OAuth2Error
    from requests import RequestException

    flow = _flow(google, redirect_uri, code_verifier=code_verifier)
    try:
        with _http_allowed_for_loopback(google.token_uri):
            try:
                flow.fetch_token(code=code, timeout=timeout)
            except Warning as changed:  # "Scope has changed": granular consent; checked below
                flow.oauth2session.token = changed.token  # type: ignore[attr-defined]
    except OAuth2Error as exc:
        raise ConnectError(f"Google did not accept the sign-in ({exc.error}); please connect again.") from None
    except RequestException as exc:
        raise ConnectError(f"Google's token endpoint could not be reached: {exc.__class__.__name__}.") from None
    token = flow.oauth2session.token
    scope = token.get("scope", "")
    granted = frozenset(scope.split() if isinstance(scope, str) else scope)
    if not granted & SUFFICIENT:
        raise ConnectError(
            "Postroom needs permission to read, send and organise mail in Gmail; "
            "connect again and leave that box ticked."
        )
    if not token.get("refresh_token"):
        raise ConnectError("Google issued no refresh token, so Postroom could not sync later; please connect again.")
    credentials = flow.credentials
    expiry = credentials.expiry.replace(tzinfo=UTC) if credentials.expiry else None
    return GoogleGrant(
        email=mailbox_address(google, credentials, timeout),
        refresh_token=token["refresh_token"],
        access_token=token["access_token"],
        expiry=expiry,
        scopes=granted,
    )


def mailbox_address(google: GoogleConfig, credentials: Any, timeout: float) -> str:
    """The address of the mailbox the grant opens (Gmail ``users.getProfile``), through the
    Gmail backend's own service (:func:`providers.gmail_calls.build_service`)."""
    import google_auth_httplib2
    import httplib2
    from googleapiclient.errors import HttpError

    from providers.gmail_calls import build_service

    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))
    try:
        service = build_service(google.api_root, http)
        profile = service.users().getProfile(userId="me").execute()
    except HttpError as exc:
        raise ConnectError(f"Gmail did not tell Postroom the mailbox's address ({exc.status_code}).") from None
    except (OSError, httplib2.HttpLib2Error) as exc:
        raise ConnectError(f"Gmail could not be reached: {exc.__class__.__name__}.") from None
    finally:
        for conn in list(http.http.connections.values()):
            conn.close()
    return str(profile["emailAddress"])
