"""Webhooks, as a user manages them: subscribe a URL to events, read the delivery log.

The queue and its delivery live in :mod:`sync.webhooks` (the worker sends, and the engine
emits); :func:`emit` is re-exported here for the services that announce events. A subscription's
secret is made here, sealed before it reaches the database, and shown once (the return value
of :func:`add_subscription`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.errors import UserError
from postroom.image_proxy import is_public_address
from postroom.models import WebhookDelivery, WebhookSubscription
from postroom.states import WebhookEvent
from postroom.urls import is_loopback_host
from postroom.webhook_signing import new_secret
from sync.webhooks import RETRY_DELAYS, deliver_due, emit, forget_subscriptions

__all__ = [
    "EVENTS",
    "RETRY_DELAYS",
    "DeliverySummary",
    "WebhookError",
    "add_subscription",
    "deliver_due",
    "emit",
    "list_deliveries",
]

EVENTS = tuple(e.value for e in WebhookEvent)
MAX_URL = 2000


class WebhookError(UserError):
    """A webhook request that cannot be carried out: a URL that is not https (or is private
    while ``[webhooks] allow_private`` is off), an event Postroom does not announce."""


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
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

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


def list_deliveries(session: Session, org_id: int, limit: int = 100) -> list[DeliverySummary]:
    """The organisation's latest ``limit`` deliveries, newest first."""
    rows = session.execute(
        select(WebhookDelivery, WebhookSubscription.url)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookSubscription.org_id == org_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
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
