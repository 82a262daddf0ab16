"""A tracked send: one copy per recipient, each with its own pixel and links, then one clean
copy in Sent — never a recipient twice, never a copy too many.

How the copies go out depends on the account (:class:`postroom.states.SendMode`):

* ``smtp`` — the provider submits over SMTP (:data:`providers.base.Capability.SMTP_ENVELOPE`):
  one transaction per recipient, To, Cc and Bcc alike, every copy with the same visible
  headers (a Bcc recipient appears in none);
* ``api`` — the provider's API takes recipients from the headers (Gmail API, Graph, EWS): each
  copy names only its recipient. The Sent copy still shows everyone.

Each copy is the canonical message with its own Message-ID, pixel and rewritten links
(:func:`postroom.tracking_html.personalise`), sent with ``send_without_copy``. A recipient
goes through the outbox's states on its own (``outbox_recipients.status``)::

    queued ──▶ sending ──accepted──────────────────────────▶ sent
                  ├──refused for good───────────────────────▶ failed
                  ├──failed before the server could take it──▶ queued   (the message waits; the rest later)
                  └──failed after it may have taken it───────▶ uncertain (looked for in Sent; never resent by itself)

The message's own row is held (``sending``, ``owner``) by the one process sending it; if that
process dies, its recipient in ``sending`` becomes ``uncertain`` and the message ``queued``
again, so a later pass sends the recipients not yet sent (:func:`resume_abandoned`). When no
recipient is left to send, :func:`finish` stores the one clean copy in Sent (after looking for
it by Message-ID, so a crash between storing and recording never stores two), removes the
copies a server filed in Sent itself (found by each copy's Message-ID) and settles the message:
``uncertain`` if a recipient is, else ``sent`` if anyone got it, else ``failed``. Servers that
file submitted mail asynchronously (Postfix with a Sent copy, many hosts) are swept again by
the worker's passes for a while (``outbox.cleanup_until``).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.logs import error_summary
from postroom.models import OutboxMessage, OutboxRecipient, utcnow
from postroom.states import OutboxStatus, SendMode
from postroom.tracking_html import personalise
from postroom.tracking_tokens import TrackingKeys
from providers.base import Capability, FolderRole, MailProvider, OutgoingMessage, RemoteFolder
from providers.errors import ProviderError, SendError, SendUncertain
from sync.outbox_rows import backoff, cas, cas_recipient, record

log = logging.getLogger("postroom.outbox")

SWEEP_FOR = timedelta(minutes=10)  # how long Sent is searched for copies a server filed itself
NO_FILING_AFTER = timedelta(minutes=1)  # nothing filed this long after the last copy: the server does not file


def send_tracked(
    config: Config,
    sessions: sessionmaker[Session],
    outbox_id: int,
    me: str,
    own: MailProvider,
    sender: str,
    thread_hint: str | None,
    attempts: int,
) -> None:
    """Send every queued recipient's copy of a message ``me`` holds (``sending``), then
    :func:`finish` it. A failure that is safe to retry leaves that recipient and the rest
    ``queued`` and gives the message back with a back-off."""
    mode = SendMode.SMTP if Capability.SMTP_ENVELOPE in own.capabilities else SendMode.API
    keys = TrackingKeys.from_secret(config.security.key())
    base = config.tracking.base_url
    with sessions.begin() as s:
        row = s.get_one(OutboxMessage, outbox_id)
        raw = row.raw
        if row.mode != mode:
            cas(s, outbox_id, [OutboxStatus.SENDING], OutboxMessage.owner == me, mode=mode.value)
    with sessions() as s:
        todo = s.execute(
            select(OutboxRecipient.id, OutboxRecipient.address, OutboxRecipient.message_id)
            .where(OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.status == OutboxStatus.QUEUED.value)
            .order_by(OutboxRecipient.id)
        ).all()
    for rid, address, copy_id in todo:
        with sessions.begin() as s:
            if not cas_recipient(
                s, rid, [OutboxStatus.QUEUED], status=OutboxStatus.SENDING, attempts=OutboxRecipient.attempts + 1
            ):
                continue
        copy = personalise(
            raw,
            message_id=copy_id,
            pixel_url=keys.open_url(base, rid),
            link_url=functools.partial(_click_url, keys, base, rid),
            only_to=None if mode == SendMode.SMTP else address,
        )
        try:
            result = own.send_without_copy(OutgoingMessage(copy, sender, (address,), copy_id, thread_hint))
        except SendUncertain as exc:
            _settle(sessions, rid, OutboxStatus.UNCERTAIN, error=error_summary(exc))
            continue
        except SendError as exc:
            why = exc.rejected.get(address) if exc.rejected else None
            _settle(sessions, rid, OutboxStatus.FAILED, error=why or error_summary(exc))
            continue
        except ProviderError as exc:  # before the server could take it: this one and the rest wait
            _settle(sessions, rid, OutboxStatus.QUEUED, error=error_summary(exc))
            later = utcnow() + backoff(attempts)
            record(
                sessions,
                outbox_id,
                me,
                status=OutboxStatus.QUEUED,
                owner=None,
                claimed_until=later,
                error=error_summary(exc),
            )
            return
        except Exception as exc:  # a bug in the middle of a send: it may have gone out
            _settle(sessions, rid, OutboxStatus.UNCERTAIN, error=error_summary(exc))
            raise
        # the provider says whether a copy of it may be in Sent (IMAP: the server may file one)
        _settle(
            sessions, rid, OutboxStatus.SENT, sent_at=utcnow(), copy_removed=not result.sent_copy_stored, error=None
        )
    finish(sessions, outbox_id, me, own)


def _click_url(keys: TrackingKeys, base: str, recipient_id: int, link: int, url: str) -> str:
    return keys.click_url(base, recipient_id, link, url)


def _settle(sessions: sessionmaker[Session], recipient_id: int, status: OutboxStatus, **values: Any) -> None:
    with sessions.begin() as s:
        cas_recipient(s, recipient_id, [OutboxStatus.SENDING], status=status.value, **values)


def finish(sessions: sessionmaker[Session], outbox_id: int, me: str, own: MailProvider) -> None:
    """Store the clean copy, sweep Sent and settle a message ``me`` holds whose recipients are
    all sent, failed or uncertain (see the module docstring)."""
    with sessions() as s:
        row = s.get_one(OutboxMessage, outbox_id)
        states = dict(
            s.execute(
                select(OutboxRecipient.address, OutboxRecipient.status).where(OutboxRecipient.outbox_id == outbox_id)
            )
            .tuples()
            .all()
        )
        errors = dict(
            s.execute(
                select(OutboxRecipient.address, OutboxRecipient.error).where(
                    OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.status == OutboxStatus.FAILED.value
                )
            )
            .tuples()
            .all()
        )
        copy_id, message_id, raw = row.sent_copy_id, row.message_id, row.raw
    if any(v in (OutboxStatus.QUEUED, OutboxStatus.SENDING) for v in states.values()):
        return
    reached = [a for a, v in states.items() if v in (OutboxStatus.SENT, OutboxStatus.UNCERTAIN)]
    note = None
    if reached and copy_id is None:
        try:  # looked for first: a crash after storing and before recording must not store two
            copy_id = own.find_sent(message_id)
            if copy_id is None and Capability.STORE_SENT_COPY in own.capabilities:
                copy_id = own.store_sent_copy(raw)
        except ProviderError as exc:
            note = f"sent, but the clean copy in Sent could not be stored: {error_summary(exc)}"
    now = utcnow()
    pending = sweep(sessions, own, outbox_id)
    status = (
        OutboxStatus.UNCERTAIN
        if OutboxStatus.UNCERTAIN in states.values()
        else OutboxStatus.SENT
        if reached
        else OutboxStatus.FAILED
    )
    record(
        sessions,
        outbox_id,
        me,
        status=status,
        sent_at=now if reached else None,
        sent_copy_id=copy_id,
        refused={a: (e or "refused") for a, e in errors.items()},
        error=note,
        claimed_until=None,
        cleanup_until=now + SWEEP_FOR if pending else None,
    )


def sweep(sessions: sessionmaker[Session], own: MailProvider, outbox_id: int) -> int:
    """Remove the recipients' copies a server filed in Sent itself, found by each copy's
    Message-ID; returns how many sent recipients' copies are still unaccounted for."""
    with sessions() as s:
        rows = s.execute(
            select(OutboxRecipient.id, OutboxRecipient.message_id).where(
                OutboxRecipient.outbox_id == outbox_id,
                OutboxRecipient.status == OutboxStatus.SENT.value,
                OutboxRecipient.copy_removed.is_(False),
            )
        ).all()
    if not rows:
        return 0
    sent = _sent_folder(own)
    pending = 0
    for rid, copy_id in rows:
        found = own.find_sent(copy_id)
        if found is None:  # not filed (yet): looked for again by the next passes
            pending += 1
            continue
        own.delete(sent, [found])
        with sessions.begin() as s:
            cas_recipient(s, rid, [OutboxStatus.SENT], copy_removed=True)
    return pending


