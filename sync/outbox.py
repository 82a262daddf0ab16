"""Sending: outbox first, then send, then record — never twice.

1. The composed message is committed to ``outbox`` with its pre-generated
   Message-ID (state ``queued``) before any network I/O.
2. The row moves to ``sending`` in its own transaction, then the provider
   submits it.
3. On success the row becomes ``sent``; a copy is placed in Sent unless the
   provider already did so.

A row found in ``sending`` (the process died between 2 and 3) is never
submitted again automatically: the server may have accepted it already. It is
reported as ``uncertain`` for a person to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.addresses import normalise_address
from postroom.compose import compose_message
from postroom.config import Config
from postroom.models import Email, MailAccount, MessageCopy, OutboxMessage
from providers.base import Capability, MailProvider, OutgoingMessage
from providers.errors import ProviderError, SendError
from sync.accounts import open_account


class OutboxError(Exception):
    """A send request that cannot be carried out; the message says why in one sentence."""


@dataclass(frozen=True)
class SendRequest:
    account_id: int
    to: Sequence[str]
    subject: str
    text: str
    in_reply_to: str | None = None


def _msgid(value: str) -> str:
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def queue_message(session: Session, req: SendRequest) -> OutboxMessage:
    account = session.get(MailAccount, req.account_id)
    if account is None:
        raise OutboxError(f"No mail account with id {req.account_id}.")
    if not req.to:
        raise OutboxError("A message needs at least one recipient (--to).")
    recipients = []
    for addr in req.to:
        norm = normalise_address(addr)
        if not norm or "@" not in norm:
            raise OutboxError(f"{addr!r} is not an email address.")
        recipients.append(norm)
    references: tuple[str, ...] = ()
    in_reply_to = _msgid(req.in_reply_to) if req.in_reply_to else None
    if in_reply_to:
        parent = session.scalar(select(Email).where(Email.org_id == account.org_id, Email.message_id == in_reply_to))
        references = (*(parent.references if parent else []), in_reply_to)
    domain = account.email.rsplit("@", 1)[-1]
    message_id, raw = compose_message(
        sender=account.email,
        to=recipients,
        subject=req.subject,
        text=req.text,
        in_reply_to=in_reply_to,
        references=references,
        domain=domain,
    )
    row = OutboxMessage(account_id=account.id, message_id=message_id, raw=raw, recipients=recipients, status="queued")
    session.add(row)
    session.flush()
    return row


def deliver(
    config: Config, sessions: sessionmaker[Session], outbox_id: int, provider: MailProvider | None = None
) -> OutboxMessage:
    """Submit one queued message. Raises OutboxError when it was not (or may not have been) sent."""
    with sessions.begin() as s:
        row = s.get(OutboxMessage, outbox_id)
        if row is None:
            raise OutboxError(f"No outbox message with id {outbox_id}.")
        if row.status == "sent":
            return row
        if row.status in ("sending", "uncertain"):
            row.status = "uncertain"
            raise OutboxError(f"Message {row.message_id} may already have been sent; not sending it again.")
        account = s.get_one(MailAccount, row.account_id)
        own = provider or open_account(account, config, sessions)
        row.status = "sending"
        message = OutgoingMessage(
            raw=row.raw,
            sender=account.email,
            recipients=tuple(row.recipients),
            message_id=row.message_id,
            thread_hint=_thread_hint(s, account, row.raw),
        )
    try:
        try:
            result = own.send(message)
        except ProviderError as exc:
            status = "failed" if isinstance(exc, SendError) else "queued"  # transient: safe to try again
            with sessions.begin() as s:
                s.execute(
                    update(OutboxMessage).where(OutboxMessage.id == outbox_id).values(status=status, error=str(exc))
                )
            raise OutboxError(f"Sending {message.message_id} failed: {exc}") from None
        copy_id: str | None = result.provider_id
        note: str | None = None
        if not result.sent_copy_stored and Capability.STORE_SENT_COPY in own.capabilities:
            try:
                copy_id = own.store_sent_copy(message.raw)
            except ProviderError as exc:  # sent, but no copy: record, do not resend
                copy_id, note = None, f"sent, but the copy in Sent could not be stored: {exc}"
        with sessions.begin() as s:
            s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id)
                .values(status="sent", sent_at=datetime.now(UTC), sent_copy_id=copy_id, error=note)
            )
            return s.get_one(OutboxMessage, outbox_id)
    finally:
        if provider is None:
            own.close()


def _thread_hint(session: Session, account: MailAccount, raw: bytes) -> str | None:
    """The provider's thread id of the message this one replies to, in this account
    (Gmail's threadId, Graph's conversationId), so the reply joins that thread there."""
    parent = BytesHeaderParser().parsebytes(raw).get("In-Reply-To")
    if not parent:
        return None
    return session.scalar(
        select(MessageCopy.thread_hint)
        .join(Email, Email.id == MessageCopy.email_id)
        .where(
            MessageCopy.account_id == account.id,
            Email.org_id == account.org_id,
            Email.message_id == str(parent).strip(),
            MessageCopy.thread_hint.is_not(None),
        )
        .limit(1)
    )


def send_message(config: Config, sessions: sessionmaker[Session], req: SendRequest) -> OutboxMessage:
    with sessions.begin() as s:
        outbox_id = queue_message(s, req).id
    return deliver(config, sessions, outbox_id)


def read_body(path: str) -> str:
    try:
        if path == "-":
            import sys

            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OutboxError(f"Body file {path} does not exist.") from None
    except UnicodeDecodeError:
        raise OutboxError(f"Body file {path} is not UTF-8 text.") from None
    except OSError as exc:
        raise OutboxError(f"Body file {path} cannot be read: {exc.strerror}.") from None
