"""Webhooks against a real HTTP receiver on 127.0.0.1: signed per Standard Webhooks (both
secrets during a rotation), retried on the schedule when the receiver fails, 410 disabling the
subscription, private addresses refused unless allowed, durable across a crash, never sent twice
by two workers at once. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, WebhooksConfig
from postroom.crypto import SecretBox
from postroom.models import WebhookDelivery, WebhookSubscription, utcnow
from postroom.states import DeliveryStatus
from postroom.webhook_signing import new_secret, verify
from services.orgs import add_org
from services.webhooks import EVENTS, WebhookError, add_subscription, deliver_due, emit, list_deliveries
from sync.webhooks import MAX_ATTEMPTS, RETRY_DELAYS
from tests.rig.webhook_receiver import Receiver


@pytest.fixture
def private(config: Config) -> Config:
    """The test config with ``[webhooks] allow_private = true`` (the receiver is on 127.0.0.1)."""
    return dataclasses.replace(config, webhooks=WebhooksConfig(allow_private=True, timeout=5.0))


def _subscribe(
    sessions: sessionmaker[Session], config: Config, receiver: Receiver, events: list[str]
) -> tuple[int, int]:
    with sessions.begin() as s:
        org = add_org(s, "Acme").id
        sub, secret = add_subscription(s, config, org, receiver.url, events)
    receiver.secrets = [secret]
    return org, sub


def _delivery(sessions: sessionmaker[Session]) -> WebhookDelivery:
    with sessions() as s:
        return s.scalars(select(WebhookDelivery)).one()


def test_signed_delivery_with_the_event_and_its_data(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, sub = _subscribe(sessions, private, receiver, ["message.opened", "message.bounced"])
    with sessions.begin() as s:
        assert emit(s, org, "message.opened", {"message_id": 7}) == 1
        assert emit(s, org, "inbound.failed", {"x": 1}) == 0  # not subscribed
    assert deliver_due(sessions, private) == 1
    assert receiver.bad_signatures == [] and len(receiver.received) == 1
    heads, body = receiver.received[0]
    doc = json.loads(body)
    assert doc["type"] == "message.opened" and doc["data"] == {"message_id": 7} and "timestamp" in doc
    d = _delivery(sessions)
    assert (d.status, d.attempts, d.last_status_code, d.next_attempt_at) == (DeliveryStatus.DELIVERED, 1, 200, None)
    assert heads["webhook-id"] == d.msg_id and d.msg_id.startswith("msg_")
    assert deliver_due(sessions, private) == 0  # nothing left
    with sessions() as s:
        stored = s.get_one(WebhookSubscription, sub).secret
        assert receiver.secrets[0].encode() not in stored  # sealed, not in the clear


def test_failures_are_retried_on_the_schedule_then_delivered(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, _ = _subscribe(sessions, private, receiver, ["inbound.processed"])
    receiver.answers = [500, 503, 500]
    t0 = utcnow()
    with sessions.begin() as s:
        emit(s, org, "inbound.processed", {"n": 1}, now=t0)
    assert deliver_due(sessions, private, t0) == 1
    d = _delivery(sessions)
    assert (d.status, d.attempts, d.last_status_code) == (DeliveryStatus.FAILED, 1, 500)
    assert d.next_attempt_at == t0 + RETRY_DELAYS[0]
    assert deliver_due(sessions, private, t0 + timedelta(seconds=4)) == 0  # not due yet
    now = t0 + RETRY_DELAYS[0]
    assert deliver_due(sessions, private, now) == 1
    assert _delivery(sessions).next_attempt_at == now + RETRY_DELAYS[1]
    now += RETRY_DELAYS[1]
    assert deliver_due(sessions, private, now) == 1
    now += RETRY_DELAYS[2]
    assert deliver_due(sessions, private, now) == 1
    d = _delivery(sessions)
    assert (d.status, d.attempts, d.last_status_code, d.delivered_at) == (DeliveryStatus.DELIVERED, 4, 200, now)
    assert len(set(receiver.ids())) == 1 and len(receiver.ids()) == 4  # one id, every retry
    assert receiver.bad_signatures == []  # each attempt signed afresh


def test_gives_up_after_about_three_days(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    assert timedelta(days=2.5) < sum(RETRY_DELAYS, timedelta()) < timedelta(days=3.5)
    org, _ = _subscribe(sessions, private, receiver, ["message.replied"])
    receiver.answers = [500] * 100
    now = utcnow()
    with sessions.begin() as s:
        emit(s, org, "message.replied", {}, now=now)
    for _ in range(MAX_ATTEMPTS):
        assert deliver_due(sessions, private, now) == 1
        now += timedelta(days=1)
    d = _delivery(sessions)
    assert (d.status, d.attempts, d.next_attempt_at) == (DeliveryStatus.GAVE_UP, MAX_ATTEMPTS, None)
    assert deliver_due(sessions, private, now + timedelta(days=30)) == 0


def test_410_disables_the_subscription(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, sub = _subscribe(sessions, private, receiver, ["message.clicked"])
    receiver.answers = [410]
    with sessions.begin() as s:
        emit(s, org, "message.clicked", {"n": 1})
    assert deliver_due(sessions, private) == 1
    d = _delivery(sessions)
    assert (d.status, d.last_status_code) == (DeliveryStatus.GAVE_UP, 410)
    with sessions.begin() as s:
        row = s.get_one(WebhookSubscription, sub)
        assert not row.active and "410 Gone" in (row.disabled_reason or "")
        assert emit(s, org, "message.clicked", {"n": 2}) == 0  # no longer queued for it
    assert deliver_due(sessions, private, utcnow() + timedelta(days=1)) == 0


def test_private_destinations_refused_unless_allowed(sessions, config, private, receiver) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        org = add_org(s, "Acme").id
        for url in (receiver.url, "https://127.0.0.1/hook", "https://10.1.2.3/x", "https://localhost/x"):
            with pytest.raises(WebhookError) as err:
                add_subscription(s, config, org, url, ["message.opened"])
            assert err.value.field == "url"
        with pytest.raises(WebhookError) as err:
            add_subscription(s, config, org, "http://hooks.example.com/x", ["message.opened"])
        assert err.value.field == "url" and "https" in str(err.value)
        with pytest.raises(WebhookError) as err:
            add_subscription(s, config, org, "https://hooks.example.com/x", ["message.sent", "message.opened"])
        assert err.value.field == "events" and "message.sent" in str(err.value)
        # allowed when set up so, and then refused at delivery time once it no longer is
        add_subscription(s, private, org, receiver.url, ["message.opened"])
        # a public-looking name that resolves to a private address is refused when sending
        add_subscription(s, config, org, "https://hooks.example.com/x", ["message.opened"])
        emit(s, org, "message.opened", {})
    assert deliver_due(sessions, config, resolve=lambda host, port: ["10.0.0.5"]) == 2
    assert receiver.received == []
    with sessions() as s:
        rows = s.scalars(select(WebhookDelivery)).all()
        assert {d.status for d in rows} == {DeliveryStatus.FAILED}
        assert all("Refused" in (d.last_error or "") for d in rows)
        assert any("private address" in (d.last_error or "") for d in rows)


def test_both_secrets_verify_during_rotation(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, sub = _subscribe(sessions, private, receiver, ["account.reconnect_needed"])
    old = receiver.secrets[0]
    new = new_secret()
    box = SecretBox.for_config(private.security)
    with sessions.begin() as s:
        row = s.get_one(WebhookSubscription, sub)
        row.previous_secret, row.secret = row.secret, box.seal({"secret": new})
        emit(s, org, "account.reconnect_needed", {"account_id": 3})
    assert deliver_due(sessions, private) == 1
    heads, body = receiver.received[0]
    assert len(heads["webhook-signature"].split()) == 2
    verify(new, heads, body, now=time.time())  # a receiver that already has the new secret
    verify(old, heads, body, now=time.time())  # and one that still has the old


def test_a_crash_between_emit_and_delivery_loses_nothing(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, _ = _subscribe(sessions, private, receiver, ["message.received"])
    with sessions.begin() as s:
        emit(s, org, "message.received", {"email_id": 1})
    # the process dies here; a new one (new engine, new sessions) finds the delivery queued
    sessions.kw["bind"].dispose()
    assert _delivery(sessions).status == DeliveryStatus.PENDING
    # a worker that claimed it and died mid-request: sent again once its claim has run out
    now = utcnow()
    with sessions.begin() as s:
        d = s.scalars(select(WebhookDelivery)).one()
        d.attempts, d.next_attempt_at = 1, now + timedelta(seconds=70)
    assert deliver_due(sessions, private, now) == 0
    assert deliver_due(sessions, private, now + timedelta(seconds=71)) == 1
    assert _delivery(sessions).status == DeliveryStatus.DELIVERED and len(receiver.received) == 1
    # an emit whose transaction rolls back queues nothing
    with pytest.raises(RuntimeError), sessions.begin() as s:
        emit(s, org, "message.received", {"email_id": 2})
        raise RuntimeError("the change it announced failed")
    with sessions() as s:
        assert len(s.scalars(select(WebhookDelivery)).all()) == 1


def test_two_workers_send_each_delivery_once(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, _ = _subscribe(sessions, private, receiver, ["message.opened"])
    receiver.delay = 0.02
    with sessions.begin() as s:
        for n in range(20):
            emit(s, org, "message.opened", {"n": n})
    now = utcnow() + timedelta(seconds=1)
    counts: list[int] = []
    workers = [threading.Thread(target=lambda: counts.append(deliver_due(sessions, private, now))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(counts) == 20 and len(receiver.ids()) == 20 and len(set(receiver.ids())) == 20
    with sessions() as s:
        assert {d.status for d in s.scalars(select(WebhookDelivery))} == {DeliveryStatus.DELIVERED}


def test_delivery_log_newest_first_per_organisation(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    org, sub = _subscribe(sessions, private, receiver, list(EVENTS))
    with sessions.begin() as s:
        other = add_org(s, "Other").id
        t0 = utcnow()
        emit(s, org, "inbound.processed", {"n": 1}, now=t0)
        emit(s, org, "inbound.failed", {"n": 2}, now=t0 + timedelta(seconds=1))
    with sessions() as s:
        log = list_deliveries(s, org)
        assert [d.event for d in log] == ["inbound.failed", "inbound.processed"]
        assert log[0].as_json()["status"] == "pending" and log[0].as_json()["subscription_id"] == sub
        assert list_deliveries(s, other) == []


def test_the_embedded_worker_sends_due_deliveries(sessions, private, receiver) -> None:  # type: ignore[no-untyped-def]
    from sync.worker import Worker

    org, _ = _subscribe(sessions, private, receiver, ["message.bounced"])
    with sessions.begin() as s:
        emit(s, org, "message.bounced", {"address": "ann@example.com", "status": "5.1.1"})
    Worker(private, sessions).run(max_passes=1)
    assert len(receiver.received) == 1 and receiver.bad_signatures == []
    assert _delivery(sessions).status == DeliveryStatus.DELIVERED


def test_an_account_whose_server_refuses_its_password_is_announced(sessions, private, receiver, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    from postroom.models import MailAccount
    from sync.scheduler import Scheduler
    from tests.sync.helpers import connect

    box = new_mailbox()
    box.password = "wrong"
    account_id = connect(private, sessions, box)
    with sessions.begin() as s:
        org = s.get_one(MailAccount, account_id).org_id
        _, secret = add_subscription(s, private, org, receiver.url, ["account.reconnect_needed"])
    receiver.secrets = [secret]
    Scheduler(private, sessions).sync(account_id)
    assert deliver_due(sessions, private) == 1
    assert receiver.bad_signatures == []
    doc = json.loads(receiver.received[0][1])
    assert doc["type"] == "account.reconnect_needed"
    assert doc["data"] == {"account_id": account_id, "email": box.address}
