"""``postroom outbox retry``: what a person does with a message that did not go out, or
may have gone out (see :mod:`sync.outbox` for the states).

* ``queued`` / ``failed``: sent now.
* ``sending`` held by a process that still runs: refused (wait for it).
* ``sending`` whose process died, and ``uncertain``: the account's Sent folder is searched
  for its Message-ID first; found, it is marked ``sent`` and nothing is sent. Not found,
  it is sent again only with ``force``: the server may have had it even though no copy is
  in Sent (an IMAP account's copy is stored by Postroom only after the server answered).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.logs import error_summary
from postroom.models import MailAccount, OutboxMessage
from providers.errors import ProviderError
from sync.accounts import open_account
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
    utcnow,
)
from sync.outbox_rows import OutboxEntry, OutboxError, OutboxStatus, get_entry


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
                "--force to send it anyway."
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
