"""Mail accounts, as a user deals with them: add (IMAP, Gmail, Microsoft 365, Exchange), list, status,
reconnect (the consent flows connect again through the same functions).

Credentials are sealed before they reach the database (:mod:`sync.credentials` opens
them when the engine syncs). Backends and what their accounts store (``settings`` /
sealed ``secret``):

* ``imap``: servers, ports, security / username, password
* ``gmail``: api_root, token_uri, client_id, and ``smtp_submission: true`` when tracked sends go
  over Gmail's SMTP submission (the grant includes ``https://mail.google.com/``) / refresh and
  access token
* ``graph`` (Microsoft 365): authority, graph_root, client_id, ``smtp_submission: true`` when
  tracked sends go over Exchange Online's SMTP submission (the grant includes
  ``https://outlook.office.com/SMTP.Send``), and when connected through the consent flow
  tenant_id and object_id (the user, see :func:`add_graph_account`) / refresh and access token
* ``ews`` (Exchange Web Services): ews_url, auth (ntlm, basic or oauth2), ca_file; with
  oauth2 also authority and client_id / username and password, or the OAuth tokens

Errors are :class:`postroom.errors.AccountError` naming the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.addresses import normalise_address
from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.errors import AccountError
from postroom.models import MailAccount, utcnow
from postroom.states import AccountStatus
from postroom.urls import is_loopback_host
from providers.registry import EWS, GMAIL, GRAPH
from services.orgs import resolve_org
from sync.credentials import iso

SECURITY_MODES = ("ssl", "starttls", "none")
EWS_AUTH = ("ntlm", "basic", "oauth2")


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
    org_id: int | None = None  # None: the default organisation


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
        raise AccountError(f"{req.email!r} is not an email address.", "email")
    for name, mode in (("imap_security", req.imap_security), ("smtp_security", req.smtp_security)):
        if mode not in SECURITY_MODES:
            raise AccountError(f"{{{name}}} must be one of {', '.join(SECURITY_MODES)}, not {mode!r}.", name)
    allow_plain = req.allow_plaintext or config.imap.allow_plaintext
    for field, host, mode in (
        ("imap_security", req.imap_host, req.imap_security),
        ("smtp_security", req.smtp_host, req.smtp_security),
    ):
        if mode == "none" and not allow_plain and not is_loopback_host(host):
            raise AccountError(
                f"Refusing to send the password unencrypted to {host}; use ssl or starttls "
                "(or set imap.allow_plaintext = true if you really mean it).",
                field,
            )
    for name, port in (("imap_port", req.imap_port), ("smtp_port", req.smtp_port)):
        if not 0 < port < 65536:
            raise AccountError(f"{{{name}}} must be a TCP port between 1 and 65535, not {port}.", name)
    org_id = resolve_org(session, req.org_id)
    exists = session.scalar(
        select(MailAccount).where(
            MailAccount.org_id == org_id, MailAccount.provider == "imap", MailAccount.email == email
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
        org_id=org_id,
        email=email,
        provider="imap",
        settings=settings,
        secret=box.seal({"username": req.username, "password": req.password}),
        status=AccountStatus.ACTIVE,
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
    smtp_submission: bool | None = None,
    org_id: int | None = None,
) -> MailAccount:
    """Store a Gmail mailbox with its OAuth grant (sealed). An existing Gmail account for
    the address is refused, unless ``reconnect``: then its tokens are replaced and it is
    ``active`` again and due at once (the consent flow's "connect again").

    ``smtp_submission``: tracked sends go over Gmail's SMTP submission (docs/gmail.md); the
    consent flow passes whether the grant includes ``https://mail.google.com/``
    (:attr:`services.google_consent.GoogleGrant.smtp_submission`). None: as the account had
    it when reconnecting, else off."""
    address = _address(email)
    google = config.google
    if not (google.client_id and google.client_secret):
        raise AccountError(
            "Settings google.client_id and google.client_secret must be set to connect Gmail accounts "
            "(see docs/gmail.md)."
        )
    settings: dict[str, Any] = {
        "api_root": google.api_root,
        "token_uri": google.token_uri,
        "client_id": google.client_id,
    }
    secret = _oauth_secret("Gmail", refresh_token, access_token, token_expiry)
    inherit = _smtp_submission(settings, smtp_submission)
    org = resolve_org(session, org_id)
    return _store(session, config, org, GMAIL, "A Gmail", address, settings, secret, reconnect, inherit=inherit)


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
    smtp_submission: bool | None = None,
    org_id: int | None = None,
) -> MailAccount:
    """Store a Microsoft 365 mailbox (Microsoft Graph) with its OAuth grant (sealed); the
    Entra ID app and endpoints come from ``[microsoft]``. A second account for the address
    is refused unless ``reconnect``, which replaces the grant as :func:`add_gmail_account` does.

    The consent flow passes who signed in: the ID token's ``tid`` and ``oid`` (immutable,
    never reused), kept in the account's settings. The account is then found by them, not
    by the address, which an administrator can change or give to someone else: a new
    address is stored on the account; an address whose account has another user's ids is
    refused; an account stored before the ids were kept is adopted (:func:`_graph_account`).

    ``smtp_submission``: tracked sends go over Exchange Online's SMTP submission
    (docs/microsoft.md), as for :func:`add_gmail_account`; the consent flow passes whether the
    grant can be redeemed for ``https://outlook.office.com/SMTP.Send``."""
    address = _address(email)
    settings = _microsoft_settings(config, "Microsoft 365")
    secret = _oauth_secret("Microsoft", refresh_token, access_token, token_expiry)
    account = None
    org = resolve_org(session, org_id)
    if tenant_id and object_id:
        settings |= {"tenant_id": tenant_id, "object_id": object_id}
        account = _graph_account(session, org, address, tenant_id, object_id)
    inherit = _smtp_submission(settings, smtp_submission)
    label = "A Microsoft 365"
    return _store(session, config, org, GRAPH, label, address, settings, secret, reconnect, account, inherit=inherit)


