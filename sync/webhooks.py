"""Webhook deliveries: the durable queue and the worker's pass over it.

An event becomes one ``webhook_deliveries`` row per active subscription of the organisation
that listens to it (:func:`emit`), written in the caller's transaction: when that commits, the
delivery is as durable as the change it announces, and a crash before the worker sends it
loses nothing. The worker (:func:`deliver_due`, each pass of :class:`sync.worker.Worker`) then
sends every due row. A delivery goes through these states (:class:`postroom.states.DeliveryStatus`)::

    pending ──2xx──────────────────────────────▶ delivered
       │  └──410 Gone (subscription disabled)──▶ gave_up
       └─other answer, timeout, refused──▶ failed ──(retried on the schedule)──▶ … ──▶ gave_up

**Claiming.** A worker claims a due row, just before sending it, by compare-and-set: it moves
``next_attempt_at`` past the attempt's end only where the row is still open and due (``UPDATE … WHERE status IN
('pending', 'failed') AND next_attempt_at <= now``); of two workers, one updates the row and the
other updates nothing, so a delivery is never sent twice at the same time. A worker that dies
holding a claim leaves the row due again once the claim has run out (at least once, never lost).
No transaction is open while a request is in flight.

**Fairness.** One pass serves each subscription's due deliveries in order, one request at a time
per subscription, and up to :data:`WORKERS` subscriptions at once (:func:`deliver_due`); a
subscription's turn ends when it has nothing due, at its first failure or after :data:`PASS_BUDGET`. A receiver that
answers slowly or not at all (up to ``[webhooks] timeout``) therefore delays its own deliveries
only: before, one pass sent everything single file, and one silent receiver with a backlog held
every other organisation's events for a timeout each (``docs/benchmarks.md``).

**Retry schedule** (after the first attempt, which is made as soon as the worker sees the row),
the Standard Webhooks/Svix one stretched to about three days: 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 10 h, 14 h, 24 h after each failed attempt; the tenth failure gives up (about 65 h after
the event). A ``410 Gone`` answer gives up at once and disables the subscription.

**Requests.** ``POST`` of ``{"type": event, "timestamp": ISO 8601, "data": {...}}`` with the
three Standard Webhooks headers (:func:`postroom.webhook_signing.headers`), signed with the
current secret and, during a rotation (until the previous secret's ``until``), the previous
one too. The host is resolved and every address checked with :func:`postroom.image_proxy.is_public_address` (unless
``[webhooks] allow_private``); the connection then goes to the checked address, so a name that
resolves differently a moment later (DNS rebinding) cannot redirect it. Redirects are not
followed: a 3xx is a failure.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.image_proxy import Resolver, UnreachableHost, pin_address
from postroom.models import WebhookDelivery, WebhookSubscription, utcnow
from postroom.states import OPEN_DELIVERIES, DeliveryStatus, WebhookEvent
from postroom.webhook_signing import headers

log = logging.getLogger("postroom.webhooks")

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
CLAIM_MARGIN = timedelta(seconds=60)  # a claim outlives the request's timeout by this much
BATCH = 100  # deliveries attempted in one pass, at most
PER_SUBSCRIPTION = 50  # of them for one subscription
WORKERS = 8  # subscriptions served at once in a pass (one request in flight each)
PASS_BUDGET = 5.0  # seconds after which a subscription's turn ends (after the request in flight)
ROTATION_OVERLAP = timedelta(hours=24)  # a rotated-out secret signs beside the new one this long
MAX_ERROR = 500  # characters of an error or answer kept in last_error

OPEN = tuple(s.value for s in OPEN_DELIVERIES)


def new_msg_id() -> str:
    """A delivery's ``webhook-id``: ``msg_`` and 128 random bits (no full stop, as the spec needs)."""
    return "msg_" + secrets.token_urlsafe(16)


_LISTENING = "postroom.webhooks.listening"  # session.info key: (transaction, {org id: subscriptions})


