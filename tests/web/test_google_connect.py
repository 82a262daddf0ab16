"""Connecting Gmail through Google's consent: the Flask test client drives /connect/google, the real
google_auth_oauthlib Flow talks to the local authorization server, and a `requests` "browser" clicks
through the consent screen (auto-approve, or deny). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from postroom.config import Config, GoogleConfig
from postroom.crypto import SecretBox
from postroom.models import MailAccount
from standins.gmail import GmailStandIn
from standins.google_oauth import GoogleOAuthStandIn
from tests.sync.helpers import sync_account
from tests.web.signin import signed_in
from web import create_app

RITA = "rita@example.test"
CALLBACK = "http://localhost/connect/google/callback"  # the Flask test client's host


@dataclass
class Connect:
    config: Config
    client: FlaskClient
    gmail: GmailStandIn
    oauth: GoogleOAuthStandIn

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        return self.client.application.extensions["postroom"]["sessions"]

    def consent(self) -> str:
        """/connect/google, then the consent screen; returns the redirect back (path + query)."""
        start = self.client.get("/connect/google")
        assert start.status_code == 302, start.get_data(as_text=True)
        screen = requests.get(start.headers["Location"], allow_redirects=False, timeout=10)
        assert screen.status_code == 302, screen.text
        back = urlsplit(screen.headers["Location"])
        assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
        return f"{back.path}?{back.query}"

    def callback(self, path: str, as_json: bool = True):  # type: ignore[no-untyped-def]
        return self.client.get(path, headers={"Accept": "application/json" if as_json else "text/html"})

    def account(self, account_id: int) -> MailAccount:
        with self.sessions() as s:
            return s.get_one(MailAccount, account_id)

    def secret(self, account_id: int) -> dict[str, str]:
        return SecretBox(self.config.security.secret_key).open(self.account(account_id).secret)


@pytest.fixture
def connect(config: Config) -> Iterator[Connect]:
    gmail = GmailStandIn()
    gmail.add_user(RITA)
    oauth = GoogleOAuthStandIn(gmail, redirect_uris=[CALLBACK])
    oauth.user = RITA
    with gmail.serve() as api, oauth.serve() as accounts:
        google = GoogleConfig(
            client_id=gmail.client_id,
            client_secret=gmail.client_secret,
            auth_uri=accounts.url + "/o/oauth2/auth",
            token_uri=accounts.url + "/token",
            api_root=api.url + "/",
        )
        cfg = dataclasses.replace(config, google=google)
        app = create_app(cfg)
        yield Connect(cfg, signed_in(app), gmail, oauth)
    assert gmail.schema_violations == [] and oauth.schema_violations == []


def test_consent_stores_the_account_with_its_grant_sealed_and_it_syncs(connect: Connect) -> None:
    start = connect.client.get("/connect/google")
    asked = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["Location"]).query).items()}
    assert asked["scope"] == "https://www.googleapis.com/auth/gmail.modify"
    assert (asked["access_type"], asked["prompt"], asked["include_granted_scopes"]) == ("offline", "consent", "true")
    assert asked["code_challenge_method"] == "S256" and asked["redirect_uri"] == CALLBACK

    resp = connect.callback(connect.consent())
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["email"] == RITA
    account = connect.account(data["id"])
    assert (account.provider, account.status, account.email) == ("gmail", "active", RITA)
    assert account.settings == {
        "api_root": connect.config.google.api_root,
        "token_uri": connect.config.google.token_uri,
        "client_id": connect.gmail.client_id,
    }
    secret = connect.secret(data["id"])
    assert secret["refresh_token"].startswith("1//") and secret["access_token"].startswith("ya29.")
    assert datetime.fromisoformat(secret["token_expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    for token in (secret["refresh_token"], secret["access_token"], connect.gmail.client_secret):
        assert token.encode() not in account.secret
        assert token not in str(account.settings)

    connect.gmail.deliver(RITA, b"Message-ID: <hello@x.test>\r\nSubject: Hello\r\nFrom: a@b.test\r\n\r\nHi\r\n")
    result = sync_account(connect.config, connect.sessions, data["id"])
    assert result.ok, result.error
    assert {f.name: f.new for f in result.folders if f.new} == {"INBOX": 1, "ALL": 1}


def test_success_page_for_a_browser_names_the_mailbox(connect: Connect) -> None:
    resp = connect.callback(connect.consent(), as_json=False)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert f"{RITA} is connected" in resp.get_data(as_text=True)


def test_declining_consent_is_a_400_sentence_and_stores_nothing(connect: Connect) -> None:
    connect.oauth.decision = "deny"
    resp = connect.callback(connect.consent(), as_json=False)
    assert resp.status_code == 400
    page = html.unescape(resp.get_data(as_text=True))
    assert "<p>You declined access in Google's consent screen, so no mailbox was connected.</p>" in page
    with connect.sessions() as s:
        assert s.scalars(select(MailAccount)).all() == []


def test_a_callback_with_the_wrong_state_or_no_pending_sign_in_is_refused(connect: Connect) -> None:
    path = connect.consent()
    forged = path.replace("state=", "state=x", 1)
    resp = connect.callback(forged)
    assert resp.status_code == 400 and "has expired or was started in another browser" in resp.get_json()["error"]
    # the pending sign-in was used up: the genuine redirect no longer works either
    assert connect.callback(path).status_code == 400
    fresh = signed_in(create_app(connect.config))  # a browser that never started the flow
    assert fresh.get(path, headers={"Accept": "application/json"}).status_code == 400
    with connect.sessions() as s:
        assert s.scalars(select(MailAccount)).all() == []


def test_a_code_google_rejects_is_a_400_sentence(connect: Connect) -> None:
    path = connect.consent()
    resp = connect.callback(path.replace("code=", "code=bad", 1))
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "Google did not accept the sign-in (invalid_grant); please connect again."}


def test_unticking_the_gmail_permission_is_explained(connect: Connect) -> None:
    connect.oauth.granted_scopes = frozenset()  # the user unticked the only box
    resp = connect.callback(connect.consent())
    assert resp.status_code == 400
    assert "needs permission to read, send and organise mail in Gmail" in resp.get_json()["error"]


def test_reconnecting_replaces_the_grant_and_resumes_syncing(connect: Connect) -> None:
    first = connect.callback(connect.consent()).get_json()
    old = connect.secret(first["id"])["refresh_token"]
    connect.gmail.revoke_token(old)  # the user removed Postroom's access in their Google account
    connect.gmail.expire_access_tokens()
    failed = sync_account(connect.config, connect.sessions, first["id"])
    assert not failed.ok and connect.account(first["id"]).status == "reconnect-needed"

    again = connect.callback(connect.consent()).get_json()
    assert again == first  # the same account, not a second one
    account = connect.account(first["id"])
    assert account.status == "active" and account.failure_count == 0 and account.last_error is None
    assert account.next_sync_at is not None and account.next_sync_at <= datetime.now(UTC)
    assert connect.secret(first["id"])["refresh_token"] != old
    assert sync_account(connect.config, connect.sessions, first["id"]).ok


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "page"])
def test_reconnecting_a_disabled_account_stores_the_grant_but_keeps_it_disabled(
    connect: Connect, as_json: bool
) -> None:
    first = connect.callback(connect.consent()).get_json()
    old = connect.secret(first["id"])["refresh_token"]
    with connect.sessions.begin() as s:  # an administrator disabled the account
        account = s.get_one(MailAccount, first["id"])
        account.status, account.next_sync_at = "disabled", None

    resp = connect.callback(connect.consent(), as_json=as_json)
    account = connect.account(first["id"])
    assert (account.status, account.next_sync_at) == ("disabled", None)
    assert connect.secret(first["id"])["refresh_token"] != old  # the new grant is kept for when it is enabled
    sentence = f"{RITA} is reconnected, but an administrator has disabled it, so Postroom does not sync it."
    assert resp.status_code == 200
    if as_json:
        assert resp.get_json() == {"id": first["id"], "email": RITA, "status": "disabled", "message": sentence}
    else:
        assert f"<p>{sentence}</p>" in html.unescape(resp.get_data(as_text=True))


def test_connect_without_a_google_client_is_one_sentence(connect: Connect) -> None:
    bare = dataclasses.replace(connect.config, google=GoogleConfig())
    resp = signed_in(create_app(bare)).get("/connect/google", headers={"Accept": "application/json"})
    assert resp.status_code == 503
    assert resp.get_json()["error"] == (
        "Connecting Gmail is not set up: set google.client_id and google.client_secret (see docs/gmail.md)."
    )


def test_session_cookie_key_is_not_the_secret_key(connect: Connect) -> None:
    app = connect.client.application
    assert app.config["SECRET_KEY"] not in ("", connect.config.security.secret_key)
    assert len(app.config["SECRET_KEY"]) == 64
