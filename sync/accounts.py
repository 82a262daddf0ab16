"""Mail-account services: add and list accounts, and open a provider for one.

Credentials are sealed with :class:`postroom.crypto.SecretBox` before they reach
the database and unsealed only to build a :class:`providers.base.ProviderSettings`.
That covers IMAP and EWS passwords and OAuth grants alike: an OAuth account's
secret holds its refresh token and the last access token with its expiry. The
OAuth client's id is kept in the account's settings (the grant belongs to that
client), with the endpoints the grant came from; the client's secret comes from
``[google]`` or ``[microsoft]`` each time the account is opened and is never
stored per account. When the provider refreshes the access token — and, with
Microsoft, receives a new refresh token on every refresh — the new tokens are
sealed and written back, each in a short transaction of its own (:class:`TokenSaver`).

Backends and what their accounts store (``settings`` / sealed ``secret``):

* ``imap``: servers, ports, security / username, password
* ``gmail``: api_root, token_uri, client_id / refresh and access token
* ``graph`` (Microsoft 365): authority, graph_root, client_id, and when connected through
  the consent flow tenant_id and object_id (the user, see :func:`add_graph_account`) /
  refresh and access token
* ``ews`` (Exchange Web Services): ews_url, auth (ntlm, basic or oauth2), ca_file; with
  oauth2 also authority and client_id / username and password, or the OAuth tokens
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.addresses import normalise_address
from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import MailAccount, utcnow
from providers.base import Credentials, MailProvider, ProviderSettings
from providers.registry import open_provider
from providers.transport import is_loopback
from sync.store import default_org

SECURITY_MODES = ("ssl", "starttls", "none")
EWS_AUTH = ("ntlm", "basic", "oauth2")
GMAIL, GRAPH, EWS = "gmail", "graph", "ews"
DISABLED = "disabled"  # status set by an administrator: never synced, and reconnecting keeps it
log = logging.getLogger("postroom.accounts")


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
    box = SecretBox.for_config(config.security)
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


def add_gmail_account(
    session: Session,
    config: Config,
    email: str,
    refresh_token: str,
    *,
    access_token: str | None = None,
    token_expiry: datetime | None = None,
    reconnect: bool = False,
) -> MailAccount:
    """Store a Gmail mailbox with its OAuth grant (sealed). An existing Gmail account for
    the address is refused, unless ``reconnect``: then its tokens are replaced and it is
    ``active`` again and due at once (the consent flow's "connect again")."""
    address = _address(email)
    google = config.google
    if not (google.client_id and google.client_secret):
        raise AccountError(
            "Settings google.client_id and google.client_secret must be set to connect Gmail accounts "
            "(see docs/gmail.md)."
        )
    settings = {"api_root": google.api_root, "token_uri": google.token_uri, "client_id": google.client_id}
    secret = _oauth_secret("Gmail", refresh_token, access_token, token_expiry)
    return _store(session, config, GMAIL, "A Gmail", address, settings, secret, reconnect)


def add_graph_account(
    session: Session,
    config: Config,
    email: str,
    refresh_token: str,
    *,
    access_token: str | None = None,
    token_expiry: datetime | None = None,
    reconnect: bool = False,
    tenant_id: str | None = None,
    object_id: str | None = None,
) -> MailAccount:
    """Store a Microsoft 365 mailbox (Microsoft Graph) with its OAuth grant (sealed); the
    Entra ID app and endpoints come from ``[microsoft]``. A second account for the address
    is refused unless ``reconnect``, which replaces the grant as :func:`add_gmail_account` does.

    The consent flow passes who signed in: the ID token's ``tid`` and ``oid`` (immutable,
    never reused), kept in the account's settings. The account is then found by them, not
    by the address, which an administrator can change or give to someone else: a new
    address is stored on the account; an address whose account has another user's ids is
    refused; an account stored before the ids were kept is adopted (:func:`_graph_account`)."""
    address = _address(email)
    settings = _microsoft_settings(config, "Microsoft 365")
    secret = _oauth_secret("Microsoft", refresh_token, access_token, token_expiry)
    account = None
    if tenant_id and object_id:
        settings |= {"tenant_id": tenant_id, "object_id": object_id}
        account = _graph_account(session, address, tenant_id, object_id)
    return _store(session, config, GRAPH, "A Microsoft 365", address, settings, secret, reconnect, account)


def _graph_account(session: Session, address: str, tenant_id: str, object_id: str) -> MailAccount | None:
    """The organisation's Graph account of the user (tenant_id, object_id): the one with their
    ids, else one with ``address`` and no ids (stored before ids were kept), else None."""
    graph = select(MailAccount).where(MailAccount.org_id == default_org(session).id, MailAccount.provider == GRAPH)
    theirs = session.scalar(
        graph.where(
            MailAccount.settings["tenant_id"].as_string() == tenant_id,
            MailAccount.settings["object_id"].as_string() == object_id,
        )
    )
    other = session.scalar(graph.where(MailAccount.email == address))
    if other is None or other is theirs:
        return theirs
    if theirs is not None or (other.settings or {}).get("object_id"):
        raise AccountError(
            f"Postroom already has {address} connected for a different Microsoft 365 user (account {other.id}), "
            "so this sign-in was not stored."
        )
    return other


@dataclass(frozen=True)
class EwsAccountRequest:
    """An Exchange mailbox reached through EWS: a username and password (``ntlm``, ``basic``)
    or an OAuth refresh token (``oauth2``) issued to the ``[microsoft]`` app."""

    email: str
    ews_url: str
    auth: str
    username: str | None = None
    password: str | None = None
    refresh_token: str | None = None
    ca_file: str | None = None


def add_ews_account(session: Session, config: Config, req: EwsAccountRequest) -> MailAccount:
    address = _address(req.email)
    parts = urlsplit(req.ews_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AccountError(
            f"--ews-url must be an https URL such as https://mail.example.com/EWS/Exchange.asmx, not {req.ews_url!r}."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise AccountError(
            f"Refusing to send credentials unencrypted to {parts.hostname}; --ews-url must use https "
            "(plain http only for this machine)."
        )
    if req.auth not in EWS_AUTH:
        raise AccountError(f"--auth must be one of {', '.join(EWS_AUTH)}, not {req.auth!r}.")
    settings: dict[str, Any] = {"ews_url": req.ews_url, "auth": req.auth}
    if req.auth == "oauth2":
        if req.password is not None or req.username:
            raise AccountError("--auth oauth2 signs in with --refresh-token-env, not a username and password.")
        settings |= _microsoft_settings(config, "Exchange OAuth", graph=False)
        secret = _oauth_secret("Microsoft", req.refresh_token or "", None, None)
    else:
        if req.refresh_token is not None:
            raise AccountError(f"--auth {req.auth} signs in with --username and --password-env, not a refresh token.")
        if not req.username or not req.password:
            raise AccountError(f"--auth {req.auth} needs --username and --password-env.")
        secret = {"username": req.username, "password": req.password}
    if req.ca_file:
        settings["ca_file"] = req.ca_file
    return _store(session, config, EWS, "An EWS", address, settings, secret, reconnect=False)


def _address(email: str) -> str:
    address = normalise_address(email)
    if not address or "@" not in address:
        raise AccountError(f"{email!r} is not an email address.")
    return address


def _microsoft_settings(config: Config, what: str, *, graph: bool = True) -> dict[str, Any]:
    """What a Microsoft grant belongs to: the app and the endpoints (never the client secret)."""
    ms = config.microsoft
    if not (ms.client_id and ms.client_secret):
        raise AccountError(
            f"Settings microsoft.client_id and microsoft.client_secret must be set to connect {what} accounts "
            "(see docs/microsoft.md)."
        )
    settings: dict[str, Any] = {"authority": ms.authority, "client_id": ms.client_id}
    if graph:
        settings["graph_root"] = ms.graph_root
    if not ms.instance_discovery:
        settings["instance_discovery"] = False
    return settings


def _oauth_secret(issuer: str, refresh_token: str, access_token: str | None, expiry: datetime | None) -> dict[str, Any]:
    if not refresh_token.strip():
        raise AccountError(f"The {issuer} refresh token is empty.")
    secret: dict[str, Any] = {"refresh_token": refresh_token.strip()}
    if access_token:
        secret.update(access_token=access_token, token_expiry=_iso(expiry))
    return secret


def _store(
    session: Session,
    config: Config,
    provider: str,
    label: str,
    address: str,
    settings: dict[str, Any],
    secret: dict[str, Any],
    reconnect: bool,
    account: MailAccount | None = None,
) -> MailAccount:
    """Insert the account, or with ``reconnect`` give the existing one (``account``, else the
    one with the address) its new grant and address: ``active`` again, due at once, its
    failures forgotten — unless an administrator disabled it, which reconnecting never undoes."""
    sealed = SecretBox.for_config(config.security).seal(secret)
    org = default_org(session)
    account = account or session.scalar(
        select(MailAccount).where(
            MailAccount.org_id == org.id, MailAccount.provider == provider, MailAccount.email == address
        )
    )
    if account is not None:
        if not reconnect:
            raise AccountError(f"{label} account for {address} already exists (id {account.id}).")
        account.settings, account.secret, account.email = settings, sealed, address
        if account.status != DISABLED:
            account.status, account.next_sync_at, account.failure_count = "active", utcnow(), 0
            account.last_error = account.last_error_class = None
    else:
        account = MailAccount(
            org_id=org.id, email=address, provider=provider, settings=settings, secret=sealed, status="active"
        )
        session.add(account)
    session.flush()
    return account


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def list_accounts(session: Session) -> list[AccountSummary]:
    rows = session.scalars(select(MailAccount).order_by(MailAccount.id))
    return [
        AccountSummary(a.id, a.email, a.provider, a.status, a.last_sync_at, a.last_success_at, a.last_error)
        for a in rows
    ]


class StoredAccount(Protocol):
    """What opening a provider needs of an account: a ``MailAccount`` or a row of its table."""

    id: int
    email: str
    provider: str
    settings: dict[str, Any]
    secret: bytes


def provider_settings(
    account: StoredAccount, config: Config, sessions: sessionmaker[Session] | None = None
) -> ProviderSettings:
    """What the account's backend needs. For OAuth backends that refresh their own tokens
    (Gmail, Microsoft Graph, EWS with oauth2), new tokens are persisted through ``sessions``
    (default: a short-lived engine of its own for each save)."""
    secret = SecretBox.for_config(config.security).open(account.secret)
    expiry = secret.get("token_expiry")
    creds = Credentials(
        username=secret.get("username") or account.email,
        password=secret.get("password"),
        access_token=secret.get("access_token"),
        oauth_mechanism=secret.get("oauth_mechanism", "XOAUTH2"),
        refresh_token=secret.get("refresh_token"),
        token_expiry=datetime.fromisoformat(expiry) if expiry else None,
    )
    options = dict(account.settings or {})
    saver = None
    if creds.refresh_token:
        # the client secret lives in [google] / [microsoft] only, never with the account
        if account.provider == GMAIL:
            options.setdefault("client_id", config.google.client_id)
            options["client_secret"] = config.google.client_secret
        elif account.provider in (GRAPH, EWS):
            options.setdefault("client_id", config.microsoft.client_id)
            options.setdefault("authority", config.microsoft.authority)
            options["client_secret"] = config.microsoft.client_secret
        saver = TokenSaver(config, account.id, creds.refresh_token, sessions)
    if account.provider in (GRAPH, EWS) and config.microsoft.ca_file:  # the identity platform's (and Graph's) CA
        options.setdefault("ca_bundle", config.microsoft.ca_file)
    return ProviderSettings(
        email=account.email,
        credentials=creds,
        options=options,
        timeout=config.sync.connect_timeout,
        on_token_refresh=saver,
        on_refresh_token_rotated=saver.rotated if saver else None,
    )


def open_account(account: StoredAccount, config: Config, sessions: sessionmaker[Session] | None = None) -> MailProvider:
    return open_provider(account.provider, provider_settings(account, config, sessions))


class TokenSaver:
    """Persists one account's refreshed OAuth tokens, sealed, each in one short transaction,
    called between network calls (never inside a transaction of the sync):

    * as ``on_token_refresh(access_token, expiry)``: the new access token;
    * as ``on_refresh_token_rotated(refresh_token)`` (:meth:`rotated`): the new refresh
      token Microsoft issues on every refresh; later refreshes must use it.

    A save happens only while the account still holds the refresh token this saver knows:
    if the account was reconnected meanwhile (another grant), the new grant is left alone.
    A database failure is logged, not raised: the provider goes on with the tokens in
    memory (Microsoft's previous refresh token stays valid) and refreshes again next time."""

    def __init__(
        self, config: Config, account_id: int, refresh_token: str, sessions: sessionmaker[Session] | None
    ) -> None:
        self._config, self._account_id, self._refresh_token = config, account_id, refresh_token
        self._sessions = sessions

    def __call__(self, access_token: str, expiry: datetime | None) -> None:
        self._save("access token", {"access_token": access_token, "token_expiry": _iso(expiry)})

    def rotated(self, refresh_token: str) -> None:
        if self._save("rotated refresh token", {"refresh_token": refresh_token}):
            self._refresh_token = refresh_token

    def _save(self, what: str, changes: dict[str, Any]) -> bool:
        try:
            if self._sessions is not None:
                return self._update(self._sessions, changes)
            from postroom import db

            engine = db.make_engine(self._config.database)
            try:
                return self._update(db.make_sessionmaker(engine), changes)
            finally:
                engine.dispose()
        except SQLAlchemyError as exc:
            log.warning("could not store the %s: %s", what, exc, extra={"account_id": self._account_id})
            return False

    def _update(self, sessions: sessionmaker[Session], changes: dict[str, Any]) -> bool:
        box = SecretBox.for_config(self._config.security)
        with sessions.begin() as s:
            sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == self._account_id).with_for_update())
            if sealed is None:
                return False
            secret = box.open(sealed)
            if secret.get("refresh_token") != self._refresh_token:
                return False  # reconnected meanwhile: the new grant wins
            secret.update(changes)
            s.execute(
                update(MailAccount)
                .where(MailAccount.id == self._account_id)
                .values(secret=box.seal(secret))
                .execution_options(synchronize_session=False)
            )
            return True


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