def _listening(session: Session, org_id: int) -> list[tuple[int, frozenset[str]]]:
    """(id, events) of the organisation's active subscriptions, read once per transaction:
    the hot paths (a sync batch, a batch of tracking hits) emit many events in one transaction
    and pay for one query per organisation, however many they emit."""
    tx = session.get_transaction()
    cached = session.info.get(_LISTENING)
    if tx is not None and cached is not None and cached[0] is tx and org_id in cached[1]:
        return cached[1][org_id]  # type: ignore[no-any-return]
    subs = [
        (sub_id, frozenset(events))
        for sub_id, events in session.execute(
            select(WebhookSubscription.id, WebhookSubscription.events).where(
                WebhookSubscription.org_id == org_id, WebhookSubscription.active
            )
        )
    ]
    tx = session.get_transaction()  # the query began one if none was open
    if tx is not None:
        if cached is None or cached[0] is not tx:
            cached = (tx, dict[int, list[tuple[int, frozenset[str]]]]())
            session.info[_LISTENING] = cached
        cached[1][org_id] = subs
    return subs


def forget_subscriptions(session: Session) -> None:
    """Drop ``session``'s cached subscriptions (after adding, changing or disabling one in it)."""
    session.info.pop(_LISTENING, None)


def emit(session: Session, org_id: int, event: str, data: Mapping[str, Any], now: datetime | None = None) -> int:
    """Queue ``event`` with ``data`` for every active subscription of ``org_id`` that listens to
    it, in ``session``'s transaction (the caller commits it with the change it announces).
    Returns how many deliveries were queued. ``data`` must be JSON-able.

    The organisation's subscriptions are read once per transaction (:func:`_listening`), so
    emitting is one query per organisation and transaction, and then nothing at all for an
    organisation without a subscription to ``event``."""
    kind = WebhookEvent(event)
    when = now or utcnow()
    queued = 0
    for sub_id, events in _listening(session, org_id):
        if kind.value in events:
            session.add(
                WebhookDelivery(
                    subscription_id=sub_id,
                    event=kind.value,
                    msg_id=new_msg_id(),
                    payload=dict(data),
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=when,
                    created_at=when,
                )
            )
            queued += 1
    return queued


@dataclass(frozen=True)
class _Attempt:
    """A claimed delivery, with what sending it needs (read while the claim was made)."""

    id: int
    attempt: int  # 1 for the first
    subscription_id: int
    url: str
    secrets: tuple[str, ...]  # current first
    msg_id: str
    body: bytes


@dataclass(frozen=True)
class _Answer:
    status_code: int | None
    error: str | None


class _PinnedAdapter(HTTPAdapter):
    """requests' adapter whose TLS names ``host`` (SNI and certificate) whatever address the URL holds."""

    def __init__(self, host: str) -> None:
        self._host = host  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: object) -> None:
        super().init_poolmanager(connections, maxsize, block, server_hostname=self._host, **pool_kwargs)


def _system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def body_of(delivery: WebhookDelivery) -> bytes:
    """The JSON a delivery sends: the same bytes on every attempt."""
    doc = {"type": delivery.event, "timestamp": delivery.created_at.isoformat(), "data": delivery.payload}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _due(sessions: sessionmaker[Session], now: datetime, fair: bool) -> list[list[int]]:
    """The ids of the deliveries due at ``now``, at most :data:`BATCH`, oldest first: grouped by
    subscription with at most :data:`PER_SUBSCRIPTION` each (``fair``), or as one group."""
    rank = (
        func.row_number()
        .over(
            partition_by=WebhookDelivery.subscription_id,
            order_by=(WebhookDelivery.next_attempt_at, WebhookDelivery.id),
        )
        .label("rank")
    )
    due = (
        select(WebhookDelivery.id, WebhookDelivery.subscription_id, WebhookDelivery.next_attempt_at, rank)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookDelivery.status.in_(OPEN), WebhookDelivery.next_attempt_at <= now, WebhookSubscription.active)
        .subquery()
    )
    query = select(due.c.id, due.c.subscription_id).order_by(due.c.next_attempt_at, due.c.id).limit(BATCH)
    if fair:
        query = query.where(due.c.rank <= PER_SUBSCRIPTION)
    with sessions() as s:
        rows = s.execute(query).all()
    if not fair:
        return [[row.id for row in rows]] if rows else []
    groups: dict[int, list[int]] = {}
    for row in rows:
        groups.setdefault(row.subscription_id, []).append(row.id)
    return list(groups.values())


