"""The identity stand-in driven by the real msal: discovery, authorization code with PKCE, refresh, AADSTS errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import msal
import pytest
import requests

from standins.graph_schema import check
from standins.microsoft_identity import GRAPH_SCOPES
from tests.standins.graph_rig import ADDRESS, GraphRig, graph_rig

REDIRECT = "https://postroom.test/connect/microsoft/callback"


class _Verified(requests.Session):
    """A session that passes the test CA on every request (REQUESTS_CA_BUNDLE would override Session.verify)."""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.ca_file = ca_file

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        kwargs["verify"] = self.ca_file
        return super().request(*args, **kwargs)


@pytest.fixture
def rig() -> Iterator[GraphRig]:
    with graph_rig() as rig:
        yield rig


def app(rig: GraphRig, **kwargs: object) -> msal.ConfidentialClientApplication:
    opts = rig.options()
    return msal.ConfidentialClientApplication(
        rig.identity.client_id,
        client_credential=kwargs.pop("secret", rig.identity.client_secret),
        authority=opts["authority"],
        instance_discovery=opts["instance_discovery"],
        http_client=_Verified(rig.ca_file),
    )


def start(client: msal.ConfidentialClientApplication, **kwargs: object) -> dict[str, object]:
    flow = client.initiate_auth_code_flow(
        list(GRAPH_SCOPES), redirect_uri=REDIRECT, response_mode="form_post", **kwargs
    )
    return dict(flow)


def authorize(rig: GraphRig, flow: dict[str, object]) -> dict[str, str]:
    """Follow the browser: the authorize page posts code and state to the redirect URI."""
    resp = requests.get(str(flow["auth_uri"]), allow_redirects=False, verify=rig.ca_file, timeout=10)
    assert resp.status_code == 200, resp.text
    assert f'action="{REDIRECT}"' in resp.text
    return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', resp.text))


def test_msal_discovers_the_authority_and_signs_in_with_pkce(rig: GraphRig) -> None:
    client = app(rig)
    assert rig.identity.requests[:2] == [
        "GET /common/discovery/instance",
        f"GET /{rig.identity.tenant}/v2.0/.well-known/openid-configuration",
    ]
    flow = start(client, login_hint=ADDRESS)
    assert "code_challenge=" in str(flow["auth_uri"]) and "code_challenge_method=S256" in str(flow["auth_uri"])
    rig.identity.auto_approve = ADDRESS
    result = client.acquire_token_by_auth_code_flow(flow, authorize(rig, flow))
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == ADDRESS
    refreshed = app(rig).acquire_token_by_refresh_token(result["refresh_token"], scopes=list(GRAPH_SCOPES))
    assert refreshed["refresh_token"] not in (result["refresh_token"], None)  # Microsoft rotates refresh tokens
    assert rig.identity.user_for(refreshed["access_token"])[0] == ADDRESS


def test_a_code_is_single_use_and_bound_to_its_verifier(rig: GraphRig) -> None:
    client = app(rig)
    rig.identity.auto_approve = ADDRESS
    flow = start(client)
    answer = authorize(rig, flow)
    forged = {**flow, "code_verifier": "not-the-verifier-that-made-the-challenge-0123456789"}
    assert client.acquire_token_by_auth_code_flow(forged, answer)["error_codes"] == [501481]
    flow2 = start(client)
    answer2 = authorize(rig, flow2)
    assert "access_token" in client.acquire_token_by_auth_code_flow(flow2, answer2)
    assert client.acquire_token_by_auth_code_flow(flow2, answer2)["error_codes"] == [54005]


def test_without_auto_approve_the_user_signs_in_through_a_form(rig: GraphRig) -> None:
    flow = start(app(rig))
    page = requests.get(str(flow["auth_uri"]), verify=rig.ca_file, timeout=10)
    assert page.status_code == 200 and 'name="login"' in page.text
    fields = dict(parse_qs(urlparse(str(flow["auth_uri"])).query))
    form = {k: v[0] for k, v in fields.items()} | {"login": ADDRESS}
    resp = requests.post(
        str(flow["auth_uri"]).split("?")[0], data=form, allow_redirects=False, verify=rig.ca_file, timeout=10
    )
    assert resp.status_code == 200 and 'name="code"' in resp.text


@pytest.mark.parametrize(
    ("spoil", "code"),
    [("revoke", 50173), ("expire_grant", 700082), (None, 9002313)],
)
def test_refused_refresh_tokens_answer_invalid_grant_with_aadsts_codes(
    rig: GraphRig, spoil: str | None, code: int
) -> None:
    token = rig.identity.grant(ADDRESS)
    if spoil:
        getattr(rig.identity, spoil)(token)
    result = app(rig).acquire_token_by_refresh_token(token if spoil else "1.AQ-unknown", scopes=list(GRAPH_SCOPES))
    assert result["error"] == "invalid_grant" and result["error_codes"] == [code]
    assert f"AADSTS{code}:" in result["error_description"]


def test_wrong_secret_and_unconsented_scope(rig: GraphRig) -> None:
    token = rig.identity.grant(ADDRESS, scopes=["https://graph.microsoft.com/Mail.Read"])
    assert (
        app(rig, secret="nope").acquire_token_by_refresh_token(token, scopes=["User.Read"])["error"] == "invalid_client"
    )
    result = app(rig).acquire_token_by_refresh_token(token, scopes=list(GRAPH_SCOPES))
    assert result["error_codes"] == [65001]


def test_discovery_documents_follow_the_published_shapes(rig: GraphRig) -> None:
    base = rig.idp_server.url
    config = requests.get(f"{base}/organizations/v2.0/.well-known/openid-configuration", verify=rig.ca_file, timeout=10)
    assert check(config.json(), "openidConfiguration") == []
    assert config.json()["token_endpoint"] == f"{base}/organizations/oauth2/v2.0/token"
    unknown = requests.get(
        f"{base}/common/discovery/instance",
        params={"authorization_endpoint": "https://login.evil.test/x/oauth2/v2.0/authorize"},
        verify=rig.ca_file,
        timeout=10,
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_instance"
    missing = requests.get(f"{base}/nosuch.test/v2.0/.well-known/openid-configuration", verify=rig.ca_file, timeout=10)
    assert missing.status_code == 400 and missing.json()["error_codes"] == [90002]
