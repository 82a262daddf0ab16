"""The dashboard: what a recruiter's organisation looks like at a glance, and what needs them.

* **Needs attention**: mailboxes that need reconnecting or keep failing, and messages whose
  sending is uncertain or failed (each links to where it is fixed).
* **Latest from applicants**: the newest messages applicants sent, across every mailbox of the
  organisation, each once.
* **The last 7 days**: messages sent from Postroom, and of their recipients how many people opened
  (people only, the verdicts of :mod:`postroom.hits`: machine opens never count) and replied.

Six queries, none per row; everything is the organisation's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postroom.models import (
    Applicant,
    Email,
    HistoryEntry,
    MailAccount,
    OutboxMessage,
    OutboxRecipient,
    TrackingEvent,
)
from postroom.states import AccountStatus, HitKind, OutboxStatus
from services.accounts import AccountHealth, account_status

RECENT = 8  # applicants' messages shown
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class RecentMessage:
    email_id: int
    applicant_id: int
    applicant: str
    subject: str
    date: datetime | None


@dataclass(frozen=True)
class Dashboard:
    accounts: list[AccountHealth]
    applicants: int
    attention_accounts: list[AccountHealth]  # reconnect-needed, or failing again and again
    uncertain: int  # outbox messages that may or may not have gone out
    failed: int
    recent: list[RecentMessage]
    sent_week: int  # messages sent from Postroom in the last 7 days
    recipients_week: int
    opened_week: int  # of those recipients, how many a person opened (or clicked)
    replied_week: int


def dashboard(session: Session, org_id: int, now: datetime) -> Dashboard:
    accounts = account_status(session, now, org_id)
    attention = [
        a
        for a in accounts
        if a.status == AccountStatus.RECONNECT_NEEDED or (a.status == AccountStatus.BACKING_OFF and a.failure_count > 2)
    ]
    applicants = session.scalar(select(func.count()).select_from(Applicant).where(Applicant.org_id == org_id)) or 0
    mine = select(MailAccount.id).where(MailAccount.org_id == org_id).scalar_subquery()
    states = dict(
        session.execute(
            select(OutboxMessage.status, func.count())
            .where(
                OutboxMessage.account_id.in_(mine),
                OutboxMessage.status.in_([OutboxStatus.UNCERTAIN.value, OutboxStatus.FAILED.value]),
            )
            .group_by(OutboxMessage.status)
        )
        .tuples()
        .all()
    )
    recent = [
        RecentMessage(eid, aid, name, subject or "", when)
        for eid, aid, name, subject, when in session.execute(
            select(Email.id, Applicant.id, Applicant.name, Email.subject, HistoryEntry.occurred_at)
            .join(HistoryEntry, HistoryEntry.email_id == Email.id)
            .join(Applicant, Applicant.id == HistoryEntry.applicant_id)
            .where(Applicant.org_id == org_id, HistoryEntry.direction == "inbound")
            .order_by(HistoryEntry.occurred_at.desc().nulls_last(), Email.id.desc())
            .limit(RECENT)
        ).tuples()
    ]
    week = select(OutboxMessage.id).where(
        OutboxMessage.account_id.in_(mine),
        OutboxMessage.status == OutboxStatus.SENT.value,
        OutboxMessage.sent_at >= now - WEEK,
    )
    sent_week = session.scalar(select(func.count()).select_from(week.subquery())) or 0
    recipients = select(OutboxRecipient.id).where(OutboxRecipient.outbox_id.in_(week))
    recipients_week, replied_week = session.execute(
        select(func.count(), func.count(OutboxRecipient.replied_at)).where(OutboxRecipient.id.in_(recipients))
    ).one()
    opened_week = (
        session.scalar(
            select(func.count(func.distinct(TrackingEvent.recipient_id))).where(
                TrackingEvent.recipient_id.in_(recipients),
                TrackingEvent.machine.is_(False),
                TrackingEvent.kind.in_([HitKind.OPEN.value, HitKind.CLICK.value]),  # a person's click proves an open
            )
        )
        or 0
    )
    return Dashboard(
        accounts=accounts,
        applicants=int(applicants),
        attention_accounts=attention,
        uncertain=int(states.get(OutboxStatus.UNCERTAIN.value, 0)),
        failed=int(states.get(OutboxStatus.FAILED.value, 0)),
        recent=recent,
        sent_week=int(sent_week),
        recipients_week=int(recipients_week or 0),
        opened_week=int(opened_week),
        replied_week=int(replied_week or 0),
    )
