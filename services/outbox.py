"""Sending, as a user does it: queue a message (composed, with its Message-ID, before any
network I/O), send it now, list the outbox, and retry a message that did not go out — or may
have gone out.

The states and the delivery itself are :mod:`sync.outbox`'s (the worker's pass uses them too):

* ``queued`` / ``failed``: :func:`retry_message` sends it now.
* ``sending`` held by a process that still runs: refused (wait for it).
* ``sending`` whose process died, and ``uncertain``: the account's Sent folder is searched
  for its Message-ID first; found, it is marked ``sent`` and nothing is sent. Not found,
  it is sent again only with ``force``: the server may have had it even though no copy is
  in Sent (an IMAP account's copy is stored by Postroom only after the server answered).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.addresses import normalise_address
from postroom.compose import ComposeError, compose_message, unsafe_header_text
from postroom.config import Config
from postroom.errors import OutboxError
from postroom.logs import error_summary
from postroom.models import Email, MailAccount, OutboxMessage, utcnow
from providers.errors import ProviderError
from sync.credentials import open_account
from sync.leases import worker_id
from sync.outbox import (
    QUEUE_HOLD,
    SEND_CLAIM,
    abandoned_reason,
    cas,
    deliver,
    make_uncertain,
    not_deliverable,
    settle_from_sent,
    submit,
)
from sync.outbox_rows import OutboxEntry, OutboxStatus, entries, get_entry

__all__ = [
    "OutboxEntry",
    "OutboxStatus",
    "RetryOutcome",
    "SendRequest",
    "list_outbox",
    "queue_message",
    "retry_message",
    "send_message",
]


@dataclass(frozen=True)
class SendRequest:
    account_id: int
    to: Sequence[str]
    subject: str
    text: str
    in_reply_to: str | None = None


def _reply_id(value: str) -> str:
    """``--in-reply-to`` as written, with ``<>`` added to a bare ``id@host``; checked by compose."""
    value = value.strip()
    return value if "<" in value or ">" in value else f"<{value}>"


def queue_message(session: Session, req: SendRequest, *, owner: str | None = None) -> OutboxMessage:
    """Compose ``req`` and add it to the outbox as ``queued`` (held by ``owner`` for a while
    if given). Raises :class:`OutboxError` for input that cannot be sent as asked."""
    account = session.get(MailAccount, req.account_id)
    if account is None:
        raise OutboxError(f"No mail account with id {req.account_id}.", "account")
    if not req.to:
        raise OutboxError("A message needs at least one recipient ({to}).", "to")
    recipients: list[str] = []
    for addr in req.to:
        if unsafe_header_text(addr):
            raise OutboxError(
                f"The recipient address {addr!r} contains a line break or another control character.", "to"
            )
        norm = normalise_address(addr)
        if not norm or "@" not in norm:
            raise OutboxError(f"{addr!r} is not an email address.", "to")
        recipients.append(norm)
    in_reply_to = _reply_id(req.in_reply_to) if req.in_reply_to else None
    references: tuple[str, ...] = ()
    if in_reply_to:
        parent = session.scalar(
            select(Email.references).where(Email.org_id == account.org_id, Email.message_id == in_reply_to).limit(1)
        )
        references = (*(parent or []), in_reply_to)  # compose leaves out ids of any other form
    try:
        message_id, raw = compose_message(
            sender=account.email,
            to=recipients,
            subject=req.subject,
            text=req.text,
            in_reply_to=in_reply_to,
            references=references,
            domain=account.email.rsplit("@", 1)[-1],
        )
    except ComposeError as exc:
        raise OutboxError(exc.template, exc.field) from None
    row = OutboxMessage(
        account_id=account.id,
        message_id=message_id,
        raw=raw,
        recipients=recipients,
        status=OutboxStatus.QUEUED,
        refused={},
        owner=owner,
        claimed_until=utcnow() + QUEUE_HOLD if owner else None,
    )
    session.add(row)
    session.flush()
    return row


def send_message(config: Config, sessions: sessionmaker[Session], req: SendRequest) -> OutboxEntry:
    """Queue ``req`` held by this process, then submit it at once; returns how it ended
    (``sent``, ``uncertain``, ``failed``, or ``queued`` for a safe failure the worker retries)."""
    owner = worker_id()
    with sessions.begin() as s:
        outbox_id = queue_message(s, req, owner=owner).id
    return deliver(config, sessions, outbox_id, owner=owner)


def list_outbox(session: Session, status: str | None = None) -> list[OutboxEntry]:
    """Every outbox row, newest first, optionally only those with ``status``."""
    if status is not None and status not in OutboxStatus.__members__.values():
        raise OutboxError(f"{{status}} must be one of {', '.join(OutboxStatus)}, not {status!r}.", "status")
    return entries(session, [OutboxMessage.status == status] if status else [])


@dataclass(frozen=True)
class RetryOutcome:
    entry: OutboxEntry
    found_in_sent: bool = False  # an uncertain message turned out to have gone out
    already_sent: bool = False


def retry_message(
    config: Config, sessions: sessionmaker[Session], outbox_id: int, *, force: bool = False
) -> RetryOutcome:
    """``postroom outbox retry``: send a queued or failed message now. An uncertain one (or
    one whose sender died) is looked for in Sent first: found, it is marked sent; not found,
    it is sent again only with ``force``. Raises :class:`OutboxError` with the reason."""
    entry = get_entry(sessions, outbox_id)
    me = worker_id()
    if entry.status == OutboxStatus.SENT:
        return RetryOutcome(entry, already_sent=True)
    if entry.status == OutboxStatus.SENDING:
        with sessions() as s:
            row = s.get_one(OutboxMessage, outbox_id)
            why = abandoned_reason(row.owner, row.claimed_until, utcnow())
        if why is None:
            raise OutboxError(
                f"Message {entry.id} ({entry.message_id}) is being sent by a process that is still running; "
                "wait for it to finish."
            )
        with sessions.begin() as s:
            make_uncertain(s, outbox_id, row.owner, why)
        entry = get_entry(sessions, outbox_id)
    if entry.status == OutboxStatus.QUEUED:
        return RetryOutcome(deliver(config, sessions, outbox_id, owner=me))
    if entry.status == OutboxStatus.FAILED:
        with sessions.begin() as s:
            claimed = cas(
                s,
                outbox_id,
                [OutboxStatus.FAILED],
                status=OutboxStatus.SENDING,
                owner=me,
                claimed_until=utcnow() + SEND_CLAIM,
                attempts=OutboxMessage.attempts + 1,
                refused={},
            )
        if not claimed:
            raise OutboxError(f"Message {entry.id} changed while it was being retried; look at it again.")
        return RetryOutcome(submit(config, sessions, outbox_id, me, None))
    if entry.status != OutboxStatus.UNCERTAIN:
        raise OutboxError(not_deliverable(entry))
    return _retry_uncertain(config, sessions, entry, me, force)


def _retry_uncertain(
    config: Config, sessions: sessionmaker[Session], entry: OutboxEntry, me: str, force: bool
) -> RetryOutcome:
    with sessions() as s:
        provider = open_account(s.get_one(MailAccount, entry.account_id), config, sessions)
    try:
        try:
            found = provider.find_sent(entry.message_id)
        except ProviderError as exc:
            if not force:
                raise OutboxError(
                    f"Message {entry.id} ({entry.message_id}) may already have gone out, and the Sent folder of "
                    f"{entry.account_email} cannot be searched now ({error_summary(exc)}); try again later."
                ) from None
            found = None
        if found is not None:
            settle_from_sent(sessions, entry.id, entry.message_id, found)
            return RetryOutcome(get_entry(sessions, entry.id), found_in_sent=True)
        if not force:
            raise OutboxError(
                f"Message {entry.id} ({entry.message_id}) may already have gone out even though it is not in the "
                f"Sent folder of {entry.account_email} (the connection failed after the server had it), so it is "
                f"not sent again: ask the recipients ({', '.join(entry.recipients)}) or check that folder, and use "
                "{force} to send it anyway.",
                "force",
            )
        with sessions.begin() as s:
            claimed = cas(
                s,
                entry.id,
                [OutboxStatus.UNCERTAIN],
                status=OutboxStatus.SENDING,
                owner=me,
                claimed_until=utcnow() + SEND_CLAIM,
                attempts=OutboxMessage.attempts + 1,
            )
        if not claimed:
            raise OutboxError(f"Message {entry.id} changed while it was being retried; look at it again.")
        return RetryOutcome(submit(config, sessions, entry.id, me, provider))
    finally:
        provider.close()
