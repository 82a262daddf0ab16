"""Mail-account services: add and list accounts, and open a provider for one.

Credentials are sealed with :class:`postroom.crypto.SecretBox` before they reach
the database and unsealed only to build a :class:`providers.base.ProviderSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.addresses import normalise_address
from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import MailAccount
from providers.base import Credentials, MailProvider, ProviderSettings
from providers.registry import open_provider
from providers.transport import is_loopback
from sync.store import default_org

SECURITY_MODES = ("ssl", "starttls", "none")


class AccountError(Exception):
    """An account request that cannot be carried out; the message says why in one sentence."""


@dataclass(frozen=True)
class ImapAccountRequest:
    email: str
    username: str
    password: str
    imap_host: str
    imap_port: int
    imap_security: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    ca_file: str | None = None
    allow_plaintext: bool = False
    proxy: str | None = None


@dataclass(frozen=True)
class AccountSummary:
    id: int
    email: str
    provider: str
    status: str
    last_sync_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {
            "id": self.id,
            "email": self.email,
            "provider": self.provider,
            "status": self.status,
            "last_sync_at": iso(self.last_sync_at),
            "last_success_at": iso(self.last_success_at),
            "last_error": self.last_error,
        }


def add_imap_account(session: Session, config: Config, req: ImapAccountRequest) -> MailAccount:
    email = normalise_address(req.email)
    if not email or "@" not in email:
        raise AccountError(f"{req.email!r} is not an email address.")
    for name, mode in (("--imap-security", req.imap_security), ("--smtp-security", req.smtp_security)):
        if mode not in SECURITY_MODES:
            raise AccountError(f"{name} must be one of {', '.join(SECURITY_MODES)}, not {mode!r}.")
    allow_plain = req.allow_plaintext or config.imap.allow_plaintext
    for host, mode in ((req.imap_host, req.imap_security), (req.smtp_host, req.smtp_security)):
        if mode == "none" and not allow_plain and not is_loopback(host):
            raise AccountError(
                f"Refusing to send the password unencrypted to {host}; use ssl or starttls "
                "(or set imap.allow_plaintext = true if you really mean it)."
            )
    for name, port in (("--imap-port", req.imap_port), ("--smtp-port", req.smtp_port)):
        if not 0 < port < 65536:
            raise AccountError(f"{name} must be a TCP port between 1 and 65535, not {port}.")
    org = default_org(session)
    exists = session.scalar(
        select(MailAccount).where(
            MailAccount.org_id == org.id, MailAccount.provider == "imap", MailAccount.email == email
        )
    )
    if exists is not None:
        raise AccountError(f"An IMAP account for {email} already exists (id {exists.id}).")
    settings: dict[str, Any] = {
        "imap_host": req.imap_host,
        "imap_port": req.imap_port,
        "imap_security": req.imap_security,
        "smtp_host": req.smtp_host,
        "smtp_port": req.smtp_port,
        "smtp_security": req.smtp_security,
        "allow_plaintext": allow_plain,
    }
    if req.ca_file or config.imap.ca_file:
        settings["ca_file"] = req.ca_file or config.imap.ca_file
    if req.proxy:
        settings["proxy"] = req.proxy
    box = SecretBox(config.security.secret_key)
    account = MailAccount(
        org_id=org.id,
        email=email,
        provider="imap",
        settings=settings,
        secret=box.seal({"username": req.username, "password": req.password}),
        status="active",
    )
    session.add(account)
    session.flush()
    return account


def list_accounts(session: Session) -> list[AccountSummary]:
    rows = session.scalars(select(MailAccount).order_by(MailAccount.id))
    return [
        AccountSummary(a.id, a.email, a.provider, a.status, a.last_sync_at, a.last_success_at, a.last_error)
        for a in rows
    ]


class StoredAccount(Protocol):
    """What opening a provider needs of an account: a ``MailAccount`` or a row of its table."""

    email: str
    provider: str
    settings: dict[str, Any]
    secret: bytes


def provider_settings(account: StoredAccount, config: Config) -> ProviderSettings:
    secret = SecretBox(config.security.secret_key).open(account.secret)
    creds = Credentials(
        username=secret.get("username") or account.email,
        password=secret.get("password"),
        access_token=secret.get("access_token"),
        oauth_mechanism=secret.get("oauth_mechanism", "XOAUTH2"),
    )
    return ProviderSettings(
        email=account.email,
        credentials=creds,
        options=dict(account.settings or {}),
        timeout=config.sync.connect_timeout,
    )


def open_account(account: StoredAccount, config: Config) -> MailProvider:
    return open_provider(account.provider, provider_settings(account, config))


@dataclass(frozen=True)
class AccountStatus:
    """One account's health, as `postroom status` shows it."""

    id: int
    email: str
    provider: str
    status: str
    last_success_at: datetime | None
    lag_seconds: float  # since the last successful sync (or since the account was added)
    next_sync_at: datetime | None
    failure_count: int
    last_error: str | None
    last_error_class: str | None
    syncing_on: str | None  # the worker holding the account now

    def as_json(self) -> dict[str, Any]:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {
            "id": self.id,
            "email": self.email,
            "provider": self.provider,
            "status": self.status,
            "last_success_at": iso(self.last_success_at),
            "lag_seconds": round(self.lag_seconds, 1),
            "next_sync_at": iso(self.next_sync_at),
            "failure_count": self.failure_count,
            "last_error": self.last_error,
            "last_error_class": self.last_error_class,
            "syncing_on": self.syncing_on,
        }


def account_status(session: Session, now: datetime) -> list[AccountStatus]:
    out = []
    for a in session.scalars(select(MailAccount).order_by(MailAccount.id)):
        holder = a.lease_owner if a.lease_expires_at and a.lease_expires_at > now else None
        out.append(
            AccountStatus(
                a.id,
                a.email,
                a.provider,
                a.status,
                a.last_success_at,
                (now - (a.last_success_at or a.created_at)).total_seconds(),
                a.next_sync_at,
                a.failure_count or 0,
                a.last_error,
                a.last_error_class,
                holder,
            )
        )
    return out
