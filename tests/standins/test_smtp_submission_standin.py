"""The SMTP submission companions of the Gmail and Graph stand-ins, driven by smtplib with tokens
from the real google-auth and msal: what Gmail's and Exchange Online's SMTP servers accept, refuse
and file in Sent."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator

import google.auth.transport.requests
import msal
import pytest
import requests
from google.oauth2.credentials import Credentials as GoogleCredentials

from standins.microsoft_identity import GRAPH_SCOPES, SMTP_SCOPE
from tests.rig.messages import make_message, new_message_id
from tests.standins.gmail_rig import GmailRig, gmail_rig
from tests.standins.graph_rig import GraphRig, graph_rig

GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def sign_in(smtp: smtplib.SMTP, user: str, token: str) -> None:
    payload = xoauth2(user, token)
    smtp.auth("XOAUTH2", lambda challenge=None: payload if challenge is None else "")


# ------------------------------------------------------------------ Gmail (smtp.gmail.com)
@pytest.fixture
def gmail() -> Iterator[GmailRig]:
    with gmail_rig(smtp=True) as rig:
        rig.standin.add_user("ann@example.test")
        yield rig


def google_token(rig: GmailRig, refresh_token: str) -> str:
    """An access token as google-auth gets it from the stand-in's token endpoint."""
    creds = GoogleCredentials(
        None,
        refresh_token=refresh_token,
        token_uri=rig.server.url + "/token",
        client_id=rig.standin.client_id,
        client_secret=rig.standin.client_secret,
    )
    creds.refresh(google.auth.transport.requests.Request())
    return str(creds.token)


def test_gmail_smtp_files_the_message_in_sent_before_answering_and_delivers_to_the_envelope(gmail: GmailRig) -> None:
    assert gmail.smtp is not None
    mid = new_message_id()
    raw = make_message(message_id=mid, from_=gmail.address, to="ann@example.test", cc="bob@outside.test")
    with smtplib.SMTP(gmail.smtp.host, gmail.smtp.port, timeout=10) as smtp:
        smtp.ehlo()
        assert "xoauth2" in smtp.esmtp_features["auth"].lower() and "plain" not in smtp.esmtp_features["auth"].lower()
        sign_in(smtp, gmail.address, google_token(gmail, gmail.refresh_token))
        smtp.sendmail(gmail.address, ["ann@example.test"], raw)
        # filed synchronously, as Gmail shows it in Sent at once
        assert [m.message_id for m in gmail.standin.mailbox(gmail.address).by_label("SENT")] == [mid]
    assert [m.message_id for m in gmail.standin.mailbox("ann@example.test").by_label("INBOX")] == [mid]
    assert gmail.standin.outbound == []  # bob is named in Cc only: not in the envelope, not sent


