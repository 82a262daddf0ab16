"""Database models of the processing mailbox (:mod:`sync.inbound`). They hold data only.

::

    MailAccount 1─1 InboundMailbox 1─* InboundItem 1─* InboundAttachment
                                            │ raw message: Body (the blob directory)
                                            └─ routed to an outbox message or an applicant

* ``InboundMailbox`` designates an account: the folder mail is taken from, the two folders it
  is moved to, how it is moved (``auto``: MOVE where announced; ``copy-delete``: always COPY +
  STORE ``\\Deleted`` + UID EXPUNGE), and how its last run went.
* ``InboundItem`` is one message taken, keyed by where it was taken from — (mailbox,
  UIDVALIDITY, UID), unique, which is what makes a message taken exactly once — with what
  parsing made of it (data, text, who sent it, whether it was an automatic reply), where it was
  routed, its status (:class:`postroom.states.InboundStatus`) and reason, the raw message
  (kept for a retry, as a :class:`~postroom.models.Body` in the blob directory) and whether it
  has been moved out of the source folder yet.
* ``InboundAttachment`` is one attachment kept, its bytes in the blob directory, linked to
  the applicant the message belongs to when it is known (their timeline lists it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models import Base, UTCDateTime, utcnow
from postroom.states import InboundStatus, MoveMode


class InboundMailbox(Base):
    """An account designated as a processing mailbox (one per account)."""

    __tablename__ = "inbound_mailboxes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("mail_accounts.id", ondelete="CASCADE"), unique=True)
    folder: Mapped[str] = mapped_column(String(1000), default="INBOX")
    processed_folder: Mapped[str] = mapped_column(String(1000), default="processed")
    failed_folder: Mapped[str] = mapped_column(String(1000), default="failed")
    move_mode: Mapped[str] = mapped_column(String(16), default=MoveMode.AUTO.value)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboundItem(Base):
    """One message a processing mailbox took (see the module docstring)."""

    __tablename__ = "inbound_items"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uidvalidity", "uid"),
        Index("ix_inbound_items_org_status", "org_id", "status"),
        Index("ix_inbound_items_mailbox_message_id", "mailbox_id", "message_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("inbound_mailboxes.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default=InboundStatus.PROCESSED.value)
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed, one sentence
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_source: Mapped[str | None] = mapped_column(String(16))  # "json part" | "json" | "yaml"
    text: Mapped[str] = mapped_column(Text, default="")
    auto_reply: Mapped[str] = mapped_column(Text, default="")  # why it is an automatic reply; "" if not
    sender: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    defects: Mapped[list[str]] = mapped_column(JSON, default=list)
    routed_kind: Mapped[str | None] = mapped_column(String(16))  # "outbox" | "applicant"
    routed_id: Mapped[int | None] = mapped_column(Integer)
    routed_via: Mapped[str | None] = mapped_column(String(16))
    applicant_id: Mapped[int | None] = mapped_column(ForeignKey("applicants.id", ondelete="SET NULL"), index=True)
    bounces: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=list)  # whom a bounce marked
    body_id: Mapped[int | None] = mapped_column(ForeignKey("bodies.id", ondelete="SET NULL"))
    size: Mapped[int | None] = mapped_column(BigInteger)
    moved: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    moved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InboundAttachment(Base):
    """One attachment of an inbound message, its bytes in the blob directory."""

    __tablename__ = "inbound_attachments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("inbound_items.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # image | video | pdf | office
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(200))  # relative to the blob directory
    applicant_id: Mapped[int | None] = mapped_column(ForeignKey("applicants.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