def _due_of(sessions: sessionmaker[Session], subscription_id: int, now: datetime) -> list[int]:
    """The next :data:`PER_SUBSCRIPTION` due deliveries of one subscription, oldest first."""
    with sessions() as s:
        return list(
            s.scalars(
                select(WebhookDelivery.id)
                .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
                .where(
                    WebhookDelivery.subscription_id == subscription_id,
                    WebhookDelivery.status.in_(OPEN),
                    WebhookDelivery.next_attempt_at <= now,
                    WebhookSubscription.active,
                )
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(PER_SUBSCRIPTION)
            )
        )


def _claim(
    sessions: sessionmaker[Session], box: SecretBox, delivery_id: int, now: datetime, until: datetime
) -> _Attempt | None:
    """Claim one due delivery by compare-and-set (None if another worker has it, or it is no
    longer due) and read what sending it needs."""
    with sessions.begin() as s:
        won = s.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status.in_(OPEN),
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=until, attempts=WebhookDelivery.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return None  # another worker has it
        d = s.get_one(WebhookDelivery, delivery_id)
        sub = s.get_one(WebhookSubscription, d.subscription_id)
        keys = [box.open(sub.secret)["secret"]]
        if sub.previous_secret is not None:
            previous = box.open(sub.previous_secret)
            retired = previous.get("until")
            if retired is None or datetime.fromisoformat(retired) > now:
                keys.append(previous["secret"])
        return _Attempt(d.id, d.attempts, sub.id, sub.url, tuple(keys), d.msg_id, body_of(d))