def test_gmail_smtp_wants_the_full_mail_scope_and_a_signed_in_sender(gmail: GmailRig) -> None:
    assert gmail.smtp is not None
    modify_only = google_token(gmail, gmail.standin.grant(gmail.address, [GMAIL_MODIFY]))
    with smtplib.SMTP(gmail.smtp.host, gmail.smtp.port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.mail(gmail.address)[0] == 530  # nobody signed in yet
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            sign_in(smtp, gmail.address, modify_only)
        assert refused.value.smtp_code == 535 and b"Username and Password not accepted" in refused.value.smtp_error
        sign_in(smtp, gmail.address, google_token(gmail, gmail.refresh_token))
        assert smtp.mail("someone.else@example.test")[0] == 553  # only as the signed-in address
    assert gmail.standin.mailbox(gmail.address).by_label("SENT") == []


# ------------------------------------------------------------------ Exchange Online (smtp.office365.com)
class _Verified(requests.Session):
    """Passes the test CA on every request (REQUESTS_CA_BUNDLE would override Session.verify)."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.ca_file = ca_file

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        kwargs["verify"] = self.ca_file
        return super().request(*args, **kwargs)


@pytest.fixture
def graph() -> Iterator[GraphRig]:
    with graph_rig(smtp=True) as rig:
        rig.graph.add_user("anne@contoso.test")
        yield rig


def msal_app(rig: GraphRig) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        rig.identity.client_id,
        client_credential=rig.identity.client_secret,
        authority=f"{rig.idp_server.url}/{rig.identity.tenant}",
        instance_discovery=False,
        http_client=_Verified(rig.ca_file),
    )


def test_exchange_smtp_takes_an_smtp_send_token_over_starttls_and_files_sent_items(graph: GraphRig) -> None:
    assert graph.smtp is not None
    result = msal_app(graph).acquire_token_by_refresh_token(graph.refresh_token, scopes=[SMTP_SCOPE])
    assert "access_token" in result, result
    mid = new_message_id()
    raw = make_message(message_id=mid, from_=graph.address, to="anne@contoso.test")
    with smtplib.SMTP(graph.smtp.host, graph.smtp.port, timeout=10) as smtp:
        smtp.ehlo()
        code, _ = smtp.docmd("AUTH", "XOAUTH2 " + "x")
        assert code == 530  # STARTTLS first: nothing travels in the clear
        smtp.starttls(context=ssl.create_default_context(cafile=graph.ca_file))
        smtp.ehlo()
        sign_in(smtp, graph.address, str(result["access_token"]))
        smtp.sendmail(graph.address, ["anne@contoso.test"], raw)
        sent = graph.graph.mailbox(graph.address)
        assert [i.headers()["Message-ID"] for i in sent.in_folder(sent.folder("sentitems").id)] == [mid]
    inbox = graph.graph.mailbox("anne@contoso.test")
    assert [i.headers()["Message-ID"] for i in inbox.in_folder(inbox.folder("inbox").id)] == [mid]


def test_exchange_smtp_refuses_a_graph_token_and_graph_refuses_an_smtp_token(graph: GraphRig) -> None:
    assert graph.smtp is not None
    app = msal_app(graph)
    graph_token = str(
        app.acquire_token_by_refresh_token(graph.refresh_token, scopes=list(GRAPH_SCOPES))["access_token"]
    )
    smtp_token = str(app.acquire_token_by_refresh_token(graph.refresh_token, scopes=[SMTP_SCOPE])["access_token"])
    with smtplib.SMTP(graph.smtp.host, graph.smtp.port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=graph.ca_file))
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            sign_in(smtp, graph.address, graph_token)
        assert (refused.value.smtp_code, refused.value.smtp_error[:30]) == (535, b"5.7.3 Authentication unsuccess")
    me = requests.get(
        f"{graph.graph_server.url}/v1.0/me", headers={"Authorization": f"Bearer {smtp_token}"}, verify=graph.ca_file
    )
    assert me.status_code == 401 and "Invalid audience" in me.text
    # and a token request for both resources at once is refused, as Microsoft does
    both = app.acquire_token_by_refresh_token(graph.refresh_token, scopes=[*GRAPH_SCOPES, SMTP_SCOPE])
    assert both.get("error_codes") == [28000], both


def test_exchange_smtp_send_needs_consent_the_organisation_may_withhold(graph: GraphRig) -> None:
    graph.identity.withheld_scopes = {SMTP_SCOPE}
    graph.identity.auto_approve = graph.address
    app = msal_app(graph)
    redirect = "https://postroom.test/connect/microsoft/callback"
    flow = app.initiate_auth_code_flow([*GRAPH_SCOPES, SMTP_SCOPE], redirect_uri=redirect, response_mode="form_post")
    page = requests.get(flow["auth_uri"], allow_redirects=False, verify=graph.ca_file, timeout=10)
    posted = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))  # what the browser posts back
    result = app.acquire_token_by_auth_code_flow(flow, posted, scopes=list(GRAPH_SCOPES))
    assert "access_token" in result, result
    smtp = app.acquire_token_by_refresh_token(result["refresh_token"], scopes=[SMTP_SCOPE])
    assert smtp.get("error") == "invalid_grant" and smtp.get("error_codes") == [65001]
