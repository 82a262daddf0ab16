"""A running EWS stand-in (HTTP, or HTTPS with a throwaway CA) and EwsProviders pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from exchangelib.protocol import Protocol

from providers.base import Credentials, FolderRole, ProviderSettings
from providers.ews import EwsProvider
from standins.ews import PATH, EwsStandIn
from standins.httpserver import ServerThread
from tests.standins.graph_rig import _ca, server_context

ADDRESS = "rita@contoso.test"
PASSWORD = "Winter2026!"
ROLE_FOLDERS = {
    FolderRole.INBOX: "inbox",
    FolderRole.SENT: "sentitems",
    FolderRole.TRASH: "deleteditems",
    FolderRole.DRAFTS: "drafts",
    FolderRole.JUNK: "junkemail",
}


@dataclass
class EwsRig:
    ews: EwsStandIn
    server: ServerThread
    address: str = ADDRESS
    ca_file: str | None = None

    @property
    def endpoint(self) -> str:
        return self.server.url + PATH

    def settings(
        self, password: str | None = PASSWORD, *, address: str | None = None, **options: Any
    ) -> ProviderSettings:
        creds = Credentials(self.address, password=password)
        opts = {"ews_url": self.endpoint, "auth": "basic", **options}
        if self.ca_file:
            opts.setdefault("ca_file", self.ca_file)
        return ProviderSettings(address or self.address, creds, opts, timeout=10.0)

    def provider(self, password: str | None = PASSWORD, **options: Any) -> EwsProvider:
        return EwsProvider.open(self.settings(password, **options))

    def token_provider(self, token: str, **options: Any) -> EwsProvider:
        settings = self.settings(None, auth="oauth2", **options)
        creds = Credentials(self.address, access_token=token)
        return EwsProvider.open(ProviderSettings(settings.email, creds, settings.options, timeout=10.0))

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return self.ews.mailbox(self.address).add(raw, ROLE_FOLDERS[role]).id

    def raw_messages(self, role: FolderRole) -> list[bytes]:
        return [i.raw for i in self.ews.mailbox(self.address).in_folder(ROLE_FOLDERS[role])]


@contextmanager
def ews_rig(*, https: bool = False) -> Iterator[EwsRig]:
    """The stand-in with one user on a fresh port; fails the test if it ever broke its schema."""
    ews = EwsStandIn()
    ews.add_user(ADDRESS, password=PASSWORD, name="Rita Recruiter")
    with ews.serve(server_context() if https else None) as server:
        try:
            yield EwsRig(ews, server, ca_file=_ca()[1] if https else None)
        finally:
            Protocol.clear_cache()  # exchangelib caches Protocols per endpoint + credentials
    assert ews.schema_violations == [], ews.schema_violations
