"""Demo mode (docs/demo.md): the demo organisation, seeded, connected to its mail server, removed.

The demo is one organisation with ``demo = true`` (the layout labels every page of it "Demo"):
a user, three Gmail mailboxes served by the demo's mail server (:mod:`standins.demo`, run by
``postroom serve``) — the recruiters' two and ``applications@``, a processing mailbox
(docs/inbound.md) —, the scenario's applicants (:mod:`postroom.demo_scenario`) and a
template. Nothing real ever goes into it: the CLI's default organisation is the first one,
and :func:`seed_demo` makes sure a real one exists before the demo's is created.

``postroom serve`` seeds it only on a database with no mail accounts, users or applicants at
all (:func:`should_seed`), and never when ``[demo] enabled = false``. The mailboxes hold
access tokens only, issued by the demo's mail server at each start and before they expire
(:func:`connect_demo_accounts`): no OAuth client secret is involved, so the demo needs no
configuration. :func:`remove_demo` deletes the organisation and everything in it (the
database cascades), the message bodies and processing-mailbox files no other organisation
shares, and the mail server's state file.

>>> DemoCredentials(7, "demo@postroom.test", "s3cret-s3cret").as_json()["email"]
'demo@postroom.test'
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom import demo_scenario as scenario
from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.errors import UserError
from postroom.models import (
    Applicant,
    ApplicantAddress,
    Body,
    Email,
    LoginFailure,
    MailAccount,
    Organisation,
    OutboxMessage,
    User,
    utcnow,
)
from postroom.models_inbound import InboundAttachment, InboundItem
from postroom.states import AccountStatus, UserRole
from providers.registry import GMAIL
from services.accounts import AccountSummary, list_accounts
from services.applicants import add_applicant
from services.inbound import add_mailbox
from services.orgs import add_org
from services.sending import SendOutcome, SendRequest, send_message
from services.templates import add_template
from services.users import add_user
from sync.credentials import iso
from sync.store import default_org

# where the demo's mailboxes point until its mail server runs: nothing listens on the discard port
OFFLINE_ROOT = "http://127.0.0.1:9/"


class DemoError(UserError):
    """A demo request that cannot be carried out: a demo exists already, or its address is taken."""


@dataclass(frozen=True)
class DemoCredentials:
    """How to sign in to a demo just seeded; the password is shown this once and never stored."""

    org_id: int
    email: str
    password: str

    def as_json(self) -> dict[str, Any]:
        return {"org_id": self.org_id, "email": self.email, "password": self.password}


@dataclass(frozen=True)
class DemoStatus:
    org_id: int
    user: str
    mailboxes: list[AccountSummary]
    applicants: int
    messages: int

    def as_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "user": self.user,
            "mailboxes": [m.as_json() for m in self.mailboxes],
            "applicants": self.applicants,
            "messages": self.messages,
        }


def demo_dir(config: Config) -> Path:
    """Where the demo's mail server keeps its mailboxes."""
    return config.data_dir / "demo"


def mail_state_file(config: Config, org_id: int) -> Path:
    return demo_dir(config) / f"mail-{org_id}.json"


def demo_org_id(session: Session) -> int | None:
    """The demo organisation's id; None when there is no demo."""
    return session.scalar(select(Organisation.id).where(Organisation.demo.is_(True)).order_by(Organisation.id))


def demo_active(session: Session) -> bool:
    return demo_org_id(session) is not None


def should_seed(session: Session) -> bool:
    """Whether ``postroom serve`` seeds the demo: no demo yet, and nothing real at all (no mail
    account, user or applicant in any organisation)."""
    anything = (Organisation.demo.is_(True), MailAccount.id.isnot(None), User.id.isnot(None), Applicant.id.isnot(None))
    return not any(session.scalar(select(exists().where(clause))) for clause in anything)


