"""Which tracking hits webhooks announce (the hit writer, :class:`services.tracking.HitRecorder`,
calls this in each batch's transaction): a recipient's first open by a person is
``message.opened``, every click by a person is ``message.clicked``; a machine's hit never is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.hits import Hit
from postroom.models import OutboxRecipient, TrackingEvent
from postroom.states import HitKind, WebhookEvent


@dataclass(frozen=True, slots=True)
class HitRecipient:
    """What announcing a hit needs of its recipient (read with the batch's recipients)."""

    outbox_id: int
    sent_at: datetime | None
    address: str
    org_id: int


def announcements(
    session: Session, people: list[tuple[int, Hit]], recipients: dict[int, HitRecipient]
) -> list[tuple[int, WebhookEvent, dict[str, Any]]]:
    """The webhook events these people's hits announce: ``message.opened`` for a recipient's
    first open by a person (none stored before, the first of this batch), ``message.clicked``
    for every click by a person. Clicks within the scanner window of delivery were left out by
    the caller: a burst over every link, recognised only once its last click arrives, would
    make them a machine's. Reads what it needs in at most two queries, whatever the batch."""
    opened = sorted({rid for rid, hit in people if hit.kind == HitKind.OPEN})
    before: set[int] = set()
    if opened:
        # PostgreSQL: lock these recipients, so that two servers writing opens for one of them
        # at once announce it once (the second waits, then sees the first's open)
        session.execute(  # in id order: two batches never wait for each other crosswise
            select(OutboxRecipient.id)
            .where(OutboxRecipient.id.in_(opened))
            .order_by(OutboxRecipient.id)
            .with_for_update()
        )
        before = set(
            session.scalars(
                select(TrackingEvent.recipient_id)
                .where(
                    TrackingEvent.recipient_id.in_(opened),
                    TrackingEvent.kind == HitKind.OPEN.value,
                    TrackingEvent.machine.is_(False),
                )
                .distinct()
            )
        )
    out: list[tuple[int, WebhookEvent, dict[str, Any]]] = []
    for rid, hit in people:
        r = recipients[rid]
        common = {"outbox_id": r.outbox_id, "recipient": r.address, "recipient_id": rid, "user_agent": hit.user_agent}
        if hit.kind == HitKind.OPEN:
            if rid in before:
                continue
            before.add(rid)
            out.append((r.org_id, WebhookEvent.MESSAGE_OPENED, {**common, "opened_at": hit.at.isoformat()}))
        else:
            data = {**common, "clicked_at": hit.at.isoformat(), "url": hit.url, "link": hit.link}
            out.append((r.org_id, WebhookEvent.MESSAGE_CLICKED, data))
    return out
