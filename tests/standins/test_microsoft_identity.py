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
    tenant = kwargs.pop("tenant", None)
    return msal.ConfidentialClientApplication(
        rig.identity.client_id,
        client_credential=kwargs.pop("secret", rig.identity.client_secret),
        authority=f"{rig.idp_server.url}/{tenant}" if tenant else opts["authority"],
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


def sign_in(rig: GraphRig, user: str, tenant: str | None = None) -> dict[str, object]:
    """``user`` signs in through ``tenant``'s authority (default the home tenant's): msal's result."""
    client = app(rig, tenant=tenant)
    rig.identity.auto_approve = user
    flow = start(client)
    return dict(client.acquire_token_by_auth_code_flow(flow, authorize(rig, flow)))


def test_id_tokens_name_the_user_by_tenant_and_object_id_in_every_tenant(rig: GraphRig) -> None:
    fabrikam = rig.identity.add_tenant("fabrikam.test")
    fred = rig.identity.add_user("fred@fabrikam.test", tenant="fabrikam.test")
    base = rig.idp_server.url
    config = requests.get(f"{base}/organizations/v2.0/.well-known/openid-configuration", verify=rig.ca_file, timeout=10)
    assert config.json()["issuer"] == f"{base}/{{tenantid}}/v2.0"  # as Microsoft publishes it for any tenant

    rita = sign_in(rig, ADDRESS, "organizations")["id_token_claims"]
    claims = sign_in(rig, "fred@fabrikam.test", "organizations")["id_token_claims"]
    assert isinstance(rita, dict) and isinstance(claims, dict)
    assert (rita["tid"], rita["oid"], rita["iss"]) == (
        rig.identity.tenant_id,
        rig.identity.users[ADDRESS].oid,
        f"{base}/{rig.identity.tenant_id}/v2.0",
    )
    assert (claims["tid"], claims["oid"], claims["iss"]) == (fabrikam, fred.oid, f"{base}/{fabrikam}/v2.0")
    assert rita["aud"] == claims["aud"] == rig.identity.client_id
    assert fabrikam != rig.identity.tenant_id and fred.oid != rita["oid"]


def test_a_tenants_authority_signs_in_its_own_users_only(rig: GraphRig) -> None:
    rig.identity.add_user("fred@fabrikam.test", tenant="fabrikam.test")
    client = app(rig)  # the home tenant's authority (contoso.test)
    rig.identity.auto_approve = "fred@fabrikam.test"
    page = requests.get(str(start(client)["auth_uri"]), allow_redirects=False, verify=rig.ca_file, timeout=10)
    assert page.status_code == 400 and "AADSTS50020" in page.text


def test_a_changed_mail_attribute_keeps_the_user_and_moves_their_tokens_to_the_new_address(rig: GraphRig) -> None:
    before = sign_in(rig, ADDRESS)
    rig.identity.change_mail(ADDRESS, "rita.jones@contoso.test")
    after = sign_in(rig, ADDRESS)  # she still signs in with her sign-in name
    assert isinstance(before["id_token_claims"], dict) and isinstance(after["id_token_claims"], dict)
    assert after["id_token_claims"]["oid"] == before["id_token_claims"]["oid"]
    assert after["id_token_claims"]["preferred_username"] == ADDRESS  # the UPN, not the mail attribute
    for result in (before, after):  # Graph (and EWS) know the mailbox by its current address
        assert rig.identity.user_for(str(result["access_token"])) == ("rita.jones@contoso.test", "")
    with pytest.raises(ValueError, match="already the address of"):
        rig.identity.add_user("rita.jones@contoso.test")  # one primary SMTP address, one recipient


def test_a_deleted_users_grant_stops_and_their_address_goes_to_a_new_object_id(rig: GraphRig) -> None:
    first = sign_in(rig, ADDRESS)
    rig.identity.delete_user(ADDRESS)
    refused = app(rig).acquire_token_by_refresh_token(str(first["refresh_token"]), scopes=list(GRAPH_SCOPES))
    assert refused["error"] == "invalid_grant" and refused["error_codes"] == [50034]
    assert rig.identity.user_for(str(first["access_token"]))[0] is None
    newcomer = rig.identity.add_user(ADDRESS)
    second = sign_in(rig, ADDRESS)
    assert isinstance(first["id_token_claims"], dict) and isinstance(second["id_token_claims"], dict)
    assert second["id_token_claims"]["oid"] == newcomer.oid != first["id_token_claims"]["oid"]
