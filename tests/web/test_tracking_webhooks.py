"""Tracking hits announced to webhooks, through the real endpoints served by waitress as
`postroom serve` serves them, on SQLite and PostgreSQL: a recipient's first open by a person is
``message.opened`` (later opens are not), every click by a person is ``message.clicked``; an
image proxy, a privacy-protection prefetch, a scanner or a HEAD request announces nothing; a
real HTTP receiver gets them signed. The hit writer reads the subscriptions once per batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import event, select

from postroom.config import Config, WebhooksConfig
from postroom.models import MailAccount, OutboxMessage
from services.webhooks import add_subscription, deliver_due
from tests.core.test_tracking_html import TARGETS
from tests.rig.webhook_receiver import Receiver
from tests.web.test_tracking_endpoints import BROWSER, CHROME, GMAIL, Sent, Served, seed, serve

APPLE_MPP = {"User-Agent": "Mozilla/5.0"}  # a bare agent: Apple Mail Privacy Protection's prefetch
SCANNER = {"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}


@pytest.fixture
def served(config: Config) -> Iterator[Served]:
    yield from serve(dataclasses.replace(config, webhooks=WebhooksConfig(allow_private=True, timeout=5.0)))


def _subscribed(served: Served, receiver: Receiver, sent_hours_ago: float = 2) -> Sent:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(hours=sent_hours_ago))
    with served.sessions.begin() as s:
        org = s.scalar(
            select(MailAccount.org_id)
            .join(OutboxMessage, OutboxMessage.account_id == MailAccount.id)
            .where(OutboxMessage.id == sent.outbox_id)
        )
        assert org is not None
        _, secret = add_subscription(s, served.config, org, receiver.url, ["message.opened", "message.clicked"])
    receiver.secrets = [secret]
    return sent


def _delivered(served: Served, receiver: Receiver) -> list[tuple[str, dict[str, Any]]]:
    served.recorder.flush()
    while deliver_due(served.sessions, served.config):
        pass
    assert receiver.bad_signatures == []
    return receiver.events()


def test_a_persons_first_open_is_announced_once(served: Served, receiver: Receiver) -> None:
    sent = _subscribed(served, receiver)
    zoe = sent.recipients["zoe@example.org"]
    url = served.keys.open_url(served.base, zoe)
    assert requests.get(url, headers={"User-Agent": GMAIL}, timeout=10).status_code == 200  # Gmail's proxy first
    assert _delivered(served, receiver) == []
    for _ in range(3):  # she reads it three times
        assert requests.get(url, headers=BROWSER, timeout=10).status_code == 200
    served.recorder.flush()
    assert requests.get(url, headers=BROWSER, timeout=10).status_code == 200  # and again, in a later batch
    events = _delivered(served, receiver)
    assert [kind for kind, _ in events] == ["message.opened"]
    data = events[0][1]
    opened_at = datetime.fromisoformat(data.pop("opened_at"))
    assert abs(datetime.now(UTC) - opened_at) < timedelta(minutes=1)
    assert data == {
        "outbox_id": sent.outbox_id,
        "recipient": "zoe@example.org",
        "recipient_id": zoe,
        "user_agent": CHROME,
    }


@pytest.mark.parametrize(
    ("headers", "method"),
    [({"User-Agent": GMAIL}, "GET"), (APPLE_MPP, "GET"), (SCANNER, "GET"), ({}, "GET"), (BROWSER, "HEAD")],
    ids=["gmail-proxy", "apple-privacy-protection", "scanner", "no-agent", "head"],
)
def test_machines_opening_or_clicking_announce_nothing(
    served: Served, receiver: Receiver, headers: dict[str, str], method: str
) -> None:
    sent = _subscribed(served, receiver)
    bob = sent.recipients["bob@example.org"]
    sent_headers = {"User-Agent": "", **headers}  # requests' own agent would be a library's
    for url in (served.keys.open_url(served.base, bob), served.keys.click_url(served.base, bob, 1, TARGETS[1])):
        answer = requests.request(method, url, headers=sent_headers, allow_redirects=False, timeout=10)
        assert answer.status_code in (200, 302)
    assert _delivered(served, receiver) == []
    hits = served.flush()
    assert len(hits) == 2 and all(h.machine for h in hits)  # recorded, as machines


def test_every_click_by_a_person_is_announced(served: Served, receiver: Receiver) -> None:
    sent = _subscribed(served, receiver)
    dan = sent.recipients["dan@example.net"]
    for link in (1, 0, 1):
        url = served.keys.click_url(served.base, dan, link, TARGETS[link])
        assert requests.get(url, headers=BROWSER, allow_redirects=False, timeout=10).status_code == 302
    events = _delivered(served, receiver)
    assert [(kind, d["recipient"], d["link"], d["url"]) for kind, d in events] == [
        ("message.clicked", "dan@example.net", 1, TARGETS[1]),
        ("message.clicked", "dan@example.net", 0, TARGETS[0]),
        ("message.clicked", "dan@example.net", 1, TARGETS[1]),
    ]
    assert all(d["outbox_id"] == sent.outbox_id and d["recipient_id"] == dan for _, d in events)
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 3


def test_a_scanner_clicking_every_link_at_delivery_announces_nothing(served: Served, receiver: Receiver) -> None:
    sent = _subscribed(served, receiver, sent_hours_ago=0)
    dan = sent.recipients["dan@example.net"]
    for i, target in enumerate(TARGETS):  # a gateway with a browser's user agent, at once
        requests.get(served.keys.click_url(served.base, dan, i, target), headers=BROWSER, allow_redirects=False)
    assert _delivered(served, receiver) == []


def test_a_batch_of_hits_reads_the_subscriptions_once(served: Served, receiver: Receiver) -> None:
    sent = _subscribed(served, receiver)
    reads: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM webhook_subscriptions" in statement:
            reads.append(statement)

    engine = served.sessions.kw["bind"]
    served.recorder.interval = 3600  # the writer waits for the flush: every hit in one batch
    event.listen(engine, "before_cursor_execute", listen)
    try:
        with requests.Session() as http:
            for rid in sent.recipients.values():
                for link, target in enumerate(TARGETS):
                    url = served.keys.click_url(served.base, rid, link, target)
                    assert http.get(url, headers=BROWSER, allow_redirects=False, timeout=10).status_code == 302
                assert http.get(served.keys.open_url(served.base, rid), headers=BROWSER, timeout=10).status_code == 200
        served.recorder.flush()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert served.recorder.batches == 1
    assert len(reads) == 1  # one for the batch's organisation, not one per hit (9 hits)
    events = _delivered(served, receiver)
    assert sorted(kind for kind, _ in events) == ["message.clicked"] * 6 + ["message.opened"] * 3