def _smtp_submission(settings: dict[str, Any], on: bool | None) -> tuple[str, ...]:
    """Put ``smtp_submission`` into ``settings`` when on; the keys a reconnect keeps from the
    account when the caller does not say (None)."""
    if on:
        settings["smtp_submission"] = True
    return ("smtp_submission",) if on is None else ()


def _graph_account(session: Session, org_id: int, address: str, tenant_id: str, object_id: str) -> MailAccount | None:
    """The organisation's Graph account of the user (tenant_id, object_id): the one with their
    ids, else one with ``address`` and no ids (stored before ids were kept), else None."""
    graph = select(MailAccount).where(MailAccount.org_id == org_id, MailAccount.provider == GRAPH)
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
    org_id: int | None = None  # None: the default organisation


def add_ews_account(session: Session, config: Config, req: EwsAccountRequest) -> MailAccount:
    address = _address(req.email)
    parts = urlsplit(req.ews_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AccountError(
            "{ews_url} must be an https URL such as https://mail.example.com/EWS/Exchange.asmx, "
            f"not {req.ews_url!r}.",
            "ews_url",
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise AccountError(
            f"Refusing to send credentials unencrypted to {parts.hostname}; {{ews_url}} must use https "
            "(plain http only for this machine).",
            "ews_url",
        )
    if req.auth not in EWS_AUTH:
        raise AccountError(f"{{auth}} must be one of {', '.join(EWS_AUTH)}, not {req.auth!r}.", "auth")
    settings: dict[str, Any] = {"ews_url": req.ews_url, "auth": req.auth}
    if req.auth == "oauth2":
        if req.password is not None or req.username:
            raise AccountError(
                "{auth} oauth2 signs in with {refresh_token}, not a username and password.",
                "auth",
                also=("refresh_token",),
            )
        settings |= _microsoft_settings(config, "Exchange OAuth", graph=False)
        secret = _oauth_secret("Microsoft", req.refresh_token or "", None, None)
    else:
        if req.refresh_token is not None:
            raise AccountError(
                f"{{auth}} {req.auth} signs in with {{username}} and {{password}}, not a refresh token.",
                "auth",
                also=("username", "password"),
            )
        if not req.username or not req.password:
            raise AccountError(
                f"{{auth}} {req.auth} needs {{username}} and {{password}}.", "auth", also=("username", "password")
            )
        secret = {"username": req.username, "password": req.password}
    if req.ca_file:
        settings["ca_file"] = req.ca_file
    org = resolve_org(session, req.org_id)
    return _store(session, config, org, EWS, "An EWS", address, settings, secret, reconnect=False)


def _address(email: str) -> str:
    address = normalise_address(email)
    if not address or "@" not in address:
        raise AccountError(f"{email!r} is not an email address.", "email")
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
        raise AccountError(f"The {issuer} refresh token is empty.", "refresh_token")
    secret: dict[str, Any] = {"refresh_token": refresh_token.strip()}
    if access_token:
        secret.update(access_token=access_token, token_expiry=iso(expiry))
    return secret


def _store(
    session: Session,
    config: Config,
    org_id: int,
    provider: str,
    label: str,
    address: str,
    settings: dict[str, Any],
    secret: dict[str, Any],
    reconnect: bool,
    account: MailAccount | None = None,
    *,
    inherit: tuple[str, ...] = (),
) -> MailAccount:
    """Insert the account, or with ``reconnect`` give the existing one (``account``, else the
    one with the address) its new grant and address: ``active`` again, due at once, its
    failures forgotten — unless an administrator disabled it, which reconnecting never undoes.
    The settings named in ``inherit`` keep the existing account's values."""
    sealed = SecretBox.for_config(config.security).seal(secret)
    account = account or session.scalar(
        select(MailAccount).where(
            MailAccount.org_id == org_id, MailAccount.provider == provider, MailAccount.email == address
        )
    )
    if account is not None:
        if not reconnect:
            raise AccountError(f"{label} account for {address} already exists (id {account.id}).")
        old = account.settings or {}
        settings |= {key: old[key] for key in inherit if key in old}
        account.settings, account.secret, account.email = settings, sealed, address
        if account.status != AccountStatus.DISABLED:
            account.status, account.next_sync_at, account.failure_count = AccountStatus.ACTIVE, utcnow(), 0
            account.last_error = account.last_error_class = None
    else:
        account = MailAccount(
            org_id=org_id,
            email=address,
            provider=provider,
            settings=settings,
            secret=sealed,
            status=AccountStatus.ACTIVE,
        )
        session.add(account)
    session.flush()
    return account


def list_accounts(session: Session, org_id: int | None = None) -> list[AccountSummary]:
    """The accounts of organisation ``org_id`` (None: of every organisation, the operator's view)."""
    query = select(MailAccount).order_by(MailAccount.id)
    rows = session.scalars(query if org_id is None else query.where(MailAccount.org_id == org_id))
    return [
        AccountSummary(a.id, a.email, a.provider, a.status, a.last_sync_at, a.last_success_at, a.last_error)
        for a in rows
    ]


@dataclass(frozen=True)
class AccountHealth:
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


def account_status(session: Session, now: datetime, org_id: int | None = None) -> list[AccountHealth]:
    """Each account's health, of organisation ``org_id`` (None: of every organisation)."""
    out = []
    query = select(MailAccount).order_by(MailAccount.id)
    for a in session.scalars(query if org_id is None else query.where(MailAccount.org_id == org_id)):
        holder = a.lease_owner if a.lease_expires_at and a.lease_expires_at > now else None
        out.append(
            AccountHealth(
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


# -- reconnecting an IMAP account (the mailboxes page) -------------------------------------------


class NoSuchAccount(AccountError):
    """Raised by :func:`reconnect_imap` for an account that does not exist, is another
    organisation's or is not an IMAP account (field ``account``): the web app answers 404."""


def reconnect_imap(session: Session, config: Config, org_id: int, account_id: int, password: str) -> MailAccount:
    """Give organisation ``org_id``'s IMAP account ``account_id`` a new password (sealed, the
    username kept): it is ``active`` again and due at once, its failures forgotten — unless an
    administrator disabled it, which reconnecting never undoes. The next sync tells whether the
    server takes the password. Another organisation's account is refused exactly like a
    missing one (:class:`AccountError` naming ``account``); an empty password names ``password``."""
    account = session.get(MailAccount, account_id)
    if account is None or account.org_id != org_id or account.provider != "imap":
        raise NoSuchAccount(f"No IMAP account with id {account_id}.", "account")
    if not password:
        raise AccountError("Enter the mailbox's new {password}.", "password")
    box = SecretBox.for_config(config.security)
    secret = box.open(account.secret) if account.secret else {}
    username = str(secret.get("username") or account.email)
    account.secret = box.seal({"username": username, "password": password})
    if account.status != AccountStatus.DISABLED:
        account.status, account.next_sync_at, account.failure_count = AccountStatus.ACTIVE, utcnow(), 0
        account.last_error = account.last_error_class = None
    session.flush()
    return account


# -- one account: read it, delete it (the mailboxes page and the API) ----------------------------


def get_account(session: Session, org_id: int, account_id: int, now: datetime) -> AccountHealth:
    """One account's health, as :func:`account_status` gives it; another organisation's account
    is refused exactly like a missing one (:class:`NoSuchAccount`, field ``account``)."""
    found = next((a for a in account_status(session, now, org_id) if a.id == account_id), None)
    if found is None:
        raise NoSuchAccount(f"No mail account with id {account_id}.", "account")
    return found


def delete_account(session: Session, org_id: int, account_id: int) -> None:
    """Remove organisation ``org_id``'s account ``account_id`` and what only it held: its folders,
    copies, quarantine and outbox (with the tracking of its sends), the emails no other mailbox
    holds (with their participants and history entries), their body rows, and the threads left
    empty. Emails another mailbox also holds stay, with their threads and applicants' histories.
    The body files stay in the blob directory (content-addressed, perhaps shared); the rows that
    pointed at them go. Another organisation's account is refused like a missing one."""
    from sqlalchemy import delete, exists
    from sqlalchemy.orm import aliased

    from postroom.models import Body, Email, MessageCopy, OutboxMessage, Thread

    account = session.get(MailAccount, account_id)
    if account is None or account.org_id != org_id:
        raise NoSuchAccount(f"No mail account with id {account_id}.", "account")
    other = aliased(MessageCopy)
    only_here = (
        select(MessageCopy.email_id)
        .where(MessageCopy.account_id == account_id, MessageCopy.email_id.is_not(None))
        .where(~exists().where(other.email_id == MessageCopy.email_id, other.account_id != account_id))
    )
    gone = session.execute(select(Email.body_id, Email.thread_id).where(Email.id.in_(only_here))).all()
    session.execute(delete(Email).where(Email.id.in_(only_here)).execution_options(synchronize_session=False))
    session.delete(account)  # its folders, copies, quarantine and outbox go with it (ON DELETE CASCADE)
    session.flush()
    bodies = sorted({b for b, _ in gone if b is not None})
    threads = sorted({t for _, t in gone if t is not None})
    for start in range(0, len(bodies), 500):
        part = bodies[start : start + 500]
        session.execute(
            delete(Body)
            .where(Body.id.in_(part), ~exists().where(Email.body_id == Body.id))
            .execution_options(synchronize_session=False)
        )
    for start in range(0, len(threads), 500):
        part = threads[start : start + 500]
        session.execute(
            delete(Thread)
            .where(
                Thread.id.in_(part),
                Thread.org_id == org_id,
                ~exists().where(Email.thread_id == Thread.id),
                ~exists().where(OutboxMessage.thread_id == Thread.id),
            )
            .execution_options(synchronize_session=False)
        )
