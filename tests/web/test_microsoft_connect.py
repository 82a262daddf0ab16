"""Connecting a Microsoft 365 mailbox through Microsoft's consent: the Flask test client drives
/connect/microsoft, the real msal talks to the identity stand-in over HTTPS (trusting its test CA),
and a `requests` "browser" signs in (auto-approve, or cancels consent). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from postroom.config import Config, MicrosoftConfig
from postroom.crypto import SecretBox
from postroom.models import MailAccount
from sync.scheduler import sync_account
from tests.rig.messages import make_message
from tests.standins.graph_rig import ADDRESS, GraphRig, graph_rig
from tests.web.microsoft_rig import microsoft_config
from web import create_app

CALLBACK = "http://localhost/connect/microsoft/callback"  # the Flask test client's host


@dataclass
class Connect:
    config: Config
    client: FlaskClient
    rig: GraphRig

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        return self.client.application.extensions["postroom"]["sessions"]

    def consent(self) -> dict[str, str]:
        """/connect/microsoft, then Microsoft's sign-in page, which posts its answer back: the answer."""
        start = self.client.get("/connect/microsoft")
        assert start.status_code == 302, start.get_data(as_text=True)
        page = requests.get(start.headers["Location"], allow_redirects=False, verify=self.rig.ca_file, timeout=10)
        assert page.status_code == 200, page.text
        assert f'action="{CALLBACK}"' in page.text  # a self-submitting form (response_mode=form_post)
        return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))

    def callback(self, answer: dict[str, str], as_json: bool = True):  # type: ignore[no-untyped-def]
        accept = "application/json" if as_json else "text/html"
        return self.client.post("/connect/microsoft/callback", data=answer, headers={"Accept": accept})

    def account(self, account_id: int) -> MailAccount:
        with self.sessions() as s:
            return s.get_one(MailAccount, account_id)

    def secret(self, account_id: int) -> dict[str, str]:
        return SecretBox(self.config.security.secret_key).open(self.account(account_id).secret)

    def accounts(self) -> list[MailAccount]:
        with self.sessions() as s:
            return list(s.scalars(select(MailAccount)))


@pytest.fixture
def connect(config: Config) -> Iterator[Connect]:
    with graph_rig() as rig:
        rig.identity.redirect_uris = {CALLBACK}
        rig.identity.auto_approve = ADDRESS
        cfg = dataclasses.replace(config, microsoft=microsoft_config(rig))
        yield Connect(cfg, create_app(cfg).test_client(), rig)


