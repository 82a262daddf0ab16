"""Running Microsoft identity + Graph stand-ins (HTTPS, a throwaway CA) and providers pointed at them."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import trustme

from providers.base import Credentials, FolderRole, ProviderSettings
from providers.graph import GraphProvider
from standins.graph import GraphStandIn
from standins.graph_https import HttpsServerThread
from standins.microsoft_identity import IdentityStandIn

ADDRESS = "rita@contoso.test"
ROLE_FOLDERS = {FolderRole.INBOX: "inbox", FolderRole.SENT: "sentitems", FolderRole.TRASH: "deleteditems"}


@cache
def _ca() -> tuple[trustme.CA, str]:
    """One test CA per run (key generation is the slow part); its PEM written to a temp file."""
    ca = trustme.CA()
    path = Path(tempfile.mkdtemp(prefix="postroom-ca-")) / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


def server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _ca()[0].issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@dataclass
class GraphRig:
    identity: IdentityStandIn
    graph: GraphStandIn
    idp_server: HttpsServerThread
    graph_server: HttpsServerThread
    refresh_token: str
    ca_file: str
    address: str = ADDRESS
    sleeps: list[float] = field(default_factory=list)  # backoff the providers asked for
    refreshes: list[tuple[str, datetime | None]] = field(default_factory=list)
    rotations: list[str] = field(default_factory=list)  # refresh tokens the providers were handed

    def options(self, **options: Any) -> dict[str, Any]:
        return {
            "client_id": self.identity.client_id,
            "client_secret": self.identity.client_secret,
            "authority": f"{self.idp_server.url}/{self.identity.tenant}",
            "instance_discovery": f"{self.idp_server.url}/common/discovery/instance",
            "graph_root": f"{self.graph_server.url}/v1.0",
            "ca_bundle": self.ca_file,
            **options,
        }

    def settings(self, refresh_token: str | None = None, **options: Any) -> ProviderSettings:
        creds = Credentials(self.address, refresh_token=refresh_token or self.refresh_token)
        return ProviderSettings(
            self.address,
            creds,
            self.options(**options),
            timeout=10.0,
            on_token_refresh=lambda t, e: self.refreshes.append((t, e)),
            on_refresh_token_rotated=self.rotations.append,
        )

    def provider(self, refresh_token: str | None = None, **options: Any) -> GraphProvider:
        return GraphProvider.open(self.settings(refresh_token, **options), sleep=self.sleeps.append)

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return self.graph.mailbox(self.address).add(raw, ROLE_FOLDERS[role]).id

    def raw_messages(self, role: FolderRole) -> list[bytes]:
        box = self.graph.mailbox(self.address)
        return [i.raw for i in box.in_folder(box.folder(ROLE_FOLDERS[role]).id)]


@contextmanager
def graph_rig() -> Iterator[GraphRig]:
    """Both stand-ins with one user; fails the test if either ever broke its schema."""
    identity = IdentityStandIn()
    graph = GraphStandIn(identity)
    graph.add_user(ADDRESS, "Rita Recruiter")
    token = identity.grant(ADDRESS)
    ctx = server_context()
    with identity.serve(ctx) as idp_server, graph.serve(ctx) as graph_server:
        yield GraphRig(identity, graph, idp_server, graph_server, token, _ca()[1])
    assert identity.schema_violations == [], identity.schema_violations
    assert graph.schema_violations == [], graph.schema_violations