def _target(url: str, resolve: Resolver, allow_private: bool) -> tuple[str, str, str]:
    """(URL with the checked address, host for TLS, Host header); raises ValueError why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the URL is not http or https")
    if parts.scheme == "http" and not allow_private:
        raise ValueError("plain http is delivered only with [webhooks] allow_private")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.encode("idna").decode("ascii")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        pinned, header = pin_address(parts.scheme, host, port, path, resolve, allow_private)
    except UnreachableHost as exc:
        if exc.private:
            raise ValueError(f"the host {host} is a private address, which is not delivered to") from None
        raise ValueError(f"the host {host} could not be found") from None
    return pinned, host, header


def _send(attempt: _Attempt, timeout: float, resolve: Resolver, allow_private: bool) -> _Answer:
    try:
        url, host, host_header = _target(attempt.url, resolve, allow_private)
    except ValueError as exc:
        return _Answer(None, f"Refused: {exc}.")
    # signed at the moment of sending (the receiver checks it against its clock), not at the schedule's ``now``
    signed = headers(list(attempt.secrets), attempt.msg_id, int(time.time()), attempt.body)
    with requests.Session() as http:
        http.trust_env = False  # no proxy from the environment: the checked address is where it goes
        http.mount(url, _PinnedAdapter(host))
        try:
            r = http.post(
                url,
                data=attempt.body,
                headers={
                    **signed,
                    "Host": host_header,
                    "Content-Type": "application/json",
                    "User-Agent": "Postroom-Webhooks",
                },
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return _Answer(None, f"{type(exc).__name__}: {str(exc)[:MAX_ERROR]}")
        with r:
            if 200 <= r.status_code < 300:
                return _Answer(r.status_code, None)
            return _Answer(r.status_code, f"HTTP {r.status_code}: {r.text[:MAX_ERROR]}")


def _record(sessions: sessionmaker[Session], attempt: _Attempt, answer: _Answer, now: datetime) -> None:
    ours = (WebhookDelivery.id == attempt.id, WebhookDelivery.attempts == attempt.attempt)
    values: dict[str, Any] = {"last_status_code": answer.status_code, "last_error": answer.error}
    if answer.error is None:
        values |= {"status": DeliveryStatus.DELIVERED.value, "delivered_at": now, "next_attempt_at": None}
    elif answer.status_code == 410 or attempt.attempt >= MAX_ATTEMPTS:  # gone, or the schedule is over
        values |= {"status": DeliveryStatus.GAVE_UP.value, "next_attempt_at": None}
    else:
        values |= {"status": DeliveryStatus.FAILED.value, "next_attempt_at": now + RETRY_DELAYS[attempt.attempt - 1]}
    with sessions.begin() as s:
        s.execute(update(WebhookDelivery).where(*ours).values(**values).execution_options(synchronize_session=False))
        if answer.status_code == 410:
            s.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == attempt.subscription_id)
                .values(active=False, disabled_reason=f"410 Gone from the receiver at {now.isoformat()}")
            )
            s.execute(  # its other queued events will not be wanted either
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.subscription_id == attempt.subscription_id,
                    WebhookDelivery.status.in_(OPEN),
                    WebhookDelivery.id != attempt.id,
                )
                .values(
                    status=DeliveryStatus.GAVE_UP.value,
                    next_attempt_at=None,
                    last_error="The subscription was disabled (410 Gone).",
                )
                .execution_options(synchronize_session=False)
            )
    level = logging.INFO if answer.error is None else logging.WARNING
    log.log(level, "webhook %s attempt %d: %s", attempt.msg_id, attempt.attempt, answer.error or answer.status_code)


def deliver_due(
    sessions: sessionmaker[Session],
    config: Config,
    now: datetime | None = None,
    *,
    resolve: Resolver | None = None,
    workers: int = WORKERS,
    fair: bool = True,
) -> int:
    """Send the deliveries due at ``now`` (up to :data:`BATCH`) and record each answer; returns
    how many were attempted. Safe to run in several workers at once.

    Each subscription's due deliveries go one after the other, oldest first (read
    :data:`PER_SUBSCRIPTION` at a time, and again while its turn lasts, so events queued during
    the pass are sent in it too), and up to ``workers`` subscriptions are served at once, so a
    slow or silent receiver holds one thread, never the others' deliveries. A subscription's
    turn ends when it has nothing due, at its first failure (its next deliveries would most
    likely fail alike; they wait for the next pass) or after :data:`PASS_BUDGET` seconds. Each
    delivery is claimed just before it is sent, so a claim covers one request. Once the pass has
    run past ``now``, "due" means due at the time of the claim. ``fair=False`` is the former single-file pass (one
    thread, every due delivery in order), kept so ``bench/webhooks_bench.py`` can measure both."""
    now = now or utcnow()
    box = SecretBox.for_config(config.security)
    timeout = config.webhooks.timeout
    started = time.monotonic()
    send_to = resolve or _system_resolver

    def clock() -> datetime:  # ``now``, or later once the pass has run past it
        return max(now, utcnow())

    def serve(ids: list[int]) -> int:
        attempted, subscription = 0, None
        while ids:
            for delivery_id in ids:
                if fair and attempted and time.monotonic() - started > PASS_BUDGET:
                    return attempted
                at = clock()
                attempt = _claim(sessions, box, delivery_id, at, at + timedelta(seconds=timeout) + CLAIM_MARGIN)
                if attempt is None:
                    continue
                answer = _send(attempt, timeout, send_to, config.webhooks.allow_private)
                _record(sessions, attempt, answer, now)  # the pass's time, as the schedule counts from it
                attempted += 1
                subscription = attempt.subscription_id
                if fair and answer.error is not None:
                    return attempted
            if not fair or subscription is None:
                break
            ids = _due_of(sessions, subscription, clock())  # its next ones, while its turn lasts
        return attempted

    groups = _due(sessions, now, fair)
    if len(groups) <= 1 or not fair or workers <= 1:
        return sum(serve(ids) for ids in groups)
    with ThreadPoolExecutor(min(workers, len(groups)), thread_name_prefix="postroom-webhook") as pool:
        return sum(pool.map(serve, groups))
