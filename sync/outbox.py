"""Sending: outbox first, then send, then record — never twice, never forgotten.

States of a row (``outbox.status``, :class:`OutboxStatus`)::

    queued ──claim──▶ sending ──accepted─────────────────────────────▶ sent
      ▲                 │  ├──refused for good (5xx, every recipient)──▶ failed ──retry──▶ sending
      │                 │  ├──failed before the server could take it──▶ queued (tried again after a back-off)
      └─────────────────┘  └──failed after it may have taken it──────▶ uncertain
                         process died, or its claim ran out ─────────▶ uncertain
    uncertain ──its Message-ID found in Sent──▶ sent
    uncertain ──retry --force (a person decided)──▶ sending

1. :func:`services.outbox.queue_message` composes the message with a pre-generated Message-ID and
   commits it as ``queued`` before any network I/O. ``postroom send`` queues it already
   held by itself (``owner`` = its ``host:pid:...`` id, ``claimed_until``), so no worker
   takes it meanwhile; if that process dies before sending, the worker takes the row once
   the hold has run out (at once when the owner is a dead process on this host).
2. Every change of status is one compare-and-set ``UPDATE ... WHERE id = :id AND status
   = :expected`` whose row count says who won: two workers never both submit a row.
   Claiming moves ``queued`` to ``sending`` with the claimant as ``owner`` and a deadline
   (``claimed_until``).
3. The provider submits it; the outcome is written with another compare-and-set.
   Recipients refused while others were accepted are kept in ``refused``.

``uncertain`` means the message may have gone out: the connection failed after the
server had the whole message (:class:`providers.errors.SendUncertain`), or the sending
process died. Such a row is never sent again automatically; the worker looks for its
Message-ID in Sent (:meth:`providers.base.MailProvider.find_sent`) every few minutes and
marks it ``sent`` when it is there. ``postroom outbox retry`` looks in Sent first, and
sends it again only with ``--force``.

:func:`process_outbox` is the worker's share, run after each account's sync pass. With
nothing to do it costs one query on a partial index (``ix_outbox_open``) and never opens
the provider.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.errors import OutboxError
from postroom.logs import error_summary
from postroom.models import Email, MailAccount, MessageCopy, OutboxMessage, OutboxRecipient, utcnow
from postroom.states import RecipientKind
from providers.base import Capability, MailProvider, OutgoingMessage
from providers.errors import ConfigurationError, ProviderError, SendError, SendUncertain
from sync.credentials import open_account
from sync.leases import dead_local_owner, worker_id
from sync.outbox_rows import (
    MAX_ATTEMPTS,
    SEND_CLAIM,
    OutboxEntry,
    OutboxStatus,
    backoff,
    cas,
    get_entry,
    open_rows,
    record,
)
from sync.tracked import close_sweep, finish, resume_abandoned, send_tracked, settle_uncertain, sweep

log = logging.getLogger("postroom.outbox")

QUEUE_HOLD = timedelta(minutes=10)  # how long the process that queued a row keeps it to itself
CHECK_EVERY = timedelta(minutes=5)  # how often Sent is searched for an uncertain row
PASS_LIMIT = 20  # queued rows one worker pass submits


@dataclass
class OutboxPass:
    """What one worker pass over an account's outbox did."""

    stale: int = 0  # rows of dead or overdue senders made uncertain
    confirmed: int = 0  # uncertain rows found in Sent, now sent
    sent: int = 0
    uncertain: int = 0  # submissions that ended uncertain
    failed: int = 0
    later: int = 0  # safe failures, tried again after a back-off
    errors: list[str] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not (self.stale or self.confirmed or self.sent or self.uncertain or self.failed or self.later)


# ------------------------------------------------------------------ claiming
def _claim(s: Session, outbox_id: int, me: str, *, now: datetime, manual: bool, dead_owner: str | None = None) -> bool:
    """queued → sending for ``me``. The worker takes a row whose hold (or back-off) has run
    out; a person (``manual``) also takes one waiting out a back-off, never one that a live
    process holds."""
    free = [OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now, OutboxMessage.owner == me]
    if manual:
        free.append(OutboxMessage.owner.is_(None))
    if dead_owner is not None:
        free.append(OutboxMessage.owner == dead_owner)
    return cas(
        s,
        outbox_id,
        [OutboxStatus.QUEUED],
        or_(*free),
        status=OutboxStatus.SENDING,
        owner=me,
        claimed_until=now + SEND_CLAIM,
        attempts=OutboxMessage.attempts + 1,
    )


