"""Connecting with SMTP sending (``google.smtp_send``, ``microsoft.smtp_send``): the consent asks for the
broader scope, the account records ``smtp_submission`` when it was granted, and such an account sends
tracked copies over SMTP. The real google_auth_oauthlib Flow and msal talk to the stand-ins; `requests`
plays the browser. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import MailAccount
from providers.base import Capability, MailProvider, OutgoingMessage
from services import google_consent, microsoft_consent
from services.accounts import add_gmail_account, add_graph_account
from standins.google_oauth import GoogleOAuthStandIn, parse_redirect
from standins.microsoft_identity import SMTP_SCOPE
from sync.credentials import open_account
from tests.rig.messages import make_message, new_message_id
from tests.standins.gmail_rig import GmailRig, gmail_rig
from tests.standins.graph_rig import GraphRig, graph_rig
from tests.web.signin import signed_in
from web import create_app

CALLBACK = "http://localhost/connect/google/callback"
MS_CALLBACK = "http://localhost/connect/microsoft/callback"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"


def send_tracked_copy(provider: MailProvider, sender: str, recipient: str) -> str:
    message_id = new_message_id()
    raw = make_message(message_id=message_id, from_=sender, to=recipient, cc="someone@outside.test")
    provider.send_without_copy(OutgoingMessage(raw, sender, (recipient,), message_id))
    return message_id


def opened(config: Config, sessions: sessionmaker[Session], account_id: int) -> MailProvider:
    with sessions() as s:
        return open_account(s.get_one(MailAccount, account_id), config, sessions)


# ------------------------------------------------------------------ Google
@pytest.fixture
def google(config: Config) -> Iterator[tuple[GmailRig, GoogleOAuthStandIn, Config]]:
    with gmail_rig(smtp=True) as rig:
        rig.standin.add_user("ann@example.test")
        oauth = GoogleOAuthStandIn(rig.standin, redirect_uris=[CALLBACK])
        oauth.user = rig.address
        with oauth.serve() as accounts:
            cfg = rig.config(config, smtp_send=True)
            google = dataclasses.replace(
                cfg.google, auth_uri=accounts.url + "/o/oauth2/auth", token_uri=accounts.url + "/token"
            )
            yield rig, oauth, dataclasses.replace(cfg, google=google)
        assert oauth.schema_violations == []


def google_grant(cfg: Config) -> google_consent.GoogleGrant:
    consent = google_consent.start(cfg.google, CALLBACK)
    asked = parse_qs(urlsplit(consent.url).query)["scope"][0].split()
    assert asked == [GMAIL_MODIFY, "https://mail.google.com/"]
    screen = requests.get(consent.url, allow_redirects=False, timeout=10)
    code = parse_redirect(screen.headers["Location"])["code"]
    return google_consent.finish(cfg.google, CALLBACK, code, consent.code_verifier, 10.0)


def test_gmail_consent_with_smtp_send_records_smtp_submission_and_the_account_sends_over_smtp(
    google: tuple[GmailRig, GoogleOAuthStandIn, Config], sessions: sessionmaker[Session]
) -> None:
    rig, _, cfg = google
    grant = google_grant(cfg)
    assert grant.smtp_submission is True
    with sessions.begin() as s:
        account = add_gmail_account(
            s, cfg, grant.email, grant.refresh_token, access_token=grant.access_token, reconnect=True,
            smtp_submission=grant.smtp_submission,
        )  # fmt: skip
        account_id = account.id
        assert account.settings["smtp_submission"] is True
    with closing(opened(cfg, sessions, account_id)) as provider:
        assert Capability.SMTP_ENVELOPE in provider.capabilities
        message_id = send_tracked_copy(provider, rig.address, "ann@example.test")
    assert [s.recipients for s in rig.smtp.submissions] == [("ann@example.test",)]  # type: ignore[union-attr]
    assert [m.message_id for m in rig.standin.mailbox("ann@example.test").by_label("INBOX")] == [message_id]


def test_gmail_user_who_unticks_full_access_connects_without_smtp_and_a_reconnect_that_does_not_say_keeps_it(
    google: tuple[GmailRig, GoogleOAuthStandIn, Config], sessions: sessionmaker[Session]
) -> None:
    rig, oauth, cfg = google
    oauth.granted_scopes = frozenset({GMAIL_MODIFY})  # the box for full access left unticked
    grant = google_grant(cfg)
    assert grant.smtp_submission is False
    with sessions.begin() as s:
        account = add_gmail_account(s, cfg, grant.email, grant.refresh_token, smtp_submission=grant.smtp_submission)
        account_id = account.id
        assert "smtp_submission" not in account.settings
    with closing(opened(cfg, sessions, account_id)) as provider:
        assert Capability.SMTP_ENVELOPE not in provider.capabilities
    # switched on by hand, then reconnected by someone who does not say (None): it stays on
    with sessions.begin() as s:
        add_gmail_account(s, cfg, rig.address, rig.refresh_token, reconnect=True, smtp_submission=True)
        add_gmail_account(s, cfg, rig.address, rig.refresh_token, reconnect=True)
        assert s.get_one(MailAccount, account_id).settings["smtp_submission"] is True
        add_gmail_account(s, cfg, rig.address, rig.refresh_token, reconnect=True, smtp_submission=False)
        assert "smtp_submission" not in s.get_one(MailAccount, account_id).settings


def test_connect_google_asks_for_full_access_only_with_smtp_send(
    google: tuple[GmailRig, GoogleOAuthStandIn, Config],
) -> None:
    _, _, cfg = google
    for smtp_send, scopes in ((True, f"{GMAIL_MODIFY} https://mail.google.com/"), (False, GMAIL_MODIFY)):
        app_config = dataclasses.replace(cfg, google=dataclasses.replace(cfg.google, smtp_send=smtp_send))
        start = signed_in(create_app(app_config)).get("/connect/google")
        assert parse_qs(urlsplit(start.headers["Location"]).query)["scope"] == [scopes]


# ------------------------------------------------------------------ Microsoft
@pytest.fixture
def microsoft(config: Config) -> Iterator[tuple[GraphRig, Config]]:
    with graph_rig(smtp=True) as rig:
        rig.graph.add_user("anne@contoso.test")
        rig.identity.redirect_uris = {MS_CALLBACK}
        rig.identity.auto_approve = rig.address
        yield rig, rig.config(config, smtp_send=True)


def microsoft_grant(rig: GraphRig, cfg: Config) -> microsoft_consent.MicrosoftGrant:
    consent = microsoft_consent.start(cfg.microsoft, MS_CALLBACK, 10.0)
    assert SMTP_SCOPE in parse_qs(urlsplit(consent.url).query)["scope"][0].split()
    page = requests.get(consent.url, allow_redirects=False, verify=rig.ca_file, timeout=10)
    answer: dict[str, Any] = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
    return microsoft_consent.finish(cfg.microsoft, consent.flow, answer, 10.0)


def test_microsoft_consent_with_smtp_send_records_smtp_submission_and_the_account_sends_over_smtp(
    microsoft: tuple[GraphRig, Config], sessions: sessionmaker[Session]
) -> None:
    rig, cfg = microsoft
    grant = microsoft_grant(rig, cfg)
    assert grant.smtp_submission is True
    assert rig.identity.user_for(grant.access_token)[0] == rig.address  # the stored token is Graph's
    with sessions.begin() as s:
        account = add_graph_account(
            s, cfg, grant.email, grant.refresh_token, access_token=grant.access_token, token_expiry=grant.expiry,
            reconnect=True, tenant_id=grant.user.tenant_id, object_id=grant.user.object_id,
            smtp_submission=grant.smtp_submission,
        )  # fmt: skip
        account_id = account.id
        assert account.settings["smtp_submission"] is True
    with closing(opened(cfg, sessions, account_id)) as provider:
        assert Capability.SMTP_ENVELOPE in provider.capabilities
        send_tracked_copy(provider, rig.address, "anne@contoso.test")
    assert [s.recipients for s in rig.smtp.submissions] == [("anne@contoso.test",)]  # type: ignore[union-attr]


def test_microsoft_organisation_that_withholds_smtp_send_still_connects_without_smtp(
    microsoft: tuple[GraphRig, Config], sessions: sessionmaker[Session]
) -> None:
    rig, cfg = microsoft
    rig.identity.withheld_scopes = {SMTP_SCOPE}
    grant = microsoft_grant(rig, cfg)
    assert grant.smtp_submission is False
    with sessions.begin() as s:
        account = add_graph_account(s, cfg, grant.email, grant.refresh_token, smtp_submission=grant.smtp_submission)
        account_id = account.id
        assert "smtp_submission" not in account.settings
    with closing(opened(cfg, sessions, account_id)) as provider:
        assert Capability.SMTP_ENVELOPE not in provider.capabilities
        provider.list_folders()  # the grant works for Graph


def test_microsoft_without_smtp_send_the_sign_in_asks_for_graph_only(microsoft: tuple[GraphRig, Config]) -> None:
    rig, cfg = microsoft
    plain = dataclasses.replace(cfg.microsoft, smtp_send=False)
    consent = microsoft_consent.start(plain, MS_CALLBACK, 10.0)
    assert SMTP_SCOPE not in parse_qs(urlsplit(consent.url).query)["scope"][0]
    page = requests.get(consent.url, allow_redirects=False, verify=rig.ca_file, timeout=10)
    answer: dict[str, Any] = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
    assert microsoft_consent.finish(plain, consent.flow, answer, 10.0).smtp_submission is False
