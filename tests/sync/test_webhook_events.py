"""The sync engine's webhook events, end to end on SQLite and PostgreSQL: mail from an applicant
synced from the rig's Dovecot is announced as ``message.received`` once per message, however
many recruiters' mailboxes saw it and however often they are synced again; a recipient's first
reply is announced as ``message.replied`` (an auto-reply never); a real HTTP receiver gets them
signed. An organisation's subscriptions are read once per batch, never once per message."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, WebhooksConfig
from postroom.models import Email, OutboxRecipient, WebhookDelivery
from services.applicants import add_applicant
from services.webhooks import add_subscription, deliver_due
from tests.rig.corpus import Item
from tests.rig.fixtures import Mailbox
from tests.rig.messages import make_message
from tests.rig.webhook_receiver import Receiver
from tests.sync.helpers import connect, sync_ok
from tests.sync.test_replies import arrive, reply, send


def _private(config: Config) -> Config:
    """The test config with ``[webhooks] allow_private`` (the receiver is on 127.0.0.1)."""
    return dataclasses.replace(config, webhooks=WebhooksConfig(allow_private=True, timeout=5.0))


def _subscribe(sessions: sessionmaker[Session], config: Config, receiver: Receiver, org_id: int, *events: str) -> None:
    with sessions.begin() as s:
        _, secret = add_subscription(s, config, org_id, receiver.url, list(events))
    receiver.secrets = [secret]


def _queued(sessions: sessionmaker[Session], kind: str) -> list[dict[str, Any]]:
    with sessions() as s:
        return list(
            s.scalars(select(WebhookDelivery.payload).where(WebhookDelivery.event == kind).order_by(WebhookDelivery.id))
        )


@contextmanager
def _subscription_reads(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """Every SQL statement that reads webhook_subscriptions while the block runs."""
    seen: list[str] = []
    engine = sessions.kw["bind"]

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM webhook_subscriptions" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def _applicant(sessions: sessionmaker[Session], name: str, address: str) -> tuple[int, int]:
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, name, [address])
        return applicant.id, applicant.org_id


def test_mail_from_an_applicant_is_announced_once_however_many_mailboxes_saw_it(
    sessions: sessionmaker[Session], config: Config, receiver: Receiver, new_mailbox: Any
) -> None:
    cfg = _private(config)
    rita, sam = new_mailbox(), new_mailbox()
    a, b = connect(cfg, sessions, rita), connect(cfg, sessions, sam)
    ann, org = _applicant(sessions, "Ann Applicant", "ann@example.org")
    _subscribe(sessions, cfg, receiver, org, "message.received")
    when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    cv = make_message(
        message_id="<cv.1@example.org>",
        subject="My CV",
        from_="Ann Applicant <Ann@Example.org>",
        to=f"{rita.address}, {sam.address}",
        date=when,
        body="Please find my CV attached.",
    )
    rita.append(cv)
    sam.append(cv)  # the second recruiter's copy of the same message
    rita.append(make_message(message_id="<news@elsewhere.test>", from_="News <news@elsewhere.test>"))
    sync_ok(cfg, sessions, a)
    sync_ok(cfg, sessions, b)
    sync_ok(cfg, sessions, a)  # synced again: nothing new to say
    sync_ok(cfg, sessions, b)

    assert deliver_due(sessions, cfg) == 1
    assert receiver.bad_signatures == []
    with sessions() as s:
        email = s.scalars(select(Email).where(Email.message_id == "<cv.1@example.org>")).one()
    [(kind, data)] = receiver.events()
    assert kind == "message.received"
    assert data == {
        "message_id": email.id,
        "applicant_id": ann,
        "applicant_ids": [ann],
        "account_id": a,
        "thread_id": email.thread_id,
        "from": "ann@example.org",
        "subject": "My CV",
        "date": when.isoformat(),
    }

    # an applicant added later has their old mail backfilled into their history, not announced
    _applicant(sessions, "News Letter", "news@elsewhere.test")
    sync_ok(cfg, sessions, a)
    assert deliver_due(sessions, cfg) == 0 and len(receiver.received) == 1


def test_a_sync_reads_the_subscriptions_once_per_batch_never_once_per_message(
    sessions: sessionmaker[Session], config: Config, receiver: Receiver, mailbox: Mailbox
) -> None:
    cfg = _private(config)
    account = connect(cfg, sessions, mailbox)
    _, org = _applicant(sessions, "Ann Applicant", "ann@example.org")
    _subscribe(sessions, cfg, receiver, org, "message.received")
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    n = 300  # one header batch (sync.batch_size is 500)

    def item(i: int, sender: str) -> Item:
        date = start + dt.timedelta(minutes=i)
        raw = make_message(message_id=f"<m{i}.{sender}>", subject=f"Note {i}", from_=sender, date=date)
        return Item(raw, date, (), f"<m{i}.{sender}>", i)

    mailbox.seed([item(i, "ann@example.org") for i in range(n)] + [item(i, "x@other.test") for i in range(n)])
    with _subscription_reads(sessions) as reads:
        sync_ok(cfg, sessions, account)
    assert len(_queued(sessions, "message.received")) == n  # every message from Ann, once
    assert 1 <= len(reads) <= 2, reads  # one per transaction that announced something (INBOX's batches)

    mailbox.seed([item(n + i, "x@other.test") for i in range(n)])  # nobody's applicant mail
    with _subscription_reads(sessions) as reads:
        sync_ok(cfg, sessions, account)
    assert reads == []
    assert len(_queued(sessions, "message.received")) == n


def test_a_recipients_first_reply_is_announced_and_an_auto_reply_never(
    sessions: sessionmaker[Session], config: Config, receiver: Receiver
) -> None:
    cfg = _private(config)
    sent = send(sessions, "ann@example.org", "bob@example.org")
    _subscribe(sessions, cfg, receiver, sent.org_id, "message.replied")
    arrive(
        sessions,
        sent,
        *reply(
            "<ooo@example.org>",
            "bob@example.org",
            "Out of office",
            "Auto-Submitted: auto-replied",
            f"In-Reply-To: {sent.copies['bob@example.org']}",
        ),
    )
    assert _queued(sessions, "message.replied") == []
    email_id, _ = arrive(
        sessions,
        sent,
        *reply(
            "<r1@example.org>",
            "ann@example.org",
            "Re: Your interview",
            f"In-Reply-To: {sent.copies['ann@example.org']}",
        ),
    )
    # her second answer, and the same answer met again in another folder: still one announcement
    arrive(
        sessions,
        sent,
        *reply(
            "<r2@example.org>",
            "ann@example.org",
            "Re: Your interview",
            f"In-Reply-To: {sent.copies['ann@example.org']}",
        ),
    )
    arrive(
        sessions,
        sent,
        *reply(
            "<r1@example.org>",
            "ann@example.org",
            "Re: Your interview",
            f"In-Reply-To: {sent.copies['ann@example.org']}",
        ),
    )

    assert deliver_due(sessions, cfg) == 1 and receiver.bad_signatures == []
    with sessions() as s:
        replied_at = s.scalar(
            select(OutboxRecipient.replied_at).where(OutboxRecipient.id == sent.recipients["ann@example.org"])
        )
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    assert replied_at is not None
    assert receiver.events() == [
        (
            "message.replied",
            {
                "outbox_id": sent.outbox_id,
                "recipient": "ann@example.org",
                "replied_at": replied_at.isoformat(),
                "message_id": email_id,
            },
        )
    ]
