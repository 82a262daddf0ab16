"""Managing webhooks as an organisation does (list, rotate the secret, delete, the paged log) and
the delivery pass's fairness, against the real HTTP receiver of ``test_webhooks``: a rotated
secret keeps signing beside the new one for its overlap and no longer after it; a deleted
subscription is sent nothing more; another organisation's id is "no such webhook"; one silent
receiver does not hold another's deliveries. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from postroom.config import Config, WebhooksConfig
from postroom.models import WebhookDelivery, utcnow
from postroom.states import DeliveryStatus
from postroom.webhook_signing import WebhookVerificationError, verify
from services.orgs import add_org
from services.webhooks import (
    ROTATION_OVERLAP,
    NoSuchWebhook,
    add_subscription,
    delete_subscription,
    deliver_due,
    delivery_page,
    emit,
    get_subscription,
    list_subscriptions,
    rotate_secret,
)
from tests.services.test_webhooks import Receiver


@pytest.fixture
def hooks() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def allowed(config: Config) -> Config:
    return dataclasses.replace(config, webhooks=WebhooksConfig(allow_private=True, timeout=1.0))


def test_rotation_signs_with_both_secrets_for_the_overlap_then_only_the_new(sessions, allowed, hooks) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    hooks.append(receiver)
    with sessions.begin() as s:
        org = add_org(s, "Acme").id
        sub, old = add_subscription(s, allowed, org, receiver.url, ["message.opened"])
    receiver.secrets = [old]  # it checks every delivery's signature (bad_signatures)
    t0 = utcnow()
    with sessions.begin() as s:
        new, until = rotate_secret(s, allowed, org, sub, now=t0)
        emit(s, org, "message.opened", {"n": 1}, now=t0)
        assert get_subscription(s, allowed, org, sub).rotating_until == until
    assert new != old and until == t0 + ROTATION_OVERLAP
    assert deliver_due(sessions, allowed, t0) == 1
    heads, body = receiver.received[-1]
    verify(old, heads, body, now=time.time())  # a receiver not yet told the new secret
    verify(new, heads, body, now=time.time())
    assert receiver.bad_signatures == []
    later = t0 + ROTATION_OVERLAP + timedelta(seconds=1)
    with sessions.begin() as s:
        emit(s, org, "message.opened", {"n": 2}, now=later)
    assert deliver_due(sessions, allowed, later) == 1
    heads, body = receiver.received[-1]
    assert len(heads["webhook-signature"].split()) == 1
    verify(new, heads, body, now=time.time())
    with pytest.raises(WebhookVerificationError):
        verify(old, heads, body, now=time.time())


def test_another_organisations_subscription_is_no_such_webhook(sessions, allowed, hooks) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    hooks.append(receiver)
    with sessions.begin() as s:
        mine, theirs = add_org(s, "Acme").id, add_org(s, "Other").id
        sub, _ = add_subscription(s, allowed, mine, receiver.url, ["message.opened"])
    with sessions.begin() as s:
        with pytest.raises(NoSuchWebhook):
            get_subscription(s, allowed, theirs, sub)
        with pytest.raises(NoSuchWebhook):
            rotate_secret(s, allowed, theirs, sub)
        with pytest.raises(NoSuchWebhook):
            delete_subscription(s, theirs, sub)
        assert list_subscriptions(s, allowed, theirs) == []
        assert [v.url for v in list_subscriptions(s, allowed, mine)] == [receiver.url]


def test_a_deleted_subscription_is_sent_nothing_more(sessions, allowed, hooks) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    hooks.append(receiver)
    with sessions.begin() as s:
        org = add_org(s, "Acme").id
        sub, _ = add_subscription(s, allowed, org, receiver.url, ["message.opened"])
        emit(s, org, "message.opened", {"n": 1})
    with sessions.begin() as s:
        delete_subscription(s, org, sub)
    with sessions.begin() as s:
        assert emit(s, org, "message.opened", {"n": 2}) == 0
    assert deliver_due(sessions, allowed, utcnow() + timedelta(seconds=1)) == 0
    assert receiver.received == []
    with sessions() as s:
        assert s.scalars(select(WebhookDelivery)).all() == []
        assert list_subscriptions(s, allowed, org) == []


def test_the_delivery_log_pages(sessions, allowed, hooks) -> None:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    hooks.append(receiver)
    with sessions.begin() as s:
        org = add_org(s, "Acme").id
        add_subscription(s, allowed, org, receiver.url, ["message.opened"])
        t0 = utcnow()
        for n in range(5):
            emit(s, org, "message.opened", {"n": n}, now=t0 + timedelta(seconds=n))
    with sessions() as s:
        first, last = delivery_page(s, org, 0, 2), delivery_page(s, org, 4, 2)
    assert first.total == 5 and len(first.items) == 2 and first.next_offset == 2
    assert len(last.items) == 1 and last.next_offset is None
    assert first.items[0].created_at > first.items[1].created_at > last.items[0].created_at


def test_a_silent_receiver_does_not_hold_the_others(sessions, allowed, hooks) -> None:  # type: ignore[no-untyped-def]
    fast, silent = Receiver(), Receiver()
    hooks.extend([fast, silent])
    silent.delay = 3.0  # answers after the 1 s timeout
    with sessions.begin() as s:
        org = add_org(s, "Acme").id
        add_subscription(s, allowed, org, silent.url, ["message.opened"])
        add_subscription(s, allowed, org, fast.url, ["message.opened"])
        t0 = utcnow()
        for n in range(60):  # more than a pass reads at once; the silent one's come first in the queue
            emit(s, org, "message.opened", {"n": n}, now=t0)
    fast.secrets = silent.secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]  # signatures not checked here
    start = time.monotonic()
    deliver_due(sessions, allowed, t0 + timedelta(seconds=1))
    took = time.monotonic() - start
    with sessions() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        statuses = [d.status for d in rows]
    assert len(fast.received) == 60 and statuses.count(DeliveryStatus.DELIVERED) == 60
    # the silent one was tried once (its turn ends at the failure), not sixty times in a row
    assert statuses.count(DeliveryStatus.FAILED) == 1 and statuses.count(DeliveryStatus.PENDING) == 59
    assert took < 5, f"one pass took {took:.1f} s"
