"""Processing mailboxes, as a user manages them: designate an account, run it, read what it took,
retry a failed message, download an applicant's attachment.

The loop itself is :mod:`sync.inbound` (the worker runs it every ``[inbound] interval``); these
functions are what the CLI (``postroom inbound``), the web app and ``/api/v1`` call. Another
organisation's ids answer exactly like missing ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.errors import UserError
from postroom.models import MailAccount
from postroom.models_inbound import InboundAttachment, InboundItem, InboundMailbox
from postroom.states import InboundStatus, MoveMode
from providers.errors import BackendNotFound
from providers.registry import backend_class
from services.orgs import resolve_org
from services.paging import Page, clamp
from sync import inbound as loop
from sync.inbound import RunResult
from sync.inbound_store import AttachmentView, InboundItemView, item_view

__all__ = [
    "MOVE_MODES",
    "STATUSES",
    "AttachmentFile",
    "AttachmentView",
    "InboundError",
    "InboundItemView",
    "InboundMailboxView",
    "NoSuchInbound",
    "RunResult",
    "add_mailbox",
    "applicant_documents",
    "get_attachment",
    "get_item",
    "item_page",
    "list_items",
    "list_mailboxes",
    "retry_item",
    "run_once",
]

MOVE_MODES = tuple(m.value for m in MoveMode)
STATUSES = tuple(s.value for s in InboundStatus)
MAX_FOLDER = 1000
MAX_LIMIT = 1000


class InboundError(UserError):
    """A processing-mailbox request that cannot be carried out: an unknown account, mailbox
    item or attachment, an account whose backend cannot serve as one, an account designated
    already, a bad folder name or move mode."""


class NoSuchInbound(InboundError):
    """An inbound item or attachment id that does not exist or is another organisation's (the
    two answer alike); its field is ``id``, the web app and the API answer 404."""


@dataclass(frozen=True)
class InboundMailboxView:
    id: int
    account_id: int
    email: str
    folder: str
    processed_folder: str
    failed_folder: str
    move: str
    last_run_at: datetime | None
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "email": self.email,
            "folder": self.folder,
            "processed": self.processed_folder,
            "failed": self.failed_folder,
            "move": self.move,
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "last_error": self.last_error,
        }


def _folder(value: str, field: str) -> str:
    name = value.strip()
    if not name:
        raise InboundError(f"{{{field}}} must name a folder, such as INBOX or processed.", field=field)
    if len(name) > MAX_FOLDER or any(c in name for c in "\r\n\0*%"):
        raise InboundError(f"{{{field}}} is not a usable folder name: {name[:80]!r}.", field=field)
    return name


def add_mailbox(
    session: Session,
    config: Config,
    org_id: int | None,
    account_id: int,
    folder: str = "INBOX",
    processed: str = "processed",
    failed: str = "failed",
    move: str = "auto",
) -> int:
    """Designate the account ``account_id`` (of ``org_id``; None: the default organisation) as a
    processing mailbox taking mail from ``folder``; returns the mailbox's id. The folders are
    created on its first run."""
    org = resolve_org(session, org_id)
    if move not in MOVE_MODES:
        raise InboundError(f"{{move}} must be one of {', '.join(MOVE_MODES)}, not {move!r}.", field="move")
    names = {"folder": _folder(folder, "folder"), "processed": _folder(processed, "processed")}
    names["failed"] = _folder(failed, "failed")
    if len(set(names.values())) < 3:
        raise InboundError(
            "{folder}, {processed} and {failed} must be three different folders.",
            field="folder",
            also=("processed", "failed"),
        )
    account = session.get(MailAccount, account_id)
    if account is None or account.org_id != org:
        raise InboundError(
            f"There is no mail account {account_id}; 'postroom accounts list' shows them.", field="account"
        )
    try:
        supported = bool(getattr(backend_class(account.provider), "supports_inbound", False))
    except BackendNotFound:
        supported = False
    if not supported:
        raise InboundError(
            f"Account {account_id} ({account.provider}) cannot be a processing mailbox: "
            "its backend does not support it (IMAP, Gmail, Microsoft 365 and Exchange accounts can).",
            field="account",
        )
    if session.scalar(select(InboundMailbox.id).where(InboundMailbox.account_id == account_id)) is not None:
        raise InboundError(f"Account {account_id} is a processing mailbox already.", field="account")
    box = InboundMailbox(
        org_id=org,
        account_id=account_id,
        folder=names["folder"],
        processed_folder=names["processed"],
        failed_folder=names["failed"],
        move_mode=move,
    )
    session.add(box)
    session.flush()
    return box.id


def list_mailboxes(session: Session, org_id: int) -> list[InboundMailboxView]:
    rows = session.execute(
        select(InboundMailbox, MailAccount.email)
        .join(MailAccount, MailAccount.id == InboundMailbox.account_id)
        .where(InboundMailbox.org_id == org_id)
        .order_by(InboundMailbox.id)
    ).tuples()
    return [
        InboundMailboxView(
            m.id,
            m.account_id,
            email,
            m.folder,
            m.processed_folder,
            m.failed_folder,
            m.move_mode,
            m.last_run_at,
            m.last_error,
        )
        for m, email in rows
    ]


def list_items(
    session: Session, org_id: int, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[InboundItemView]:
    """The organisation's inbound items, newest first."""
    if status is not None and status not in STATUSES:
        raise InboundError(f"{{status}} must be one of {', '.join(STATUSES)}, not {status!r}.", field="status")
    q = select(InboundItem).where(InboundItem.org_id == org_id)
    if status is not None:
        q = q.where(InboundItem.status == status)
    q = q.order_by(InboundItem.id.desc()).limit(max(1, min(limit, MAX_LIMIT))).offset(max(0, offset))
    return [item_view(session, item) for item in session.scalars(q).all()]


