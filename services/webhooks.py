"""Webhooks, as a user manages them: subscribe a URL to events, read the delivery log.

The queue and its delivery live in :mod:`sync.webhooks` (the worker sends, and the engine
emits); :func:`emit` is re-exported here for the services that announce events. A subscription's
secret is made here, sealed before it reaches the database, and shown once (the return value
of :func:`add_subscription` and of :func:`rotate_secret`).

**Rotation** (Standard Webhooks' zero-downtime scheme): :func:`rotate_secret` makes a new
secret and keeps the one it replaces as ``previous_secret`` for :data:`ROTATION_OVERLAP`
(24 hours, as Svix does), sealed as ``{"secret": ..., "until": ISO 8601}``; until then every
delivery is signed with both, so a receiver that still knows only the old one accepts it while
its owner installs the new one. Rotating again during an overlap retires the oldest secret at once.

Every function here takes the caller's organisation: a subscription of another organisation
answers :class:`NoSuchWebhook`, exactly as an id that does not exist.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.errors import UserError
from postroom.image_proxy import is_public_address
from postroom.models import WebhookDelivery, WebhookSubscription, utcnow
from postroom.states import WebhookEvent
from postroom.urls import is_loopback_host
from postroom.webhook_signing import new_secret
from services.paging import Page, clamp
from sync.webhooks import RETRY_DELAYS, ROTATION_OVERLAP, deliver_due, emit, forget_subscriptions

__all__ = [
    "EVENTS",
    "RETRY_DELAYS",
    "ROTATION_OVERLAP",
    "DeliverySummary",
    "NoSuchWebhook",
    "SubscriptionView",
    "WebhookError",
    "add_subscription",
    "delete_subscription",
    "deliver_due",
    "delivery_page",
    "emit",
    "get_subscription",
    "list_deliveries",
    "list_subscriptions",
    "rotate_secret",
]

EVENTS = tuple(e.value for e in WebhookEvent)
MAX_URL = 2000


class WebhookError(UserError):
    """A webhook request that cannot be carried out: a URL that is not https (or is private
    while ``[webhooks] allow_private`` is off), an event Postroom does not announce."""


class NoSuchWebhook(WebhookError):
    """Raised for a subscription id that does not exist or belongs to another organisation
    (the two answer alike); its field is ``id``."""


def _check_url(url: str, allow_private: bool) -> str:
    url = url.strip()
    if len(url) > MAX_URL:
        raise WebhookError(f"{{url}} must be at most {MAX_URL} characters.", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        raise WebhookError(f"{{url}} is not a valid URL: {url!r}.", field="url") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host or parts.username is not None or parts.fragment:
        raise WebhookError(
            f"{{url}} must be an https URL such as https://hooks.example.com/postroom, not {url!r}.", field="url"
        )
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    private = is_loopback_host(host) or (literal is not None and not is_public_address(literal))
    if private and not allow_private:
        raise WebhookError(
            f"{{url}} names a private or loopback address ({host}); deliveries there need "
            "[webhooks] allow_private = true.",
            field="url",
        )
    if parts.scheme == "http" and not (allow_private and private):
        raise WebhookError(
            f"{{url}} must be https; plain http is only for private addresses with [webhooks] allow_private, "
            f"not {url!r}.",
            field="url",
        )
    return url


def _check_events(events: list[str]) -> list[str]:
    wanted = [e.strip() for e in events if e.strip()]
    if not wanted:
        raise WebhookError(f"{{events}} must name at least one of {', '.join(EVENTS)}.", field="events")
    unknown = [e for e in wanted if e not in EVENTS]
    if unknown:
        raise WebhookError(
            f"{{events}} names {', '.join(unknown)}, which Postroom does not announce; the events are "
            f"{', '.join(EVENTS)}.",
            field="events",
        )
    return list(dict.fromkeys(wanted))


def add_subscription(session: Session, config: Config, org_id: int, url: str, events: list[str]) -> tuple[int, str]:
    """Subscribe ``url`` to ``events`` for ``org_id``; returns its id and its signing secret
    (``whsec_…``), which is stored sealed and never shown again."""
    checked = _check_url(url, config.webhooks.allow_private)
    wanted = _check_events(events)
    secret = new_secret()
    sub = WebhookSubscription(
        org_id=org_id,
        url=checked,
        events=wanted,
        secret=SecretBox.for_config(config.security).seal({"secret": secret}),
        active=True,
    )
    session.add(sub)
    session.flush()
    forget_subscriptions(session)  # an event emitted later in this transaction reaches it too
    return sub.id, secret


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription as its organisation sees it (never its secret)."""

    id: int
    url: str
    events: list[str]
    active: bool
    disabled_reason: str | None
    created_at: datetime
    rotating_until: datetime | None  # the previous secret signs too until then

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "created_at": self.created_at.isoformat(),
            "rotating_until": _iso(self.rotating_until),
        }