# ------------------------------------------------------------------ submitting
def deliver(
    config: Config,
    sessions: sessionmaker[Session],
    outbox_id: int,
    provider: MailProvider | None = None,
    *,
    owner: str | None = None,
) -> OutboxEntry:
    """Claim one queued message and submit it now; returns how it ended. Raises
    :class:`OutboxError` when the row cannot be claimed (unknown, held by a live process,
    not queued)."""
    me = owner or worker_id()
    with sessions.begin() as s:
        row = s.get(OutboxMessage, outbox_id)
        if row is None:
            raise OutboxError(f"No outbox message with id {outbox_id}.")
        dead_owner = row.owner if row.status == OutboxStatus.QUEUED and dead_local_owner(row.owner) else None
        claimed = _claim(s, outbox_id, me, now=utcnow(), manual=True, dead_owner=dead_owner)
    if not claimed:
        entry = get_entry(sessions, outbox_id)
        if entry.status == OutboxStatus.SENT:
            return entry
        raise OutboxError(not_deliverable(entry))
    return submit(config, sessions, outbox_id, me, provider)


def not_deliverable(entry: OutboxEntry) -> str:
    what = f"Message {entry.id} ({entry.message_id})"
    if entry.status == OutboxStatus.QUEUED:
        return f"{what} is held by another process that is about to send it; try again in a few minutes."
    if entry.status == OutboxStatus.SENDING:
        return f"{what} is being sent by another process right now."
    if entry.status == OutboxStatus.UNCERTAIN:
        return f"{what} may already have gone out; see 'postroom outbox retry {entry.id}'."
    return f"{what} is {entry.status}; send it again with 'postroom outbox retry {entry.id}'."


def submit(
    config: Config, sessions: sessionmaker[Session], outbox_id: int, me: str, provider: MailProvider | None
) -> OutboxEntry:
    """Submit a row ``me`` has just claimed (it is ``sending``) and record the outcome."""
    try:
        with sessions() as s:
            row = s.get_one(OutboxMessage, outbox_id)
            account = s.get_one(MailAccount, row.account_id)
            message = OutgoingMessage(
                raw=row.raw,
                sender=account.email,
                recipients=tuple(row.recipients),
                message_id=row.message_id,
                thread_hint=_thread_hint(s, account, row.raw),
            )
            attempts, tracked = row.attempts, row.tracked
            bcc = list(
                s.scalars(
                    select(OutboxRecipient.address).where(
                        OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.kind == RecipientKind.BCC.value
                    )
                )
            )
            own = provider or open_account(account, config, sessions)
    except Exception as exc:  # nothing was sent: give the row back
        record(sessions, outbox_id, me, status=OutboxStatus.QUEUED, owner=None, error=error_summary(exc))
        raise
    try:
        if tracked:
            send_tracked(config, sessions, outbox_id, me, own, message.sender, message.thread_hint, attempts)
        else:
            if bcc and Capability.SMTP_ENVELOPE not in own.capabilities:  # the API reads recipients from headers
                message = dataclasses.replace(message, raw=with_bcc(message.raw, bcc))
            _send(sessions, outbox_id, me, own, message, attempts)
    finally:
        if provider is None:
            own.close()
    return get_entry(sessions, outbox_id)


def _send(
    sessions: sessionmaker[Session], outbox_id: int, me: str, own: MailProvider, message: OutgoingMessage, attempts: int
) -> None:
    try:
        result = own.send(message)
    except SendUncertain as exc:
        record(sessions, outbox_id, me, status=OutboxStatus.UNCERTAIN, error=error_summary(exc))
        return
    except SendError as exc:
        refused = dict(exc.rejected)
        record(
            sessions, outbox_id, me, status=OutboxStatus.FAILED, owner=None, refused=refused, error=error_summary(exc)
        )
        return
    except ProviderError as exc:  # before the server could take it: safe to try again
        final = attempts >= MAX_ATTEMPTS or isinstance(exc, ConfigurationError)
        status = OutboxStatus.FAILED if final else OutboxStatus.QUEUED
        later = None if final else utcnow() + backoff(attempts)
        record(sessions, outbox_id, me, status=status, owner=None, claimed_until=later, error=error_summary(exc))
        return
    except Exception as exc:  # a bug in the middle of a send: it may have gone out
        record(sessions, outbox_id, me, status=OutboxStatus.UNCERTAIN, error=error_summary(exc))
        raise
    copy_id: str | None = result.provider_id
    note: str | None = None
    if not result.sent_copy_stored and Capability.STORE_SENT_COPY in own.capabilities:
        # before `sent` is recorded: if this process dies now, the copy lets find_sent settle it
        try:
            copy_id = own.store_sent_copy(message.raw)
        except ProviderError as exc:  # sent, but no copy: record, never resend
            copy_id, note = None, f"sent, but the copy in Sent could not be stored: {error_summary(exc)}"
    record(
        sessions,
        outbox_id,
        me,
        status=OutboxStatus.SENT,
        sent_at=utcnow(),
        sent_copy_id=copy_id,
        refused=dict(result.refused),  # recipients refused while the others were accepted
        error=note,
        claimed_until=None,
    )


