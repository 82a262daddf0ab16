"""Routing inbound mail to what it answers (placeholder: the ROUTING engineer's module replaces
this one at merge; the signatures are the shared interface of issue 13).

All three run inside the caller's transaction; none commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from postroom.bounces import Bounce
from postroom.inbound import InboundMessage


@dataclass(frozen=True)
class Route:
    """Where an inbound message belongs: an outbox message (``kind`` "outbox", ``id`` the
    outbox message id) or an applicant (``kind`` "applicant": only the sender matched one),
    and by which identifier (``via``: "reply_token" | "in_reply_to" | "short_id" | "sender")."""

    kind: str
    id: int
    via: str
    outbox_id: int | None = None
    recipient_id: int | None = None  # the outbox recipient who answered, when known
    applicant_id: int | None = None  # the applicant this mail belongs to, when known


def route_inbound(session: Session, org_id: int, msg: InboundMessage) -> Route | None:
    """The resource ``msg`` belongs to, or None (placeholder: always None)."""
    return None


def record_answer(session: Session, org_id: int, route: Route, msg: InboundMessage, now: datetime) -> None:
    """Mark the recipient replied (or auto_replied) (placeholder: does nothing)."""


def record_bounce(session: Session, org_id: int, bounce: Bounce, now: datetime) -> list[int]:
    """Mark each failed recipient bounced; the outbox recipient ids marked (placeholder: none)."""
    return []