def _rotating_until(box: SecretBox, sub: WebhookSubscription, now: datetime) -> datetime | None:
    if sub.previous_secret is None:
        return None
    until = box.open(sub.previous_secret).get("until")
    when = datetime.fromisoformat(until) if until else None
    return when if when is not None and when > now else None


def _view(box: SecretBox, sub: WebhookSubscription, now: datetime) -> SubscriptionView:
    return SubscriptionView(
        sub.id,
        sub.url,
        list(sub.events),
        sub.active,
        sub.disabled_reason,
        sub.created_at,
        _rotating_until(box, sub, now),
    )


def _own(session: Session, org_id: int, sub_id: int) -> WebhookSubscription:
    sub = session.get(WebhookSubscription, sub_id)
    if sub is None or sub.org_id != org_id:
        raise NoSuchWebhook(f"There is no webhook subscription {sub_id}.", field="id")
    return sub


def list_subscriptions(session: Session, config: Config, org_id: int) -> list[SubscriptionView]:
    """The organisation's subscriptions, oldest first."""
    box, now = SecretBox.for_config(config.security), utcnow()
    subs = session.scalars(
        select(WebhookSubscription).where(WebhookSubscription.org_id == org_id).order_by(WebhookSubscription.id)
    ).all()
    return [_view(box, sub, now) for sub in subs]


def get_subscription(session: Session, config: Config, org_id: int, sub_id: int) -> SubscriptionView:
    """One subscription of the organisation; :class:`NoSuchWebhook` otherwise."""
    return _view(SecretBox.for_config(config.security), _own(session, org_id, sub_id), utcnow())


def delete_subscription(session: Session, org_id: int, sub_id: int) -> None:
    """Remove a subscription with its queued deliveries and its log; nothing more is sent to it."""
    sub = _own(session, org_id, sub_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscription_id == sub.id))
    session.delete(sub)
    session.flush()


def rotate_secret(
    session: Session, config: Config, org_id: int, sub_id: int, now: datetime | None = None
) -> tuple[str, datetime]:
    """Give a subscription a new signing secret (returned, shown once) and keep the current one
    signing beside it until the returned time (:data:`ROTATION_OVERLAP` from ``now``)."""
    sub = _own(session, org_id, sub_id)
    box = SecretBox.for_config(config.security)
    until = (now or utcnow()) + ROTATION_OVERLAP
    old = box.open(sub.secret)["secret"]
    secret = new_secret()
    sub.previous_secret = box.seal({"secret": old, "until": until.isoformat()})
    sub.secret = box.seal({"secret": secret})
    session.flush()
    return secret, until


@dataclass(frozen=True)
class DeliverySummary:
    """One line of the delivery log."""

    id: int
    subscription_id: int
    url: str
    event: str
    msg_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        iso = _iso
        return {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "url": self.url,
            "event": self.event,
            "msg_id": self.msg_id,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "delivered_at": iso(self.delivered_at),
        }


def list_deliveries(session: Session, org_id: int, limit: int = 100, offset: int = 0) -> list[DeliverySummary]:
    """The organisation's deliveries, newest first: ``limit`` of them from ``offset``."""
    rows = session.execute(
        select(WebhookDelivery, WebhookSubscription.url)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookSubscription.org_id == org_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [
        DeliverySummary(
            d.id,
            d.subscription_id,
            url,
            d.event,
            d.msg_id,
            d.status,
            d.attempts,
            d.next_attempt_at,
            d.last_status_code,
            d.last_error,
            d.created_at,
            d.delivered_at,
        )
        for d, url in rows
    ]


def delivery_page(
    session: Session, org_id: int, offset: int | None = 0, limit: int | None = None
) -> Page[DeliverySummary]:
    """One page of the delivery log (:class:`services.paging.Page`), newest first."""
    offset, limit = clamp(offset, limit)
    total = session.scalar(
        select(func.count(WebhookDelivery.id))
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookSubscription.org_id == org_id)
    )
    return Page(list_deliveries(session, org_id, limit, offset), total or 0, offset, limit)
