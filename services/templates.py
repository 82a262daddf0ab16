"""Message templates, as a user deals with them: add one, list them, find one by name.

A template is checked when it is saved (:func:`postroom.templating.check_template`): a syntax
error is refused naming its line, so a template in the database always compiles; whether the
data has every placeholder is only known when it is rendered for a message. Names are unique
within an organisation. With no ``org_id`` the functions work in the default organisation, the
one the CLI works in (as :mod:`services.applicants` does).

Errors are :class:`postroom.templating.TemplateError` naming the field (``name``, ``subject``,
``body``, ``template``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.compose import unsafe_header_text
from postroom.models import Template, utcnow
from postroom.templating import TemplateError, check_template
from sync.store import default_org

__all__ = ["MAX_NAME", "TemplateSummary", "add_template", "get_template", "list_templates"]

MAX_NAME = 200  # characters (templates.name)


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
    name = name.strip()
    if not name:
        raise TemplateError("A template needs a name.", "name")
    if len(name) > MAX_NAME or unsafe_header_text(name):
        raise TemplateError(f"A template name is one line of at most {MAX_NAME} characters.", "name")
    check_template(subject, body)
    if _find(session, org, name) is not None:
        raise TemplateError(f"There is already a template named {name!r}; choose another name.", "name")
    now = utcnow()
    template = Template(
        org_id=org, name=name, subject=subject, body=body, json_part=json_part, created_at=now, updated_at=now
    )
    session.add(template)
    session.flush()
    return template


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
