"""Database models. They hold data only: no MIME parsing, no provider calls.

Shape of the mail data (one organisation's view)::

    MailAccount 1─* Folder 1─* MessageCopy *─1 Email *─1 Thread
                                                  │ 1
                                                  ├─* Participant (canonical address, role)
                                                  └─* HistoryEntry *─1 Applicant 1─* ApplicantAddress

* ``MessageCopy`` is the header index row for one message in one folder of one
  account, keyed by the provider's identity (folder, remote id). It carries
  flags and server metadata, and the quarantine reason when the message could
  not be parsed.
* ``Email`` is one distinct message per organisation, keyed by Message-ID:
  however many recruiters' mailboxes saw it, it exists once, so threads and
  applicant histories never double.
* ``ThreadKey`` persists the union-find of the References graph: every
  Message-ID seen or referenced, and every provider thread hint, maps to the
  thread that holds it; a child that arrives before its parent leaves a key
  that the parent later joins.

Sending::

    Template            OutboxMessage 1─* OutboxRecipient 1─* TrackingEvent
                              │ (thread, applicant, template)

* ``OutboxMessage`` is one message as the recruiter sent it: the canonical MIME (the clean
  copy that goes to Sent), its reply identifiers (``reply_token`` in the Reply-To,
  ``short_id`` in the subject) and, for a tracked send, how it went out (``mode``).
* ``OutboxRecipient`` is one To, Cc or Bcc recipient: for a tracked send, the Message-ID
  and the state of that recipient's own copy; for every send, whether they replied.
* ``TrackingEvent`` is one hit on a tracked copy's pixel or links, with its raw signals
  and the verdict (a person, or a machine and why).

Webhooks::

    Organisation 1─* WebhookSubscription 1─* WebhookDelivery

* ``WebhookSubscription`` is one receiver URL of an organisation and the events it wants,
  with its signing secret sealed (and the one being retired, during a rotation).
* ``WebhookDelivery`` is one event for one subscription: the durable queue the worker sends
  from (:mod:`sync.webhooks`), and the delivery log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from postroom.states import AccountStatus, DeliveryStatus, FolderState, SendMode, UserRole

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Outbox rows the worker still has something to do for: not settled, or a tracked send whose
# recipients' copies are still looked for in Sent. Written out literally, as the partial index
# ix_outbox_open is defined, so that SQLite and PostgreSQL can prove the index applies.
OUTBOX_OPEN = "status IN ('queued', 'sending', 'uncertain') OR cleanup_until IS NOT NULL"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organisation(Base):
    """Owns everything: accounts, applicants, templates, messages, tracking, users. ``demo``
    marks the organisation ``postroom demo`` seeds (and removes)."""

    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """Someone who signs in to the web app: one organisation, a role (:class:`UserRole`), an
    argon2id password hash (never the password)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalised; one sign-in per address
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=UserRole.RECRUITER.value)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # changes when the password does: a session cookie from before a change is refused
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token of the JSON API, acting as its user. Only its SHA-256 is stored: the token
    (256 random bits) is shown once when created."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart in a list
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginFailure(Base):
    """A failed sign-in, kept for the rate limit (:mod:`services.users`): by address and by client."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_email_at", "email", "at"), Index("ix_login_failures_ip_at", "ip", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailAccount(Base):
    """A connected mailbox. ``secret`` holds encrypted credentials (see postroom.crypto)."""

    __tablename__ = "mail_accounts"
    __table_args__ = (UniqueConstraint("org_id", "provider", "email"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    provider: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    # active | syncing | backing-off | reconnect-needed | disabled (see sync.scheduler)
    status: Mapped[str] = mapped_column(String(32), default=AccountStatus.ACTIVE.value)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_class: Mapped[str | None] = mapped_column(String(64))
    failure_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # due time; a new account is due at once. None: not scheduled (reconnect-needed, disabled)
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True, default=utcnow)
    # A worker holds the account while it syncs it; an expired lease is free again.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # queued for a Celery worker
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Folder(Base):
    """One remote folder with its persisted sync state (see sync.engine for the state machine).

    Progress (``services.progress``): ``messages_found`` is how many messages the server holds
    in the folder — the length of the complete listing an initial sync starts from (None: not
    listed yet), then kept by every pass; ``messages_indexed`` is how many of them are in the
    header index (indexed or quarantined), written once per batch while the initial sync runs.
    A folder's initial sync is done once its ``state`` is ``incremental``; from then on the two
    are equal."""

    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(1000))
    role: Mapped[str | None] = mapped_column(String(32))
    delimiter: Mapped[str] = mapped_column(String(4), default="/")
    state: Mapped[str] = mapped_column(String(16), default=FolderState.INITIAL.value)
    cursor: Mapped[str | None] = mapped_column(Text)
    exists_remote: Mapped[bool] = mapped_column(Boolean, default=True)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    messages_found: Mapped[int | None] = mapped_column(Integer)
    messages_indexed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Thread(Base):
    __tablename__ = "threads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    normalised_subject: Mapped[str] = mapped_column(Text, default="")
    last_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ThreadKey(Base):
    """Message-ID (or ``hint:<account>:<id>``) → thread, including ids only referenced so far."""

    __tablename__ = "thread_keys"
    __table_args__ = (UniqueConstraint("org_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(1000))
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)


class Body(Base):
    """Raw MIME of a message kept per the body policy; the bytes live in the blob directory."""

    __tablename__ = "bodies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(200))
    # its preview (postroom.message_parts.preview), written when stored; None: stored before 0011
    snippet: Mapped[str | None] = mapped_column(Text)  # the first words of its text
    attachments: Mapped[int | None] = mapped_column(Integer)  # how many (those in its first 256 KiB)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Email(Base):
    """One distinct message per organisation, however many mailboxes hold it.

    Keyed by Message-ID *and* a fingerprint of From, Date and Subject
    (:func:`postroom.mime.fingerprint`): some mailers reuse Message-IDs, and a sender can
    reuse one on purpose, so two different messages with one id stay two emails (both
    marked ``id_reused``) and neither hides the other in an applicant's history."""

    __tablename__ = "emails"
    __table_args__ = (
        UniqueConstraint("org_id", "message_id", "fingerprint"),
        Index(
            "ix_emails_body_wanted", "id", sqlite_where=text("body_wanted = 1"), postgresql_where=text("body_wanted")
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(1000))
    fingerprint: Mapped[str] = mapped_column(String(32), default="", server_default="")
    # another email of the organisation has the same Message-ID but a different fingerprint
    id_reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("threads.id", ondelete="SET NULL"), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_addr: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[list[str]] = mapped_column(JSON, default=list)
    to_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    body_id: Mapped[int | None] = mapped_column(ForeignKey("bodies.id", ondelete="SET NULL"))
    body_error: Mapped[str | None] = mapped_column(Text)  # quarantine reason for an unparseable body
    # in some applicant's history and its body not stored yet: what the "applicants" body policy
    # fetches. Kept by sync.history (set) and sync.bodies (cleared), so an idle pass finds the
    # wanted bodies through a tiny partial index instead of scanning the mailbox.
    body_wanted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Participant(Base):
    """Canonical address of everyone on a message, for applicant matching by index lookup."""

    __tablename__ = "participants"
    __table_args__ = (Index("ix_participants_org_address", "org_id", "address"),)
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    role: Mapped[str] = mapped_column(String(8), primary_key=True)  # from | to | cc | bcc | reply-to
    org_id: Mapped[int] = mapped_column(Integer)


class MessageCopy(Base):
    """Header-index row: one message in one folder of one account, by provider identity."""

    __tablename__ = "message_copies"
    __table_args__ = (UniqueConstraint("folder_id", "remote_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"), index=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(String(200))
    email_id: Mapped[int | None] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    flags: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int | None] = mapped_column(BigInteger)
    internal_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    thread_hint: Mapped[str | None] = mapped_column(String(200))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuarantinedMessage(Base):
    """A message that could not be indexed (``stage`` "headers") or whose body could not be
    stored (``stage`` "body"), with the reason. It never blocks its folder: a headers-stage
    entry keeps a placeholder copy (no email) so the engine does not fetch the message again
    every pass; a body-stage entry sets ``emails.body_error`` so the body is not fetched
    again. ``retry_requested`` (``postroom quarantine retry``) makes the next pass try again.
    The entry goes with its copy when the message leaves the folder."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"), index=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"))
    copy_id: Mapped[int] = mapped_column(ForeignKey("message_copies.id", ondelete="CASCADE"), unique=True)
    remote_id: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(1000))
    stage: Mapped[str] = mapped_column(String(16))  # headers | body
    reason: Mapped[str] = mapped_column(Text)
    retry_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Applicant(Base):
    __tablename__ = "applicants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApplicantAddress(Base):
    __tablename__ = "applicant_addresses"
    __table_args__ = (UniqueConstraint("org_id", "canonical"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    applicant_id: Mapped[int] = mapped_column(ForeignKey("applicants.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))  # as entered
    canonical: Mapped[str] = mapped_column(String(320))


class HistoryEntry(Base):
    """One entry per applicant per distinct message, whichever mailboxes saw it."""

    __tablename__ = "history_entries"
    __table_args__ = (UniqueConstraint("applicant_id", "email_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    applicant_id: Mapped[int] = mapped_column(ForeignKey("applicants.id", ondelete="CASCADE"))
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # inbound | outbound
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """A message to send, committed with its Message-ID before any network I/O.

    States: ``queued`` → ``sending`` → ``sent`` | ``failed`` | ``uncertain``. Every
    change is compare-and-set on the status. A row left in ``sending`` (its process
    died) or interrupted after the server may have accepted it is ``uncertain``: it
    is never sent again automatically. ``owner``/``claimed_until`` name the process
    that holds a ``queued`` or ``sending`` row; ``refused`` maps recipients the server
    refused while accepting the others to its reason.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("account_id", "message_id"),
        # the worker's one query per pass reads only the rows not settled yet (migrations 0006, 0008)
        Index(
            "ix_outbox_open",
            "account_id",
            sqlite_where=text(OUTBOX_OPEN),
            postgresql_where=text(OUTBOX_OPEN),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str] = mapped_column(String(1000))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    sent_copy_id: Mapped[str | None] = mapped_column(String(200))
    refused: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    owner: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # Sent last searched for an uncertain row
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # reply identifiers (services.sending): Reply-To carries reply_to (…+<reply_token>@…), the subject [short_id]
    reply_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    short_id: Mapped[str | None] = mapped_column(String(16), index=True)
    reply_to: Mapped[str | None] = mapped_column(String(320))
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("threads.id", ondelete="SET NULL"))
    applicant_id: Mapped[int | None] = mapped_column(ForeignKey("applicants.id", ondelete="SET NULL"), index=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    tracked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    mode: Mapped[str] = mapped_column(String(16), default=SendMode.SINGLE.value, server_default=SendMode.SINGLE.value)
    # tracked: until then, each worker pass looks in Sent for recipients' copies a server filed itself
    cleanup_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invite: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # uid, sequence, method, start, end, tz, location


class Template(Base):
    """A message template: subject and Markdown body with ``{{ placeholders }}`` (rendered in
    Jinja2's sandbox, see :mod:`postroom.templating`)."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    json_part: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxRecipient(Base):
    """One recipient of an outbox message. On a tracked send each has a copy of its own
    (``message_id``, ``status`` — the outbox states, one recipient at a time); on any send,
    a reply from them is recorded here (``replied_at``, or ``auto_replied_at`` for an
    auto-reply, which never counts as a reply), and a bounce (``bounced_at``, ``bounce_status``)."""

    __tablename__ = "outbox_recipients"
    __table_args__ = (UniqueConstraint("outbox_id", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))  # normalised
    kind: Mapped[str] = mapped_column(String(4))  # to | cc | bcc
    message_id: Mapped[str] = mapped_column(String(1000), index=True)  # this recipient's copy (tracked)
    status: Mapped[str | None] = mapped_column(String(16))  # tracked sends only
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # Sent last searched for its copy
    copy_removed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reply_email_id: Mapped[int | None] = mapped_column(ForeignKey("emails.id", ondelete="SET NULL"))
    auto_replied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a DSN named them (processing mailbox)
    bounce_status: Mapped[str | None] = mapped_column(String(16))  # RFC 3463, e.g. "5.1.1"
    bounce_reason: Mapped[str | None] = mapped_column(Text)  # the diagnostic, one line


class TrackingEvent(Base):
    """One hit on a tracked copy: its raw signals and the verdict (:mod:`postroom.hits`)."""

    __tablename__ = "tracking_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("outbox_recipients.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # open | click
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    seconds_after_send: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(8))
    user_agent: Mapped[str] = mapped_column(Text, default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    link: Mapped[int | None] = mapped_column(Integer)  # which link of the message (clicks)
    url: Mapped[str | None] = mapped_column(Text)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(String(200), default="")


class WebhookSubscription(Base):
    """A receiver of an organisation's events. ``secret`` (and ``previous_secret`` while it is
    being rotated) is sealed by :class:`postroom.crypto.SecretBox` as ``{"secret": "whsec_..."}``.
    A 410 answer turns it off (``active`` false, ``disabled_reason`` says why)."""

    __tablename__ = "webhook_subscriptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription: queued in the caller's transaction, sent by the worker
    until delivered or given up (``next_attempt_at`` is NULL once settled). ``msg_id`` is the
    ``webhook-id`` header, the same on every retry."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The processing mailbox's models live in a module of their own; imported here so that
# Base.metadata (migrations, tests) has them whoever imports this module.
from postroom import models_inbound  # noqa: E402,F401