def with_bcc(raw: bytes, bcc: list[str]) -> bytes:
    """The message with a Bcc header, for providers that take recipients from the headers (they
    deliver to Bcc and leave it out of what recipients get; the Sent copy keeps it, as mail
    clients do). The addresses were checked when the message was queued."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\nBcc: " + ", ".join(bcc).encode("utf-8") + sep + body


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


# ------------------------------------------------------------------ uncertain rows
def make_uncertain(s: Session, outbox_id: int, owner: str | None, why: str) -> bool:
    """A ``sending`` row whose process is gone (or overdue) becomes uncertain; its owner is
    kept, so that a sender that was only slow can still record ``sent``."""
    same_owner = OutboxMessage.owner.is_(None) if owner is None else OutboxMessage.owner == owner
    return cas(s, outbox_id, [OutboxStatus.SENDING], same_owner, status=OutboxStatus.UNCERTAIN, error=why)


def abandoned_reason(owner: str | None, claimed_until: datetime | None, now: datetime) -> str | None:
    """Why a ``sending`` row counts as abandoned, or None while its sender may still be at work."""
    if claimed_until is None or claimed_until < now:
        return "the process sending it did not finish in time; it may have gone out"
    if dead_local_owner(owner):
        return f"the process sending it ({owner}) died; it may have gone out"
    return None


def settle_from_sent(sessions: sessionmaker[Session], outbox_id: int, message_id: str, found: str) -> bool:
    with sessions.begin() as s:
        return cas(
            s,
            outbox_id,
            [OutboxStatus.UNCERTAIN],
            status=OutboxStatus.SENT,
            sent_copy_id=found,
            sent_at=utcnow(),
            error=f"found in Sent ({found}) after an uncertain send",
            claimed_until=None,
        )


# ------------------------------------------------------------------ the worker's pass
def process_outbox(config: Config, sessions: sessionmaker[Session], account_id: int, owner: str) -> OutboxPass:
    """One worker pass over an account's outbox (see the module docstring): stale ``sending``
    rows become uncertain, uncertain rows not checked for :data:`CHECK_EVERY` are looked for
    in Sent (found: ``sent``; never resent), and queued rows nobody holds are submitted.
    Costs one indexed query when there is nothing to do; opens the provider only for work.
    Problems with one row are logged and recorded on it; the others go on."""
    now = utcnow()
    with sessions() as s:
        rows = s.execute(open_rows(account_id)).all()
    done = OutboxPass()
    if not rows:
        return done
    check = [r for r in rows if r.status == OutboxStatus.UNCERTAIN and _due_check(r.checked_at, now)]
    resumed: list[Any] = []
    for r in rows:
        why = abandoned_reason(r.owner, r.claimed_until, now) if r.status == OutboxStatus.SENDING else None
        if why is None:
            continue
        with sessions.begin() as s:
            if r.tracked:  # the recipients not sent yet are sent by this pass
                took = resume_abandoned(s, r.id, r.owner, why)
                (resumed if took else []).append(r)
            else:
                took = make_uncertain(s, r.id, r.owner, why)
                (check if took else []).append(r)
        if took:
            done.stale += 1
            log.warning("outbox message %s: %s", r.message_id, why, extra={"account_id": account_id})
    waiting = [
        r
        for r in rows
        if r.status == OutboxStatus.QUEUED
        and (r.claimed_until is None or r.claimed_until < now or r.owner == owner or dead_local_owner(r.owner))
    ]
    waiting = (waiting + resumed)[:PASS_LIMIT]
    sweeping = [r for r in rows if r.status == OutboxStatus.SENT and r.cleanup_until is not None]
    if not (check or waiting or sweeping):
        return done
    provider = _open(config, sessions, account_id, done)
    if provider is None:
        return done
    try:
        for r in check:
            _check_one(sessions, provider, r.id, r.message_id, now, done, account_id, tracked=r.tracked, me=owner)
        for r in waiting:
            _deliver_one(config, sessions, provider, r.id, owner, r.owner, done, account_id)
        for r in sweeping:
            _sweep_one(sessions, provider, r.id, now, done, account_id)
    finally:
        provider.close()
    return done


def _sweep_one(
    sessions: sessionmaker[Session],
    provider: MailProvider,
    outbox_id: int,
    now: datetime,
    done: OutboxPass,
    account_id: int,
) -> None:
    """Look in Sent for recipients' copies a server filed itself after a tracked send."""
    try:
        pending = sweep(sessions, provider, outbox_id)
    except Exception as exc:  # looked for again by the next pass, until the sweep's time is up
        done.errors.append(error_summary(exc))
        log.warning("outbox: cannot sweep Sent: %s", error_summary(exc), extra={"account_id": account_id})
        pending = 1
    close_sweep(sessions, outbox_id, now, pending)


