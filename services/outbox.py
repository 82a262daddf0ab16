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

Given an ``org_id`` (the web app and the API always give one), only that organisation's
messages are listed or retried; another organisation's message is refused exactly like a
missing one (:class:`NoSuchOutboxMessage`). Without one (the operator's CLI) every message is.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.errors import OutboxError
from postroom.logs import error_summary
from postroom.models import MailAccount, OutboxMessage, OutboxRecipient, utcnow
from providers.errors import ProviderError
from services import sending
from services.sending import SendRequest, queue_message
from sync.credentials import open_account
from sync.leases import worker_id
from sync.outbox import (
    SEND_CLAIM,
    abandoned_reason,
    cas,
    deliver,
    make_uncertain,
    not_deliverable,
    settle_from_sent,
    submit,
)
from sync.outbox_rows import OutboxEntry, OutboxStatus, cas_recipient, entries, get_entry
from sync.tracked import settle_uncertain

__all__ = [
    "NoSuchOutboxMessage",
    "OutboxEntry",
    "OutboxStatus",
    "RetryOutcome",
    "SendRequest",
    "list_outbox",
    "queue_message",
    "retry_message",
    "send_message",
]


def send_message(config: Config, sessions: sessionmaker[Session], req: SendRequest) -> OutboxEntry:
    """:func:`services.sending.send_message`, answering only how the message ended."""
    return sending.send_message(config, sessions, req).entry


class NoSuchOutboxMessage(OutboxError):
    """An outbox id that does not exist or is another organisation's (field ``id``)."""


def list_outbox(session: Session, status: str | None = None, org_id: int | None = None) -> list[OutboxEntry]:
    """Every outbox row of organisation ``org_id`` (None: of every organisation), newest
    first, optionally only those with ``status``."""
    if status is not None and status not in OutboxStatus.__members__.values():
        raise OutboxError(f"{{status}} must be one of {', '.join(OutboxStatus)}, not {status!r}.", "status")
    where = [OutboxMessage.status == status] if status else []
    if org_id is not None:
        where.append(MailAccount.org_id == org_id)  # entries() joins the account
    return entries(session, where)


def _check_org(sessions: sessionmaker[Session], outbox_id: int, org_id: int | None) -> None:
    """Refuse an outbox id that is missing or, given ``org_id``, another organisation's."""
    query = select(OutboxMessage.id).join(MailAccount, MailAccount.id == OutboxMessage.account_id)
    query = query.where(OutboxMessage.id == outbox_id)
    with sessions() as s:
        found = s.scalar(query if org_id is None else query.where(MailAccount.org_id == org_id))
    if found is None:
        raise NoSuchOutboxMessage(f"No outbox message with id {outbox_id}.", "id")


@dataclass(frozen=True)
class RetryOutcome:
    entry: OutboxEntry
    found_in_sent: bool = False  # an uncertain message turned out to have gone out
    already_sent: bool = False


def retry_message(
    config: Config, sessions: sessionmaker[Session], outbox_id: int, *, force: bool = False, org_id: int | None = None
) -> RetryOutcome:
    """``postroom outbox retry``: send a queued or failed message now. An uncertain one (or
    one whose sender died) is looked for in Sent first: found, it is marked sent; not found,
    it is sent again only with ``force``. Raises :class:`OutboxError` with the reason
    (:class:`NoSuchOutboxMessage` for a missing id, or another organisation's given ``org_id``)."""
    _check_org(sessions, outbox_id, org_id)
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
            _requeue_recipients(s, outbox_id, OutboxStatus.FAILED)  # a tracked send: those not reached
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
    with sessions() as s:
        tracked = s.get_one(OutboxMessage, outbox_id).tracked
    if tracked:
        return _retry_uncertain_tracked(config, sessions, entry, me, force)
    return _retry_uncertain(config, sessions, entry, me, force)


def _requeue_recipients(s: Session, outbox_id: int, state: OutboxStatus) -> list[str]:
    """A tracked send's recipients in ``state`` go back to ``queued``; returns their addresses."""
    rows = s.execute(
        select(OutboxRecipient.id, OutboxRecipient.address).where(
            OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.status == state.value
        )
    ).all()
    for rid, _ in rows:
        cas_recipient(s, rid, [state], status=OutboxStatus.QUEUED.value, error=None)
    return [address for _, address in rows]


def _retry_uncertain_tracked(
    config: Config, sessions: sessionmaker[Session], entry: OutboxEntry, me: str, force: bool
) -> RetryOutcome:
    """Each uncertain recipient's copy is looked for in Sent: found, it went out. Those not
    found are sent again only with ``force``; the recipients already sent never are."""
    with sessions() as s:
        provider = open_account(s.get_one(MailAccount, entry.account_id), config, sessions)
    try:
        try:
            left = settle_uncertain(sessions, provider, entry.id)
        except ProviderError as exc:
            raise OutboxError(
                f"Message {entry.id} ({entry.message_id}) may already have gone out to some recipients, and the Sent "
                f"folder of {entry.account_email} cannot be searched now ({error_summary(exc)}); try again later."
            ) from None
        with sessions() as s:
            unsure = list(
                s.scalars(
                    select(OutboxRecipient.address).where(
                        OutboxRecipient.outbox_id == entry.id,
                        OutboxRecipient.status == OutboxStatus.UNCERTAIN.value,
                    )
                )
            )
        if left and not force:
            raise OutboxError(
                f"Message {entry.id} ({entry.message_id}) may already have reached {', '.join(unsure)} although "
                f"their copies are not in the Sent folder of {entry.account_email}, so they are not sent again: ask "
                "them, and use {force} to send them their copies anyway.",
                "force",
            )
        with sessions.begin() as s:
            if force:
                _requeue_recipients(s, entry.id, OutboxStatus.UNCERTAIN)
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
        outcome = submit(config, sessions, entry.id, me, provider)
        return RetryOutcome(outcome, found_in_sent=not left)
    finally:
        provider.close()


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