def seed_demo(sessions: sessionmaker[Session], config: Config) -> DemoCredentials:
    """Create the demo organisation: its user (a random password, returned once), its three
    mailboxes (synced once its mail server runs; ``applications@`` a processing mailbox taking
    mail from its INBOX), applicants and template."""
    password = secrets.token_urlsafe(12)
    box = SecretBox.for_config(config.security)
    with sessions.begin() as s:
        existing = demo_org_id(s)
        if existing is not None:
            raise DemoError(
                f"A demo organisation exists already (id {existing}); 'postroom demo remove' deletes it first."
            )
        if s.scalar(select(User.id).where(User.email == scenario.USER_EMAIL)) is not None:
            raise DemoError(f"A user with the demo's address {scenario.USER_EMAIL} exists already.")
        default_org(s)  # a real organisation comes first, so the CLI's default is never the demo
        org = add_org(s, scenario.ORG_NAME, demo=True)
        add_user(s, org.id, scenario.USER_EMAIL, password, UserRole.ADMIN, scenario.USER_NAME)
        accounts = {}
        for person in (*scenario.RECRUITERS, scenario.APPLICATIONS):
            accounts[person.address] = account = MailAccount(
                org_id=org.id,
                email=person.address,
                provider=GMAIL,
                settings={"api_root": OFFLINE_ROOT, "token_uri": OFFLINE_ROOT + "token", "demo": True},
                secret=box.seal({"access_token": "not-issued-yet"}),
                status=AccountStatus.ACTIVE,
            )
            s.add(account)
        s.flush()
        add_mailbox(s, config, org.id, accounts[scenario.APPLICATIONS.address].id)
        for applicant in scenario.APPLICANTS:
            add_applicant(s, applicant.name, applicant.addresses, org_id=org.id)
        t = scenario.TEMPLATE
        add_template(s, org.id, t.name, t.subject, t.body)
        return DemoCredentials(org.id, scenario.USER_EMAIL, password)


def _demo_accounts(session: Session) -> list[MailAccount]:
    """The mailboxes the demo seeded (marked ``demo`` in their settings): not one a demo user
    connected through the web app, which is a real mailbox however it got there."""
    org = demo_org_id(session)
    if org is None:
        return []
    accounts = session.scalars(select(MailAccount).where(MailAccount.org_id == org).order_by(MailAccount.id))
    return [a for a in accounts if (a.settings or {}).get("demo") is True]


def demo_mailboxes(session: Session) -> list[str]:
    """The addresses of the demo's mailboxes, those its mail server serves (none without a demo)."""
    return [a.email for a in _demo_accounts(session)]


def demo_outside_addresses() -> list[str]:
    """The applicants' addresses: the demo's mail server hosts them, so mail sent to them arrives."""
    return [a for applicant in scenario.APPLICANTS for a in applicant.addresses]


def connect_demo_accounts(
    sessions: sessionmaker[Session],
    config: Config,
    api_root: str,
    token_uri: str,
    tokens: Mapping[str, tuple[str, datetime]],
    *,
    sync_now: bool = False,
) -> int:
    """Point the demo's mailboxes at the demo's mail server with fresh access tokens
    (address -> (token, expiry)). ``sync_now``: due at once, failures forgotten (the server
    has just started). A mailbox the server had refused is active again either way; one an
    administrator disabled stays so. Returns how many mailboxes were updated."""
    box = SecretBox.for_config(config.security)
    now = utcnow()
    with sessions.begin() as s:
        accounts = _demo_accounts(s)
        for account in accounts:
            if account.email not in tokens:
                continue
            token, expiry = tokens[account.email]
            account.settings = {**(account.settings or {}), "api_root": api_root, "token_uri": token_uri}
            account.secret = box.seal({"access_token": token, "token_expiry": iso(expiry)})
            if account.status == AccountStatus.DISABLED:
                continue
            if sync_now or account.status == AccountStatus.RECONNECT_NEEDED:
                if account.status == AccountStatus.RECONNECT_NEEDED:
                    account.status = AccountStatus.ACTIVE
                account.next_sync_at, account.failure_count = now, 0
                account.last_error = account.last_error_class = None
        return len(accounts)