def _due_check(checked_at: datetime | None, now: datetime) -> bool:
    return checked_at is None or checked_at < now - CHECK_EVERY


def _open(config: Config, sessions: sessionmaker[Session], account_id: int, done: OutboxPass) -> MailProvider | None:
    try:
        with sessions() as s:
            return open_account(s.get_one(MailAccount, account_id), config, sessions)
    except Exception as exc:  # the rows stay as they are for the next pass
        done.errors.append(error_summary(exc))
        log.warning("outbox: cannot open the account: %s", error_summary(exc), extra={"account_id": account_id})
        return None


def _check_one(
    sessions: sessionmaker[Session],
    provider: MailProvider,
    outbox_id: int,
    message_id: str,
    now: datetime,
    done: OutboxPass,
    account_id: int,
    *,
    tracked: bool = False,
    me: str = "",
) -> None:
    """Look for one uncertain message in Sent (claiming the check with ``checked_at``); for a
    tracked one, each uncertain recipient's copy."""
    with sessions.begin() as s:
        due = or_(OutboxMessage.checked_at.is_(None), OutboxMessage.checked_at < now - CHECK_EVERY)
        if not cas(s, outbox_id, [OutboxStatus.UNCERTAIN], due, checked_at=now):
            return  # settled, or checked by someone else just now
    if tracked:
        _check_tracked(sessions, provider, outbox_id, me, done, account_id)
        return
    try:
        found = provider.find_sent(message_id)
    except Exception as exc:  # stays uncertain; looked for again after CHECK_EVERY
        done.errors.append(error_summary(exc))
        log.warning("outbox: cannot search Sent: %s", error_summary(exc), extra={"account_id": account_id})
        return
    if found is not None and settle_from_sent(sessions, outbox_id, message_id, found):
        done.confirmed += 1
        log.info("outbox message %s was found in Sent: sent", message_id, extra={"account_id": account_id})


def _check_tracked(
    sessions: sessionmaker[Session], provider: MailProvider, outbox_id: int, me: str, done: OutboxPass, account_id: int
) -> None:
    """Settle a tracked message's uncertain recipients found in Sent; when none is left, the
    message is settled too (taken over for that, as nobody holds an uncertain message)."""
    try:
        left = settle_uncertain(sessions, provider, outbox_id)
    except Exception as exc:  # stays uncertain; looked for again after CHECK_EVERY
        done.errors.append(error_summary(exc))
        log.warning("outbox: cannot search Sent: %s", error_summary(exc), extra={"account_id": account_id})
        return
    if left:
        return
    with sessions.begin() as s:
        took = cas(
            s,
            outbox_id,
            [OutboxStatus.UNCERTAIN],
            status=OutboxStatus.SENDING,
            owner=me,
            claimed_until=utcnow() + SEND_CLAIM,
        )
    if took:
        finish(sessions, outbox_id, me, provider)
        done.confirmed += 1


def _deliver_one(
    config: Config,
    sessions: sessionmaker[Session],
    provider: MailProvider,
    outbox_id: int,
    me: str,
    held_by: str | None,
    done: OutboxPass,
    account_id: int,
) -> None:
    dead_owner = held_by if held_by != me and dead_local_owner(held_by) else None
    with sessions.begin() as s:
        if not _claim(s, outbox_id, me, now=utcnow(), manual=False, dead_owner=dead_owner):
            return  # someone else has it
    try:
        entry = submit(config, sessions, outbox_id, me, provider)
    except Exception as exc:  # recorded on the row by submit
        done.errors.append(error_summary(exc))
        log.warning("outbox: sending failed: %s", error_summary(exc), extra={"account_id": account_id})
        return
    if entry.status == OutboxStatus.SENT:
        done.sent += 1
    elif entry.status == OutboxStatus.UNCERTAIN:
        done.uncertain += 1
    elif entry.status == OutboxStatus.FAILED:
        done.failed += 1
    else:
        done.later += 1
    log.info("outbox message %s: %s", entry.message_id, entry.status, extra={"account_id": account_id})
