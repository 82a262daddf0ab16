"""Message templates, as a user deals with them: add, edit, list, find one (by name or id), and
see how the messages made from one did (:func:`template_results`).

A template is checked when it is saved (:func:`postroom.templating.check_template`): a syntax
error is refused naming its line, so a template in the database always compiles; whether the
data has every placeholder is only known when it is rendered for a message. Names are unique
within an organisation. With no ``org_id`` the functions work in the default organisation, the
one the CLI works in (as :mod:`services.applicants` does).

Errors are :class:`postroom.templating.TemplateError` naming the field (``name``, ``subject``,
``body``, ``template``); a template id that does not exist or is another organisation's is
:class:`NoSuchTemplate`, the same for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postroom.compose import unsafe_header_text
from postroom.models import MailAccount, OutboxMessage, OutboxRecipient, Template, TrackingEvent, utcnow
from postroom.states import HitKind, OutboxStatus
from postroom.templating import TemplateError, check_template
from sync.store import default_org

__all__ = [
    "MAX_NAME", "NoSuchTemplate", "ResultBucket", "TemplateResults", "TemplateSummary", "add_template",
    "get_template", "get_template_by_id", "list_templates", "template_results", "update_template",
]  # fmt: skip

MAX_NAME = 200  # characters (templates.name)
MAX_BARS = 30  # buckets of a results chart: days, or several days each for a long history
MIN_DAYS = 14  # a chart spans at least the last two weeks


class NoSuchTemplate(TemplateError):
    """A template id that does not exist or belongs to another organisation (field ``template``)."""


@dataclass(frozen=True)
class TemplateSummary:
    """A template as a list shows it (without its body)."""

    id: int
    name: str
    subject: str
    json_part: bool
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "subject": self.subject,
            "json_part": self.json_part,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def add_template(
    session: Session, org_id: int | None, name: str, subject: str, body: str, json_part: bool = False
) -> Template:
    """Save a new template; ``json_part``: messages made from it also carry their data as an
    application/json part. Refuses an empty, over-long or taken name and a template that
    :func:`~postroom.templating.check_template` refuses (a syntax error, naming the line)."""
    org = _org_id(session, org_id)
    name = _checked(session, org, name, subject, body)
    now = utcnow()
    template = Template(
        org_id=org, name=name, subject=subject, body=body, json_part=json_part, created_at=now, updated_at=now
    )
    session.add(template)
    session.flush()
    return template


def update_template(
    session: Session, org_id: int, template_id: int, name: str, subject: str, body: str, json_part: bool = False
) -> Template:
    """Change template ``template_id`` of organisation ``org_id``, checked as :func:`add_template`
    checks a new one. Messages already sent from it keep what they said."""
    template = get_template_by_id(session, org_id, template_id)
    template.name = _checked(session, org_id, name, subject, body, template.id)
    template.subject, template.body, template.json_part, template.updated_at = subject, body, json_part, utcnow()
    session.flush()
    return template


def get_template_by_id(session: Session, org_id: int, template_id: int) -> Template:
    """Template ``template_id`` of organisation ``org_id``; :class:`NoSuchTemplate` otherwise."""
    template = session.get(Template, template_id)
    if template is None or template.org_id != org_id:
        raise NoSuchTemplate(f"No template with id {template_id}.", "template")
    return template


def _checked(session: Session, org_id: int, name: str, subject: str, body: str, own_id: int | None = None) -> str:
    """The template's name, stripped, once name, subject and body pass (see :func:`add_template`)."""
    name = name.strip()
    if not name:
        raise TemplateError("A template needs a name.", "name")
    if len(name) > MAX_NAME or unsafe_header_text(name):
        raise TemplateError(f"A template name is one line of at most {MAX_NAME} characters.", "name")
    check_template(subject, body)
    taken = _find(session, org_id, name)
    if taken is not None and taken.id != own_id:
        raise TemplateError(f"There is already a template named {name!r}; choose another name.", "name")
    return name


def list_templates(session: Session, org_id: int | None = None) -> list[TemplateSummary]:
    """Every template of the organisation, by name."""
    rows = session.scalars(select(Template).where(Template.org_id == _org_id(session, org_id)).order_by(Template.name))
    return [TemplateSummary(t.id, t.name, t.subject, t.json_part, t.created_at, t.updated_at) for t in rows]


def get_template(session: Session, org_id: int | None, name: str) -> Template:
    """The template called ``name``; an unknown name is a :class:`TemplateError` (``template``)."""
    template = _find(session, _org_id(session, org_id), name.strip())
    if template is None:
        raise TemplateError(f"No template named {name!r}; see 'postroom templates list'.", "template")
    return template


def _org_id(session: Session, org_id: int | None) -> int:
    return default_org(session).id if org_id is None else org_id


def _find(session: Session, org_id: int, name: str) -> Template | None:
    return session.scalar(select(Template).where(Template.org_id == org_id, Template.name == name))


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultBucket:
    """What happened in ``days`` days from ``start``: recipients reached, and the recipients a
    person first opened (a person's click proves an open), clicked or replied in them. Machine
    opens (image proxies, privacy relays, scanners) are counted apart, never as people."""

    start: date
    days: int
    sent: int = 0
    opened: int = 0
    clicked: int = 0
    replied: int = 0
    machine_opened: int = 0


