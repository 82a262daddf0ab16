"""EWS with OAuth2: the real msal refreshes against the identity stand-in, the real exchangelib
sends the bearer to the EWS stand-in, both over HTTPS with a throwaway CA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msal
import pytest
import requests
from exchangelib.protocol import Protocol

from providers.base import Credentials, FolderRole, ProviderSettings
from providers.common.http import MsalHttp
from providers.errors import AuthError, ConfigurationError
from providers.ews import EwsProvider
from providers.ews_oauth import EWS_SCOPES
from standins.ews import PATH, EwsStandIn
from standins.graph_https import HttpsServerThread
from standins.microsoft_identity import GRAPH_SCOPES, IdentityStandIn
from tests.rig.messages import make_message
from tests.standins.graph_rig import _ca, server_context

ADDRESS = "rita@contoso.test"


@dataclass
class EwsOAuthRig:
    identity: IdentityStandIn
    ews: EwsStandIn
    idp_server: HttpsServerThread
    ews_server: HttpsServerThread
    refresh_token: str
    ca_file: str
    refreshes: list[tuple[str, datetime | None]] = field(default_factory=list)
    rotations: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.ews_server.url + PATH

    @property
    def authority(self) -> str:
        return f"{self.idp_server.url}/{self.identity.tenant}"

    def settings(self, credentials: Credentials | None = None, **options: Any) -> ProviderSettings:
        opts = {
            "ews_url": self.endpoint,
            "auth": "oauth2",
            "ca_file": self.ca_file,
            "client_id": self.identity.client_id,
            "client_secret": self.identity.client_secret,
            "authority": self.authority,
            "instance_discovery": f"{self.idp_server.url}/common/discovery/instance",
            "ca_bundle": self.ca_file,
            **options,
        }
        return ProviderSettings(
            ADDRESS,
            credentials or Credentials(ADDRESS, refresh_token=self.refresh_token),
            opts,
            timeout=10.0,
            on_token_refresh=lambda t, e: self.refreshes.append((t, e)),
            on_refresh_token_rotated=self.rotations.append,
        )

    def provider(self, credentials: Credentials | None = None, **options: Any) -> EwsProvider:
        return EwsProvider.open(self.settings(credentials, **options))

    def refresh_calls(self) -> list[str | None]:
        return [c.refresh_token for c in self.identity.token_calls if c.grant_type == "refresh_token"]

    def unauthorized(self) -> int:
        return sum(1 for c in self.ews.calls if c.status == 401)


@contextmanager
def ews_oauth_rig(scopes: tuple[str, ...] = EWS_SCOPES) -> Iterator[EwsOAuthRig]:
    """The identity and EWS stand-ins sharing one token store; one user with a grant for ``scopes``."""
    identity = IdentityStandIn()
    ews = EwsStandIn(identity)
    ews.add_user(ADDRESS, name="Rita Recruiter")
    token = identity.grant(ADDRESS, scopes)
    ctx = server_context()
    with identity.serve(ctx) as idp_server, ews.serve(ctx) as ews_server:
        try:
            yield EwsOAuthRig(identity, ews, idp_server, ews_server, token, _ca()[1])
        finally:
            Protocol.clear_cache()
    assert identity.schema_violations == [], identity.schema_violations
    assert ews.schema_violations == [], ews.schema_violations


@pytest.fixture
def rig() -> Iterator[EwsOAuthRig]:
    with ews_oauth_rig() as rig:
        yield rig


def inbox_of(provider: EwsProvider) -> Any:
    return next(f for f in provider.list_folders() if f.role == FolderRole.INBOX)


def test_a_refresh_token_alone_is_redeemed_once_and_the_rotated_one_persisted(rig: EwsOAuthRig) -> None:
    first = rig.ews.mailbox(ADDRESS).add(make_message(subject="Application"), "inbox").id
    with rig.provider() as provider:
        inbox = inbox_of(provider)
        assert provider.fetch_changes(inbox, None).new == (first,)
    assert rig.refresh_calls() == [rig.refresh_token]  # one refresh for three EWS requests
    assert len(rig.rotations) == 1 and rig.rotations[0] != rig.refresh_token
    ((access, expiry),) = rig.refreshes
    assert expiry is not None and expiry > datetime.now(UTC) + timedelta(minutes=50)
    assert rig.identity.user_for(access) == (ADDRESS, "")
    assert {c.user for c in rig.ews.calls} == {ADDRESS} and rig.unauthorized() == 0


def test_a_stored_access_token_is_used_while_valid_and_refreshed_before_it_expires(rig: EwsOAuthRig) -> None:
    with rig.provider() as provider:
        provider.list_folders()
    access, expiry = rig.refreshes[0]
    stored = Credentials(ADDRESS, access_token=access, refresh_token=rig.rotations[0], token_expiry=expiry)
    with rig.provider(stored) as provider:
        provider.list_folders()
    assert len(rig.refresh_calls()) == 1  # the stored token was good
    soon = Credentials(
        ADDRESS,
        access_token=access,
        refresh_token=rig.rotations[0],
        token_expiry=datetime.now(UTC) + timedelta(1 / 1440),
    )
    with rig.provider(soon) as provider:
        provider.list_folders()
    assert rig.refresh_calls() == [rig.refresh_token, rig.rotations[0]]  # refreshed first, with the rotated token
    assert rig.unauthorized() == 0  # never sent a token about to expire


def test_an_access_token_refused_with_401_is_refreshed_once_and_the_sync_goes_on(rig: EwsOAuthRig) -> None:
    box = rig.ews.mailbox(ADDRESS)
    box.add(make_message(subject="one"), "inbox")
    with rig.provider() as provider:
        inbox = inbox_of(provider)
        cursor = provider.fetch_changes(inbox, None).cursor
        second = box.add(make_message(subject="two"), "inbox").id
        rig.identity.expire_access_tokens()  # expired early, as far as Exchange is concerned
        changes = provider.fetch_changes(inbox, cursor)
        assert changes.new == (second,)
        assert [m.remote_id for m in provider.fetch_headers(inbox, [second])] == [second]
    assert rig.unauthorized() == 1  # one 401, then the resent SyncFolderItems went through
    assert rig.refresh_calls() == [rig.refresh_token, rig.rotations[0]]  # the second used the rotated token
    assert len(rig.rotations) == 2 and len(rig.refreshes) == 2
    assert rig.identity.user_for(rig.refreshes[-1][0]) == (ADDRESS, "")


def test_a_revoked_grant_is_an_auth_error(rig: EwsOAuthRig) -> None:
    with rig.provider() as provider:
        inbox = inbox_of(provider)
        rig.identity.revoke(rig.refresh_token)  # revoking the grant revokes every token of it
        with pytest.raises(AuthError, match=r"invalid_grant.*AADSTS50173"):
            provider.fetch_changes(inbox, None)
    with rig.provider() as provider, pytest.raises(AuthError, match="invalid_grant"):
        provider.list_folders()
    assert rig.unauthorized() == 1  # the revoked access token; no request with the revoked refresh token


def test_a_grant_without_the_ews_permission_is_an_auth_error() -> None:
    with (
        ews_oauth_rig(scopes=GRAPH_SCOPES) as rig,
        rig.provider() as provider,
        pytest.raises(AuthError, match=r"invalid_grant.*AADSTS65001"),
    ):
        provider.list_folders()
    assert rig.ews.calls == []


def test_oauth2_settings_are_checked_when_opened(rig: EwsOAuthRig) -> None:
    with pytest.raises(ConfigurationError, match="refresh token"):
        rig.provider(Credentials(ADDRESS))
    with pytest.raises(ConfigurationError, match="client_id and client_secret"):
        rig.provider(client_secret=None)
    with pytest.raises(ConfigurationError, match="https"):
        rig.provider(authority="http://login.example.com/common")


def test_the_ews_stand_in_takes_only_live_tokens_of_grants_with_the_ews_permission(rig: EwsOAuthRig) -> None:
    graph_grant = rig.identity.grant(ADDRESS, (*GRAPH_SCOPES, *EWS_SCOPES))
    app = msal.ConfidentialClientApplication(
        rig.identity.client_id,
        client_credential=rig.identity.client_secret,
        authority=rig.authority,
        instance_discovery=False,
        http_client=MsalHttp(requests.Session(), rig.ca_file, 10.0),
    )
    for_ews = app.acquire_token_by_refresh_token(rig.refresh_token, scopes=list(EWS_SCOPES))["access_token"]
    graph_only = rig.identity.grant("paul@contoso.test")  # Graph scopes only, and no EWS permission
    for_graph = app.acquire_token_by_refresh_token(graph_only, scopes=list(GRAPH_SCOPES))["access_token"]
    assert app.acquire_token_by_refresh_token(graph_grant, scopes=list(EWS_SCOPES))["access_token"]
    rig.ews.add_user("paul@contoso.test")

    def status(token: str) -> tuple[int, str]:
        body = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>'
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/xml"}
        resp = requests.post(rig.endpoint, data=body, headers=headers, verify=rig.ca_file, timeout=10)
        return resp.status_code, resp.headers.get("WWW-Authenticate", "")

    assert status(for_ews)[0] == 500  # authenticated; the empty SOAP body is what is wrong
    assert status(for_graph) == (401, 'Basic realm="ews.contoso.test", Bearer error="invalid_token"')
    rig.identity.expire_access_tokens()
    assert status(for_ews)[0] == 401