def item_page(
    session: Session, org_id: int, status: str | None = None, offset: int | None = 0, limit: int | None = None
) -> Page[InboundItemView]:
    """One page of the organisation's inbound items (of ``status``), newest first, with the
    total across all pages: what the web page and ``/api/v1/inbound/items`` show."""
    offset, limit = clamp(offset, limit)
    q = select(InboundItem.id).where(InboundItem.org_id == org_id)
    if status is not None:
        if status not in STATUSES:
            raise InboundError(f"{{status}} must be one of {', '.join(STATUSES)}, not {status!r}.", field="status")
        q = q.where(InboundItem.status == status)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    return Page(list_items(session, org_id, status, limit, offset), total, offset, limit)


def get_item(session: Session, org_id: int, item_id: int) -> InboundItemView:
    item = session.get(InboundItem, item_id)
    if item is None or item.org_id != org_id:
        raise NoSuchInbound(f"There is no inbound item {item_id}.", field="id")
    return item_view(session, item)


def run_once(config: Config, sessions: sessionmaker[Session], org_id: int | None = None) -> RunResult:
    """One run over the processing mailboxes (of ``org_id``, or every organisation's)."""
    return loop.run_once(config, sessions, org_id)


def retry_item(config: Config, sessions: sessionmaker[Session], org_id: int, item_id: int) -> InboundItemView:
    """Process ``item_id`` again from its kept raw message; when it now succeeds, its message
    moves from the failed folder to the processed one (found by Message-ID)."""
    try:
        view = loop.retry(config, sessions, org_id, item_id)
    except loop.RetryGone:
        raise InboundError(
            f"Inbound item {item_id} cannot be retried: its message was never kept (over the size limit) "
            "and is no longer in the failed folder.",
            field="id",
        ) from None
    if view is None:
        raise NoSuchInbound(f"There is no inbound item {item_id}.", field="id")
    return view


# ------------------------------------------------------------------------------ attachments


@dataclass(frozen=True)
class AttachmentFile:
    """An attachment ready to download: its name, a safe type to declare, and its file."""

    filename: str
    content_type: str
    size: int
    path: Path


SAFE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4"})


def get_attachment(session: Session, config: Config, org_id: int, attachment_id: int) -> AttachmentFile:
    """An inbound attachment of ``org_id`` to download. Only a few inert types are declared as
    they are; anything else is ``application/octet-stream`` (never HTML or SVG a browser runs)."""
    att = session.get(InboundAttachment, attachment_id)
    if att is None or att.org_id != org_id:
        raise NoSuchInbound(f"There is no attachment {attachment_id}.", field="id")
    ctype = att.content_type if att.content_type in SAFE_TYPES else "application/octet-stream"
    return AttachmentFile(att.filename, ctype, att.size, config.storage.blob_dir / att.path)


def applicant_documents(session: Session, org_id: int, applicant_id: int) -> list[AttachmentView]:
    """The attachments the applicant sent to a processing mailbox, newest first."""
    rows = session.scalars(
        select(InboundAttachment)
        .where(InboundAttachment.org_id == org_id, InboundAttachment.applicant_id == applicant_id)
        .order_by(InboundAttachment.id.desc())
        .limit(200)
    ).all()
    return [AttachmentView(a.id, a.filename, a.content_type, a.size, a.kind, a.applicant_id) for a in rows]