@dataclass(frozen=True)
class TemplateResults:
    """How the messages made from one template did. Counts are recipients: ``sent`` those
    reached (``tracked`` of them by tracked sends, the only ones whose opens and clicks can be
    known), ``opened``/``clicked``/``replied`` those a person opened, clicked, answered;
    ``machine_opened`` those whose copy a machine fetched. ``buckets``: the same over time, from
    the first send (or two weeks ago) to today, at most :data:`MAX_BARS` of them (empty before
    any send)."""

    template_id: int
    messages: int
    sent: int
    tracked: int
    opened: int
    clicked: int
    replied: int
    machine_opened: int
    buckets: tuple[ResultBucket, ...]

    def peak(self) -> int:
        """The largest count of any bucket, for scaling a chart (at least 1)."""
        counts = [max(b.sent, b.opened, b.clicked, b.replied, b.machine_opened) for b in self.buckets]
        return max(counts, default=0) or 1


def template_results(session: Session, org_id: int, template_id: int, today: date | None = None) -> TemplateResults:
    """The results of template ``template_id`` of organisation ``org_id`` (see
    :class:`TemplateResults`); :class:`NoSuchTemplate` for another organisation's template."""
    get_template_by_id(session, org_id, template_id)
    rows = session.execute(
        select(
            OutboxRecipient.id,
            OutboxRecipient.address,
            OutboxRecipient.status,
            OutboxRecipient.sent_at,
            OutboxRecipient.replied_at,
            OutboxMessage.id,
            OutboxMessage.status,
            OutboxMessage.sent_at,
            OutboxMessage.refused,
            OutboxMessage.tracked,
        )
        .join(OutboxMessage, OutboxMessage.id == OutboxRecipient.outbox_id)
        .join(MailAccount, MailAccount.id == OutboxMessage.account_id)
        .where(OutboxMessage.template_id == template_id, MailAccount.org_id == org_id)
    ).all()
    reached: dict[int, tuple[datetime, datetime | None, bool]] = {}  # recipient -> sent, replied, tracked
    messages = set()
    for rid, address, r_status, r_sent, replied, mid, m_status, m_sent, refused, tracked in rows:
        if tracked:
            when = r_sent if r_status == OutboxStatus.SENT else None
        else:
            when = m_sent if m_status == OutboxStatus.SENT and address not in (refused or {}) else None
        if when is not None:
            reached[rid] = (when, replied, bool(tracked))
            messages.add(mid)
    firsts = _first_hits(session, list(reached))
    days: dict[str, list[date]] = {"sent": [], "opened": [], "clicked": [], "replied": [], "machine_opened": []}
    for rid, (sent, replied, _) in reached.items():
        days["sent"].append(sent.date())
        if replied is not None:
            days["replied"].append(replied.date())
        for key in ("opened", "clicked", "machine_opened"):
            if (rid, key) in firsts:
                days[key].append(firsts[rid, key].date())
    return TemplateResults(
        template_id=template_id,
        messages=len(messages),
        sent=len(reached),
        tracked=sum(1 for _, _, tracked in reached.values() if tracked),
        opened=len(days["opened"]),
        clicked=len(days["clicked"]),
        replied=len(days["replied"]),
        machine_opened=len(days["machine_opened"]),
        buckets=_buckets(days, today or utcnow().date()),
    )


def _first_hits(session: Session, recipient_ids: list[int]) -> dict[tuple[int, str], datetime]:
    """(recipient, "opened" | "clicked" | "machine_opened") -> the first such hit. A person's
    click counts as an open too; a machine's hit never counts for a person."""
    firsts: dict[tuple[int, str], datetime] = {}
    for start in range(0, len(recipient_ids), 500):
        chunk = recipient_ids[start : start + 500]
        hits = session.execute(
            select(TrackingEvent.recipient_id, TrackingEvent.kind, TrackingEvent.machine, func.min(TrackingEvent.at))
            .where(TrackingEvent.recipient_id.in_(chunk))
            .group_by(TrackingEvent.recipient_id, TrackingEvent.kind, TrackingEvent.machine)
        ).all()
        for rid, kind, machine, at in hits:
            keys = ["machine_opened"] if machine else ["opened"] + (["clicked"] if kind == HitKind.CLICK else [])
            for key in keys:
                if (rid, key) not in firsts or at < firsts[rid, key]:
                    firsts[rid, key] = at
    return firsts


def _buckets(days: dict[str, list[date]], today: date) -> tuple[ResultBucket, ...]:
    if not days["sent"]:
        return ()
    last = max([today, *(d for dates in days.values() for d in dates)])
    first = min(*days["sent"], last - timedelta(days=MIN_DAYS - 1))  # a few sends still show a time line
    size = max(1, math.ceil(((last - first).days + 1) / MAX_BARS))
    count = (last - first).days // size + 1
    tallies = [dict.fromkeys(days, 0) for _ in range(count)]
    for key, dates in days.items():
        for d in dates:
            tallies[(d - first).days // size][key] += 1
    return tuple(ResultBucket(first + timedelta(days=i * size), size, **t) for i, t in enumerate(tallies))
