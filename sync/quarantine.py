"""Quarantine: messages set aside with the reason, so that one bad message never blocks a folder.

Two stages:

* ``headers``: the message could not be indexed (its headers could not be stored even
  after :func:`postroom.mime.parse_headers` cleaned them, or the server refused or garbled
  it on every fetch). A placeholder copy without an email keeps its place in the folder, so
  the engine does not fetch it again every pass and the folder's cursor moves on.
* ``body``: the message is indexed but its body is not stored: not a message at all, larger
  than ``sync.max_message_size``, or refused by the server on every fetch. ``emails.body_error``
  holds the reason, so the body is not fetched again every pass.

Both are listed and retried through :mod:`services.quarantine` (``postroom quarantine list``
/ ``retry``): a headers entry is marked, and the next pass of its account fetches the message
again and indexes it in the same transaction that drops the placeholder (or quarantines it
again, with the new reason); a body entry is cleared, so the next pass fetches the body again.

An entry goes with its copy: when the message leaves the folder, or the folder is resynced,
its entry is gone too.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from postroom.models import Email, MessageCopy, QuarantinedMessage, utcnow
from sync.store import chunks, upsert


class Stage(enum.StrEnum):
    HEADERS = "headers"
    BODY = "body"


@dataclass(frozen=True)
class Placeholder:
    """A message to set aside at the headers stage."""

    remote_id: str
    message_id: str | None
    reason: str
    size: int | None = None


def quarantine_headers(session: Session, account_id: int, folder_id: int, items: Sequence[Placeholder]) -> None:
    """Record each message as a placeholder copy (no email) with its quarantine entry."""
    if not items:
        return
    now = utcnow()
    upsert(  # a placeholder already there (a retry that failed again) gets the new reason
        session,
        MessageCopy.__table__,
        [
            {
                "account_id": account_id,
                "folder_id": folder_id,
                "remote_id": p.remote_id,
                "email_id": None,
                "flags": "",
                "size": p.size,
                "quarantine_reason": p.reason,
                "created_at": now,
            }
            for p in items
        ],
        ("folder_id", "remote_id"),
        update=("quarantine_reason",),
    )
    copy_ids = _copy_ids(session, folder_id, [p.remote_id for p in items])
    _record(
        session,
        [
            {
                "account_id": account_id,
                "folder_id": folder_id,
                "copy_id": copy_ids[p.remote_id],
                "remote_id": p.remote_id,
                "message_id": p.message_id,
                "stage": Stage.HEADERS.value,
                "reason": p.reason,
                "created_at": now,
                "updated_at": now,
            }
            for p in items
            if p.remote_id in copy_ids
        ],
    )


def quarantine_bodies(session: Session, folder_id: int, items: Sequence[tuple[str, int, str]]) -> None:
    """Set aside the bodies of these ``(remote id, email id, reason)`` of one folder: the reason
    goes on the email (so its body is not fetched again), on its copies and into the list."""
    if not items:
        return
    now = utcnow()
    for email_id, reason in {eid: why for _, eid, why in items}.items():
        session.execute(
            update(Email).where(Email.id == email_id).values(body_error=reason, body_wanted=False),
            execution_options={"synchronize_session": False},
        )
        session.execute(
            update(MessageCopy).where(MessageCopy.email_id == email_id).values(quarantine_reason=reason),
            execution_options={"synchronize_session": False},
        )
    copies = {
        rid: (cid, aid, mid)
        for rid, cid, aid, mid in session.execute(
            select(MessageCopy.remote_id, MessageCopy.id, MessageCopy.account_id, Email.message_id)
            .join(Email, Email.id == MessageCopy.email_id)
            .where(MessageCopy.folder_id == folder_id, MessageCopy.remote_id.in_([rid for rid, _, _ in items]))
        )
    }
    _record(
        session,
        [
            {
                "account_id": copies[rid][1],
                "folder_id": folder_id,
                "copy_id": copies[rid][0],
                "remote_id": rid,
                "message_id": copies[rid][2],
                "stage": Stage.BODY.value,
                "reason": reason,
                "created_at": now,
                "updated_at": now,
            }
            for rid, _, reason in items
            if rid in copies
        ],
    )


def _record(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert entries; one already there (a retry that failed again) gets the new reason."""
    table = QuarantinedMessage.__table__
    upsert(
        session,
        table,
        rows,
        ("copy_id",),
        update=("reason", "stage", "message_id", "updated_at"),
        increment=("attempts",),
        reset={"retry_requested": False},
    )


def _copy_ids(session: Session, folder_id: int, remote_ids: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in chunks(list(remote_ids)):
        out.update(
            session.execute(
                select(MessageCopy.remote_id, MessageCopy.id).where(
                    MessageCopy.folder_id == folder_id, MessageCopy.remote_id.in_(part)
                )
            )
            .tuples()
            .all()
        )
    return out


def pending_header_retries(session: Session, folder_id: int) -> list[str]:
    """Remote ids of this folder's headers-stage entries marked for another try."""
    return list(
        session.scalars(
            select(QuarantinedMessage.remote_id)
            .where(
                QuarantinedMessage.folder_id == folder_id,
                QuarantinedMessage.stage == Stage.HEADERS.value,
                QuarantinedMessage.retry_requested,
            )
            .order_by(QuarantinedMessage.id)
        )
    )


def drop_placeholders(session: Session, folder_id: int, remote_ids: Sequence[str]) -> None:
    """Delete the placeholder copies (and so their entries) of these messages, in the
    caller's transaction: the one that indexes them again, or finds them gone."""
    for part in chunks(list(remote_ids)):
        session.execute(
            delete(MessageCopy).where(
                MessageCopy.folder_id == folder_id, MessageCopy.remote_id.in_(part), MessageCopy.email_id.is_(None)
            )
        )