def _sent_folder(own: MailProvider) -> RemoteFolder:
    for folder in own.list_folders():
        if folder.role == FolderRole.SENT:
            return folder
    raise ProviderError("the account has no Sent folder")


def resume_abandoned(s: Session, outbox_id: int, owner: str | None, why: str) -> bool:
    """A tracked message whose sending process is gone: its recipient in ``sending`` becomes
    ``uncertain`` (it may have gone out), and the message ``queued`` again so that a later
    pass sends the recipients not yet sent. Returns whether this call took it over."""
    same_owner = OutboxMessage.owner.is_(None) if owner is None else OutboxMessage.owner == owner
    took = cas(
        s,
        outbox_id,
        [OutboxStatus.SENDING],
        same_owner,
        status=OutboxStatus.QUEUED,
        owner=None,
        claimed_until=None,
        error=why,
    )
    if not took:
        return False
    for (rid,) in s.execute(
        select(OutboxRecipient.id).where(
            OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.status == OutboxStatus.SENDING.value
        )
    ):
        cas_recipient(s, rid, [OutboxStatus.SENDING], status=OutboxStatus.UNCERTAIN.value, error=why)
    return True


def settle_uncertain(sessions: sessionmaker[Session], own: MailProvider, outbox_id: int) -> int:
    """Look in Sent for each uncertain recipient's copy: found, it went out (``sent``; in SMTP
    mode the found copy is removed, since the clean one is there). Returns how many are left."""
    with sessions() as s:
        rows = s.execute(
            select(OutboxRecipient.id, OutboxRecipient.message_id).where(
                OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.status == OutboxStatus.UNCERTAIN.value
            )
        ).all()
    left = 0
    for rid, copy_id in rows:
        found = own.find_sent(copy_id)
        if found is None:
            left += 1
            continue
        own.delete(_sent_folder(own), [found])
        with sessions.begin() as s:
            cas_recipient(
                s,
                rid,
                [OutboxStatus.UNCERTAIN],
                status=OutboxStatus.SENT.value,
                sent_at=utcnow(),
                copy_removed=True,
                error=f"found in Sent ({found}) after an uncertain send",
            )
    return left


def close_sweep(sessions: sessionmaker[Session], outbox_id: int, now: datetime, pending: int) -> None:
    """End a message's sweep of Sent when nothing is left, its time is up, or the server has
    filed nothing for a while after the last copy went out (it does not file)."""
    with sessions.begin() as s:
        row = s.get_one(OutboxMessage, outbox_id)
        last = s.scalar(
            select(OutboxRecipient.sent_at)
            .where(OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.sent_at.is_not(None))
            .order_by(OutboxRecipient.sent_at.desc())
            .limit(1)
        )
        nothing_filed = not s.scalar(
            select(OutboxRecipient.id)
            .where(OutboxRecipient.outbox_id == outbox_id, OutboxRecipient.copy_removed.is_(True))
            .limit(1)
        )
        quiet = nothing_filed and last is not None and now - last > NO_FILING_AFTER
        if not pending or quiet or (row.cleanup_until is not None and row.cleanup_until < now):
            row.cleanup_until = None
