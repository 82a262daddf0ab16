"""Running Microsoft identity + Graph stand-ins (HTTPS, a throwaway CA) and providers pointed at them.

``graph_rig(smtp=True)`` also starts Exchange Online's SMTP submission stand-in (STARTTLS with the
same test CA); then ``rig.provider(smtp_submission=True)`` sends tracked copies over it with a
token for ``SMTP.Send`` (the rig's grant includes it), and ``rig.microsoft(smtp_send=True)`` /
``rig.config(config, smtp_send=True)`` are the ``[microsoft]`` settings pointing at all three::

    with graph_rig(smtp=True) as rig:
        provider = rig.provider(smtp_submission=True)           # Capability.SMTP_ENVELOPE
        graph_only = rig.provider(rig.identity.grant(rig.address), smtp_submission=True)
"""

from __future__ import annotations

import dataclasses
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

from postroom.config import Config, MicrosoftConfig
from providers.base import Credentials, FolderRole, ProviderSettings
from providers.graph import GraphProvider
from standins.graph import GraphStandIn
from standins.graph_https import HttpsServerThread
from standins.microsoft_identity import GRAPH_SCOPES, SMTP_SCOPE, IdentityStandIn
from standins.smtp_submission import SmtpSubmissionServer

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
    smtp: SmtpSubmissionServer | None = None  # Exchange Online's SMTP submission, with graph_rig(smtp=True)

    def smtp_options(self) -> dict[str, Any]:
        """Account options that send tracked copies over the companion SMTP submission (STARTTLS)."""
        assert self.smtp is not None, "start the rig with graph_rig(smtp=True)"
        return {
            "smtp_submission": True,
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "smtp_security": "starttls",
        }

    def microsoft(self, tenant: str | None = None, **settings: Any) -> MicrosoftConfig:
        """``[microsoft]`` for these stand-ins: their app, authority, Graph root and SMTP submission
        (when the rig runs one), trusting their test CA; the authority is not Microsoft's, so msal's
        instance discovery (a question to login.microsoftonline.com) is off. ``tenant``: the
        authority's tenant (default the stand-in's home tenant; ``organizations`` admits every tenant)."""
        tenant = tenant or self.identity.tenant
        smtp: dict[str, Any] = {}
        if self.smtp is not None:
            smtp = {"smtp_host": self.smtp.host, "smtp_port": self.smtp.port, "smtp_security": "starttls"}
        return MicrosoftConfig(
            client_id=self.identity.client_id,
            client_secret=self.identity.client_secret,
            tenant=tenant,
            authority=f"{self.idp_server.url}/{tenant}",
            graph_root=f"{self.graph_server.url}/v1.0",
            ca_file=self.ca_file,
            instance_discovery=False,
            **(smtp | settings),
        )

    def config(self, config: Config, tenant: str | None = None, **settings: Any) -> Config:
        """``config`` with ``[microsoft]`` from :meth:`microsoft`."""
        return dataclasses.replace(config, microsoft=self.microsoft(tenant, **settings))

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

    def settings(
        self, refresh_token: str | None = None, *, smtp_submission: bool = False, **options: Any
    ) -> ProviderSettings:
        creds = Credentials(self.address, refresh_token=refresh_token or self.refresh_token)
        smtp = self.smtp_options() if smtp_submission else {}
        return ProviderSettings(
            self.address,
            creds,
            self.options(**(smtp | options)),
            timeout=10.0,
            on_token_refresh=lambda t, e: self.refreshes.append((t, e)),
            on_refresh_token_rotated=self.rotations.append,
        )

    def provider(
        self, refresh_token: str | None = None, *, smtp_submission: bool = False, **options: Any
    ) -> GraphProvider:
        settings = self.settings(refresh_token, smtp_submission=smtp_submission, **options)
        return GraphProvider.open(settings, sleep=self.sleeps.append)

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return self.graph.mailbox(self.address).add(raw, ROLE_FOLDERS[role]).id

    def raw_messages(self, role: FolderRole) -> list[bytes]:
        box = self.graph.mailbox(self.address)
        return [i.raw for i in box.in_folder(box.folder(ROLE_FOLDERS[role]).id)]


@contextmanager
def graph_rig(*, smtp: bool = False) -> Iterator[GraphRig]:
    """Both stand-ins with one user (and, with ``smtp``, Exchange Online's SMTP submission, the
    user's grant then including SMTP.Send); fails the test if either ever broke its schema."""
    identity = IdentityStandIn()
    graph = GraphStandIn(identity)
    graph.add_user(ADDRESS, "Rita Recruiter")
    token = identity.grant(ADDRESS, (*GRAPH_SCOPES, SMTP_SCOPE) if smtp else GRAPH_SCOPES)
    ctx = server_context()
    with identity.serve(ctx) as idp_server, graph.serve(ctx) as graph_server:
        submission = graph.smtp_submission(ctx) if smtp else None
        try:
            yield GraphRig(identity, graph, idp_server, graph_server, token, _ca()[1], smtp=submission)
        finally:
            if submission is not None:
                submission.close()
    assert identity.schema_violations == [], identity.schema_violations
    assert graph.schema_violations == [], graph.schema_violations
