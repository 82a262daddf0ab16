"""The local Google authorization server refuses what Google refuses, so the connect flow is tested
against the real rules: registered redirect URIs, PKCE S256, single-use codes, scopes, revocation."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import requests

from providers.errors import AuthError
from standins.gmail import GmailStandIn
from standins.google_oauth import GoogleOAuthStandIn, parse_redirect
from standins.httpserver import ServerThread
from tests.rig.messages import make_message
from tests.standins.gmail_rig import ADDRESS, gmail_rig

REDIRECT = "http://127.0.0.1:9/callback"
MODIFY = "https://www.googleapis.com/auth/gmail.modify"


@dataclass
class Auth:
    gmail: GmailStandIn
    oauth: GoogleOAuthStandIn
    server: ServerThread

    def authorize(self, verifier: str = "v" * 43, **overrides: str) -> requests.Response:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "client_id": self.gmail.client_id,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": MODIFY,
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "access_type": "offline",
            "prompt": "consent",
            **overrides,
        }
        params = {k: v for k, v in params.items() if v}
        return requests.get(f"{self.server.url}/o/oauth2/auth?{urlencode(params)}", allow_redirects=False, timeout=10)

    def code(self, verifier: str = "v" * 43, **overrides: str) -> str:
        resp = self.authorize(verifier, **overrides)
        assert resp.status_code == 302, resp.text
        return parse_redirect(resp.headers["Location"])["code"]

    def token(self, **form: str) -> requests.Response:
        auth = (self.gmail.client_id, self.gmail.client_secret)
        return requests.post(f"{self.server.url}/token", data=form, auth=auth, timeout=10)

    def exchange(self, code: str, verifier: str = "v" * 43, redirect_uri: str = REDIRECT) -> requests.Response:
        return self.token(grant_type="authorization_code", code=code, code_verifier=verifier, redirect_uri=redirect_uri)


@pytest.fixture
def auth() -> Iterator[Auth]:
    gmail = GmailStandIn()
    oauth = GoogleOAuthStandIn(gmail, redirect_uris=[REDIRECT])
    oauth.user = ADDRESS
    with oauth.serve() as server:
        yield Auth(gmail, oauth, server)
    assert oauth.schema_violations == []


@pytest.mark.parametrize(
    ("overrides", "status", "title"),
    [
        ({"redirect_uri": "https://evil.test/cb"}, 400, "redirect_uri_mismatch"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"code_challenge": ""}, 400, "invalid_request"),
        ({"code_challenge_method": "plain"}, 400, "invalid_request"),
        ({"scope": "https://www.googleapis.com/auth/drive.everything"}, 400, "invalid_scope"),
        ({"response_type": "token"}, 400, "invalid_request"),
    ],
)
def test_bad_consent_requests_get_an_error_page_not_a_redirect(
    auth: Auth, overrides: dict[str, str], status: int, title: str
) -> None:
    resp = auth.authorize(**overrides)
    assert resp.status_code == status and "Location" not in resp.headers
    assert f"Error {status}: {title}" in resp.text


def test_code_needs_the_pkce_verifier_the_same_redirect_and_works_once(auth: Auth) -> None:
    code = auth.code()
    wrong = auth.exchange(code, verifier="w" * 43)
    assert wrong.status_code == 400 and wrong.json()["error_description"] == "Invalid code verifier."
    assert auth.exchange(code, redirect_uri="http://127.0.0.1:9/other").json()["error"] == "redirect_uri_mismatch"
    good = auth.exchange(code).json()
    assert good["refresh_token"].startswith("1//") and good["scope"] == MODIFY
    again = auth.exchange(code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_refresh_token_only_with_offline_access_and_consent(auth: Auth) -> None:
    first = auth.exchange(auth.code(prompt="")).json()  # first consent: a refresh token
    assert "refresh_token" in first
    assert "refresh_token" not in auth.exchange(auth.code(prompt="")).json()  # consented before, no prompt
    assert "refresh_token" not in auth.exchange(auth.code(access_type="")).json()  # online access
    assert "refresh_token" in auth.exchange(auth.code()).json()  # prompt=consent: always


def test_deny_returns_access_denied_with_the_state(auth: Auth) -> None:
    auth.oauth.decision = "deny"
    resp = auth.authorize()
    assert resp.status_code == 302
    assert parse_redirect(resp.headers["Location"]) == {"error": "access_denied", "state": "s1"}


def test_refresh_and_revoke_share_the_gmail_grant(auth: Auth) -> None:
    refresh_token = auth.exchange(auth.code()).json()["refresh_token"]
    assert auth.gmail.live_grant(refresh_token) == (ADDRESS, frozenset({MODIFY}))
    refreshed = auth.token(grant_type="refresh_token", refresh_token=refresh_token)
    assert refreshed.status_code == 200 and refreshed.json()["scope"] == MODIFY
    revoke = requests.post(f"{auth.server.url}/revoke", data={"token": refresh_token}, timeout=10)
    assert revoke.status_code == 200
    dead = auth.token(grant_type="refresh_token", refresh_token=refresh_token)
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    bad_client = requests.post(
        f"{auth.server.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(auth.gmail.client_id, "not-the-secret"),
        timeout=10,
    )
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"


def test_gmail_modify_can_trash_but_not_delete_for_good() -> None:
    with gmail_rig() as rig:
        limited = rig.standin.grant(ADDRESS, [MODIFY, "openid"])
        first, second = rig.deliver(make_message()), rig.deliver(make_message())
        with rig.provider(limited) as provider:
            inbox = next(f for f in provider.list_folders() if f.name == "INBOX")
            provider.delete(inbox, [first])
            with pytest.raises(AuthError, match="403"):
                provider.delete(inbox, [second], for_good=True)
        assert [m.id for m in rig.standin.mailbox(ADDRESS).by_label("TRASH")] == [first]
        assert second in rig.standin.mailbox(ADDRESS).messages
