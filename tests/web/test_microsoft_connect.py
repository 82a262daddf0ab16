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
from services.accounts import add_graph_account
from tests.rig.messages import make_message
from tests.standins.graph_rig import ADDRESS, GraphRig, graph_rig
from tests.sync.helpers import sync_account
from tests.web.microsoft_rig import change_mail, give_address_to_someone_else, microsoft_config
from tests.web.signin import signed_in
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

    def with_microsoft(self, tenant: str | None = None, **settings: object) -> Connect:
        """The same database and stand-ins, with other ``[microsoft]`` settings (a new app)."""
        cfg = dataclasses.replace(self.config, microsoft=microsoft_config(self.rig, tenant, **settings))
        return Connect(cfg, signed_in(create_app(cfg)), self.rig)

    def disable(self, account_id: int) -> None:
        """What an administrator does to an account that must not sync."""
        with self.sessions.begin() as s:
            account = s.get_one(MailAccount, account_id)
            account.status, account.next_sync_at = "disabled", None


@pytest.fixture
def connect(config: Config) -> Iterator[Connect]:
    with graph_rig() as rig:
        rig.identity.redirect_uris = {CALLBACK}
        rig.identity.auto_approve = ADDRESS
        cfg = dataclasses.replace(config, microsoft=microsoft_config(rig))
        yield Connect(cfg, signed_in(create_app(cfg)), rig)


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
    rita = connect.rig.identity.users[ADDRESS]
    assert account.settings == {
        "authority": ms.authority,
        "graph_root": ms.graph_root,
        "client_id": ms.client_id,
        "instance_discovery": False,
        "tenant_id": rita.tenant_id,  # who signed in: the ID token's tid and oid
        "object_id": rita.oid,
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
    fresh = signed_in(create_app(connect.config))  # a browser that never started the flow
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


def test_a_changed_mail_attribute_reconnects_the_same_account_under_the_new_address(connect: Connect) -> None:
    first = connect.callback(connect.consent()).get_json()
    connect.rig.deliver(make_message(message_id="<before@x.test>", subject="Before"))
    assert sync_account(connect.config, connect.sessions, first["id"]).new == 1
    # Rita marries; the administrator changes her primary SMTP address (she still signs in as before)
    change_mail(connect.rig, ADDRESS, "rita.jones@contoso.test")

    again = connect.callback(connect.consent()).get_json()
    assert [(a.id, a.email) for a in connect.accounts()] == [(first["id"], "rita.jones@contoso.test")]  # not a second
    assert (again["id"], again["email"], again["status"]) == (first["id"], "rita.jones@contoso.test", "active")
    connect.rig.graph.mailbox("rita.jones@contoso.test").add(make_message(message_id="<after@x.test>"), "inbox")
    result = sync_account(connect.config, connect.sessions, first["id"])
    assert result.ok and result.new == 1, result.error  # resumes where it was: only the new message


@pytest.mark.parametrize("tenant", [None, "fabrikam.test"], ids=["same-tenant", "domain-moved-tenant"])
def test_an_address_given_to_someone_else_does_not_take_over_the_account(connect: Connect, tenant: str | None) -> None:
    connect = connect.with_microsoft("organizations")  # a multi-tenant app: users of any organisation
    first = connect.callback(connect.consent()).get_json()
    grant = connect.secret(first["id"])["refresh_token"]
    settings = connect.account(first["id"]).settings
    # Rita leaves; her address goes to a new user (or, with the domain, to another organisation)
    give_address_to_someone_else(connect.rig, ADDRESS, tenant)

    resp = connect.callback(connect.consent())
    assert (resp.status_code, resp.get_json()) == (
        400,
        {
            "error": f"Postroom already has {ADDRESS} connected for a different Microsoft 365 user "
            f"(account {first['id']}), so this sign-in was not stored."
        },
    )
    account = connect.account(first["id"])
    assert (account.settings, connect.secret(first["id"])["refresh_token"]) == (settings, grant)
    assert len(connect.accounts()) == 1


def test_an_account_stored_before_ids_were_kept_is_adopted_by_its_user(connect: Connect) -> None:
    with connect.sessions.begin() as s:  # `postroom accounts add-graph`: a grant, no ID token
        legacy = add_graph_account(s, connect.config, ADDRESS, connect.rig.refresh_token).id
    assert "object_id" not in connect.account(legacy).settings

    again = connect.callback(connect.consent()).get_json()
    assert again["id"] == legacy
    rita = connect.rig.identity.users[ADDRESS]
    settings = connect.account(legacy).settings
    assert (settings["tenant_id"], settings["object_id"]) == (rita.tenant_id, rita.oid)


def test_a_tenant_not_allowed_is_refused_and_nothing_is_stored(connect: Connect) -> None:
    contoso = connect.rig.identity.tenant_id
    connect = connect.with_microsoft("organizations", allowed_tenants=(contoso,))
    connect.rig.identity.add_user("fred@fabrikam.test", tenant="fabrikam.test")
    connect.rig.graph.add_user("fred@fabrikam.test")
    connect.rig.identity.auto_approve = "fred@fabrikam.test"
    fabrikam = connect.rig.identity.tenants["fabrikam.test"]

    resp = connect.callback(connect.consent(), as_json=False)
    assert resp.status_code == 400
    assert (
        f"<p>Your Microsoft 365 organisation (tenant {fabrikam}) may not connect mailboxes to Postroom; "
        "an administrator can add it to microsoft.allowed_tenants.</p>"
    ) in html.unescape(resp.get_data(as_text=True))
    assert connect.accounts() == []
    assert [c.route for c in connect.rig.graph.calls] == []  # refused before Graph was asked anything

    connect.rig.identity.auto_approve = ADDRESS  # a user of an allowed tenant
    assert connect.callback(connect.consent()).get_json()["email"] == ADDRESS


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "page"])
def test_reconnecting_a_disabled_account_stores_the_grant_but_keeps_it_disabled(
    connect: Connect, as_json: bool
) -> None:
    first = connect.callback(connect.consent()).get_json()
    old = connect.secret(first["id"])["refresh_token"]
    connect.disable(first["id"])

    resp = connect.callback(connect.consent(), as_json=as_json)
    account = connect.account(first["id"])
    assert (account.status, account.next_sync_at) == ("disabled", None)
    assert connect.secret(first["id"])["refresh_token"] != old  # the new grant is kept for when it is enabled
    sentence = f"{ADDRESS} is reconnected, but an administrator has disabled it, so Postroom does not sync it."
    assert resp.status_code == 200
    if as_json:
        assert resp.get_json() == {"id": first["id"], "email": ADDRESS, "status": "disabled", "message": sentence}
    else:
        assert f"<p>{sentence}</p>" in html.unescape(resp.get_data(as_text=True))


def test_connect_without_a_microsoft_app_is_one_sentence(connect: Connect) -> None:
    bare = dataclasses.replace(connect.config, microsoft=MicrosoftConfig())
    resp = signed_in(create_app(bare)).get("/connect/microsoft", headers={"Accept": "application/json"})
    assert resp.status_code == 503
    assert resp.get_json()["error"] == (
        "Connecting Microsoft 365 is not set up: set microsoft.client_id and microsoft.client_secret "
        "(see docs/microsoft.md)."
    )


def test_an_untrusted_authority_certificate_is_refused_not_a_traceback(connect: Connect) -> None:
    untrusting = dataclasses.replace(
        connect.config, microsoft=dataclasses.replace(connect.config.microsoft, ca_file=None)
    )
    resp = signed_in(create_app(untrusting)).get("/connect/microsoft", headers={"Accept": "application/json"})
    assert resp.status_code == 503
    assert resp.get_json() == {"error": "Microsoft's sign-in service could not be reached: SSLError."}