def send_demo_message(config: Config, sessions: sessionmaker[Session], tracking_base_url: str) -> SendOutcome | None:
    """The scenario's tracked send (:data:`postroom.demo_scenario.TRACKED_SEND`), from the
    template, through the sending service as a recruiter's send goes; once per demo (None
    when it was sent before, or there is no demo). Tracking links point at
    ``tracking_base_url`` unless ``[tracking] base_url`` says where."""
    plan = scenario.TRACKED_SEND
    with sessions() as s:
        org = demo_org_id(s)
        if org is None:
            return None
        sent_before = s.scalar(
            select(exists().where(OutboxMessage.account_id == MailAccount.id, MailAccount.org_id == org))
        )
        account_id = s.scalar(select(MailAccount.id).where(MailAccount.org_id == org, MailAccount.email == plan.sender))
        applicant_id = s.scalar(
            select(ApplicantAddress.applicant_id).where(
                ApplicantAddress.org_id == org, ApplicantAddress.address == plan.to
            )
        )
    if sent_before or account_id is None:
        return None
    if not config.tracking.base_url:
        config = replace(config, tracking=replace(config.tracking, base_url=tracking_base_url.rstrip("/")))
    request = SendRequest(
        account_id=account_id,
        to=[plan.to],
        template=plan.template,
        data=plan.data,
        applicant_id=applicant_id,
        track=True,
    )
    return send_message(config, sessions, request)


def demo_status(session: Session) -> DemoStatus | None:
    org = demo_org_id(session)
    if org is None:
        return None
    user = session.scalar(select(User.email).where(User.org_id == org).order_by(User.id)) or ""
    applicants = session.scalar(select(func.count()).select_from(Applicant).where(Applicant.org_id == org)) or 0
    messages = session.scalar(select(func.count()).select_from(Email).where(Email.org_id == org)) or 0
    return DemoStatus(org, user, list_accounts(session, org), int(applicants), int(messages))


def remove_demo(sessions: sessionmaker[Session], config: Config) -> int:
    """Delete the demo organisation and everything in it; returns how many were removed (0: there
    was no demo). Message bodies only the demo's messages held go too, files included, and so
    does the demo's mail on disk."""
    with sessions.begin() as s:
        orgs = list(s.scalars(select(Organisation.id).where(Organisation.demo.is_(True))))
        if not orgs:
            return 0
        body_ids = set(
            s.scalars(select(Email.body_id).where(Email.org_id.in_(orgs), Email.body_id.isnot(None)).distinct())
        )
        body_ids |= set(
            s.scalars(select(InboundItem.body_id).where(InboundItem.org_id.in_(orgs), InboundItem.body_id.isnot(None)))
        )
        attachments = set(s.scalars(select(InboundAttachment.path).where(InboundAttachment.org_id.in_(orgs))))
        demo_users = select(User.email).where(User.org_id.in_(orgs))
        s.execute(delete(LoginFailure).where(LoginFailure.email.in_(demo_users)))
        s.execute(delete(Organisation).where(Organisation.id.in_(orgs)))  # the database cascades
        unshared = list(
            s.execute(
                select(Body.id, Body.path).where(
                    Body.id.in_(body_ids),
                    ~exists().where(Email.body_id == Body.id),
                    ~exists().where(InboundItem.body_id == Body.id),
                )
            ).tuples()
        )
        if unshared:
            s.execute(delete(Body).where(Body.id.in_([i for i, _ in unshared])))
        # an attachment's file is named by its content: another organisation's may be the same file
        kept = set(s.scalars(select(InboundAttachment.path).where(InboundAttachment.path.in_(attachments))))
        kept |= set(s.scalars(select(Body.path).where(Body.path.in_(attachments))))
    for path in [p for _, p in unshared] + sorted(attachments - kept):
        blob = config.storage.blob_dir / path
        blob.unlink(missing_ok=True)
        try:
            blob.parent.rmdir()  # its shard directory, when nothing else is in it
        except OSError:
            pass
    for state in demo_dir(config).glob("mail-*.json"):  # a demo's mail, and any left by an earlier one
        state.unlink(missing_ok=True)
    try:
        demo_dir(config).rmdir()
    except OSError:
        pass  # not there, or holds something else
    return len(orgs)