def test_consent_stores_a_graph_account_with_its_grant_sealed_and_it_syncs(connect: Connect) -> None:
    start = connect.client.get("/connect/microsoft")
    asked = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["Location"]).query).items()}
    assert set(asked["scope"].split()) == {
        "https://graph.microsoft.com/Mail.ReadWrite",
        "https://graph.microsoft.com/Mail.Send",
        "https://graph.microsoft.com/User.Read",
        "offline_access",  # added by msal: a refresh token
        "openid",
        "profile",
    }
    assert asked["code_challenge_method"] == "S256" and asked["redirect_uri"] == CALLBACK
    assert (asked["response_mode"], asked["prompt"]) == ("form_post", "select_account")
    pending = start.headers["Set-Cookie"]
    assert "Path=/connect/microsoft/callback" in pending and "Secure" in pending and "SameSite=None" in pending

    resp = connect.callback(connect.consent())
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["email"] == ADDRESS
    account = connect.account(data["id"])
    assert (account.provider, account.status, account.email) == ("graph", "active", ADDRESS)
    ms = connect.config.microsoft
    assert account.settings == {
        "authority": ms.authority,
        "graph_root": ms.graph_root,
        "client_id": ms.client_id,
        "instance_discovery": False,
    }
    secret = connect.secret(data["id"])
    assert connect.rig.identity.user_for(secret["access_token"])[0] == ADDRESS
    assert datetime.fromisoformat(secret["token_expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    for token in (secret["refresh_token"], secret["access_token"], ms.client_secret):
        assert token.encode() not in account.secret
        assert token not in str(account.settings)

    connect.rig.deliver(make_message(message_id="<hello@x.test>", subject="Hello"))
    result = sync_account(connect.config, connect.sessions, data["id"])
    assert result.ok and result.new == 1, result.error


def test_success_page_for_a_browser_names_the_mailbox(connect: Connect) -> None:
    resp = connect.callback(connect.consent(), as_json=False)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert f"{ADDRESS} is connected" in resp.get_data(as_text=True)


def test_declining_consent_is_a_400_sentence_and_stores_nothing(connect: Connect) -> None:
    connect.rig.identity.decline_consent = True
    resp = connect.callback(connect.consent(), as_json=False)
    assert resp.status_code == 400
    page = html.unescape(resp.get_data(as_text=True))
    assert "<p>You declined access in Microsoft's consent screen, so no mailbox was connected.</p>" in page
    assert connect.accounts() == []


def test_a_callback_with_the_wrong_state_or_no_pending_sign_in_is_refused(connect: Connect) -> None:
    answer = connect.consent()
    resp = connect.callback({**answer, "state": "x" + answer["state"]})
    stale = "This sign-in has expired or was started in another browser; please start again from Connect Microsoft 365."
    assert (resp.status_code, resp.get_json()) == (400, {"error": stale})
    # the pending sign-in was used up: the genuine answer no longer works either
    assert connect.callback(answer).get_json() == {"error": stale}
    fresh = create_app(connect.config).test_client()  # a browser that never started the flow
    resp = fresh.post("/connect/microsoft/callback", data=answer, headers={"Accept": "application/json"})
    assert resp.status_code == 400
    assert connect.accounts() == []


def test_a_code_microsoft_rejects_is_a_400_sentence_with_the_aadsts_code(connect: Connect) -> None:
    resp = connect.callback({**connect.consent(), "code": "bad"})
    assert resp.status_code == 400
    assert resp.get_json() == {
        "error": "Microsoft did not accept the sign-in (invalid_grant, AADSTS9002313); please connect again."
    }
    assert connect.accounts() == []


def test_reconnecting_replaces_the_grant_and_resumes_syncing(connect: Connect) -> None:
    first = connect.callback(connect.consent()).get_json()
    old = connect.secret(first["id"])["refresh_token"]
    connect.rig.identity.revoke(old)  # the user removed Postroom in My Apps, or an admin revoked sessions
    connect.rig.identity.expire_access_tokens()
    failed = sync_account(connect.config, connect.sessions, first["id"])
    assert not failed.ok and "AADSTS50173" in (failed.error or "")
    assert connect.account(first["id"]).status == "reconnect-needed"

    again = connect.callback(connect.consent()).get_json()
    assert again == first  # the same account, not a second one
    account = connect.account(first["id"])
    assert account.status == "active" and account.failure_count == 0 and account.last_error is None
    assert account.next_sync_at is not None and account.next_sync_at <= datetime.now(UTC)
    assert connect.secret(first["id"])["refresh_token"] != old
    assert sync_account(connect.config, connect.sessions, first["id"]).ok


def test_connect_without_a_microsoft_app_is_one_sentence(connect: Connect) -> None:
    bare = dataclasses.replace(connect.config, microsoft=MicrosoftConfig())
    resp = create_app(bare).test_client().get("/connect/microsoft", headers={"Accept": "application/json"})
    assert resp.status_code == 503
    assert resp.get_json()["error"] == (
        "Connecting Microsoft 365 is not set up: set microsoft.client_id and microsoft.client_secret "
        "(see docs/microsoft.md)."
    )


def test_an_untrusted_authority_certificate_is_refused_not_a_traceback(connect: Connect) -> None:
    untrusting = dataclasses.replace(
        connect.config, microsoft=dataclasses.replace(connect.config.microsoft, ca_file=None)
    )
    resp = create_app(untrusting).test_client().get("/connect/microsoft", headers={"Accept": "application/json"})
    assert resp.status_code == 503
    assert resp.get_json() == {"error": "Microsoft's sign-in service could not be reached: SSLError."}
