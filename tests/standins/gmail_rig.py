"""A running Gmail stand-in plus factories for providers pointed at it (real client libraries)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from postroom.config import Config, GoogleConfig
from providers.base import Credentials, FolderRole, ProviderSettings
from providers.gmail import GmailProvider
from standins.gmail import GmailStandIn
from standins.httpserver import ServerThread

ADDRESS = "rita@example.test"
ROLE_LABELS = {FolderRole.INBOX: "INBOX", FolderRole.SENT: "SENT", FolderRole.TRASH: "TRASH"}
DELIVERY_LABELS = {FolderRole.INBOX: ("INBOX", "UNREAD"), FolderRole.SENT: ("SENT",), FolderRole.TRASH: ("TRASH",)}


@dataclass
class GmailRig:
    standin: GmailStandIn
    server: ServerThread
    refresh_token: str
    address: str = ADDRESS
    sleeps: list[float] = field(default_factory=list)  # backoff the providers asked for
    refreshes: list[tuple[str, datetime | None]] = field(default_factory=list)

    def settings(self, refresh_token: str | None = None, **options: Any) -> ProviderSettings:
        creds = Credentials(self.address, refresh_token=refresh_token or self.refresh_token)
        opts = {
            "api_root": self.server.url + "/",
            "token_uri": self.server.url + "/token",
            "client_id": self.standin.client_id,
            "client_secret": self.standin.client_secret,
            **options,
        }
        return ProviderSettings(
            self.address, creds, opts, timeout=10.0, on_token_refresh=lambda t, e: self.refreshes.append((t, e))
        )

    def config(self, config: Config) -> Config:
        """``config`` with ``[google]`` pointing at this stand-in (its client, token endpoint and API)."""
        google = GoogleConfig(
            client_id=self.standin.client_id,
            client_secret=self.standin.client_secret,
            token_uri=self.server.url + "/token",
            api_root=self.server.url + "/",
        )
        return dataclasses.replace(config, google=google)

    def provider(self, refresh_token: str | None = None, **options: Any) -> GmailProvider:
        return GmailProvider.open(self.settings(refresh_token, **options), sleep=self.sleeps.append)

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return self.standin.deliver(self.address, raw, DELIVERY_LABELS[role])

    def raw_messages(self, role: FolderRole) -> list[bytes]:
        """What Gmail shows in the folder: trashed and spam messages only in TRASH and SPAM."""
        label = ROLE_LABELS[role]
        hidden = {"TRASH", "SPAM"} - {label}
        return [m.raw for m in self.standin.mailbox(self.address).by_label(label) if not hidden & m.labels]


@contextmanager
def gmail_rig() -> Iterator[GmailRig]:
    """A stand-in with one user; fails the test if the stand-in ever broke the Gmail schema."""
    standin = GmailStandIn()
    token = standin.grant(ADDRESS)
    with standin.serve() as server:
        yield GmailRig(standin, server, token)
    assert standin.schema_violations == [], standin.schema_violations
