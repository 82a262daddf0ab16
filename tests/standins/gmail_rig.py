"""A running Gmail stand-in plus factories for providers pointed at it (real client libraries).

``gmail_rig(smtp=True)`` also starts the stand-in's SMTP submission (``smtp.gmail.com``, plain
text on loopback); then ``rig.provider(smtp_submission=True)`` sends tracked copies over it and
``rig.config(config, smtp_send=True)`` points ``[google]`` at it::

    with gmail_rig(smtp=True) as rig:
        provider = rig.provider(smtp_submission=True)           # Capability.SMTP_ENVELOPE
        limited = rig.provider(rig.standin.grant(rig.address, [GMAIL_MODIFY]), smtp_submission=True)
"""

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
from standins.smtp_submission import SmtpSubmissionServer

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
    smtp: SmtpSubmissionServer | None = None  # the SMTP submission companion, with gmail_rig(smtp=True)

    def smtp_options(self) -> dict[str, Any]:
        """Account options that send tracked copies over the companion SMTP submission server."""
        assert self.smtp is not None, "start the rig with gmail_rig(smtp=True)"
        return {
            "smtp_submission": True,
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "smtp_security": "none",
        }

    def settings(
        self, refresh_token: str | None = None, *, smtp_submission: bool = False, **options: Any
    ) -> ProviderSettings:
        creds = Credentials(self.address, refresh_token=refresh_token or self.refresh_token)
        opts = {
            "api_root": self.server.url + "/",
            "token_uri": self.server.url + "/token",
            "client_id": self.standin.client_id,
            "client_secret": self.standin.client_secret,
            **(self.smtp_options() if smtp_submission else {}),
            **options,
        }
        return ProviderSettings(
            self.address, creds, opts, timeout=10.0, on_token_refresh=lambda t, e: self.refreshes.append((t, e))
        )

    def config(self, config: Config, *, smtp_send: bool = False) -> Config:
        """``config`` with ``[google]`` pointing at this stand-in (its client, token endpoint and API,
        and its SMTP submission when the rig runs one); ``smtp_send`` as given."""
        smtp: dict[str, Any] = {}
        if self.smtp is not None:
            smtp = {"smtp_host": self.smtp.host, "smtp_port": self.smtp.port, "smtp_security": "none"}
        google = GoogleConfig(
            client_id=self.standin.client_id,
            client_secret=self.standin.client_secret,
            token_uri=self.server.url + "/token",
            api_root=self.server.url + "/",
            smtp_send=smtp_send,
            **smtp,
        )
        return dataclasses.replace(config, google=google)

    def provider(
        self, refresh_token: str | None = None, *, smtp_submission: bool = False, **options: Any
    ) -> GmailProvider:
        settings = self.settings(refresh_token, smtp_submission=smtp_submission, **options)
        return GmailProvider.open(settings, sleep=self.sleeps.append)

    def deliver(self, raw: bytes, role: FolderRole = FolderRole.INBOX) -> str:
        return self.standin.deliver(self.address, raw, DELIVERY_LABELS[role])

    def raw_messages(self, role: FolderRole) -> list[bytes]:
        """What Gmail shows in the folder: trashed and spam messages only in TRASH and SPAM."""
        label = ROLE_LABELS[role]
        hidden = {"TRASH", "SPAM"} - {label}
        return [m.raw for m in self.standin.mailbox(self.address).by_label(label) if not hidden & m.labels]


@contextmanager
def gmail_rig(*, smtp: bool = False) -> Iterator[GmailRig]:
    """A stand-in with one user (and, with ``smtp``, its SMTP submission); fails the test if the
    stand-in ever broke the Gmail schema."""
    standin = GmailStandIn()
    token = standin.grant(ADDRESS)
    with standin.serve() as server:
        submission = standin.smtp_submission() if smtp else None
        try:
            yield GmailRig(standin, server, token, smtp=submission)
        finally:
            if submission is not None:
                submission.close()
    assert standin.schema_violations == [], standin.schema_violations
