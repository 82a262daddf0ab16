"""Organisations: who owns what. Everything a user sees belongs to one organisation, and every
service that reads or changes data takes the organisation's id; another organisation's ids
answer exactly like ids that do not exist.

The CLI works in one organisation at a time: ``--org ID``, or, without it, the default one
(the first; created on first use by :func:`sync.store.default_org`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postroom.errors import UserError
from postroom.models import Organisation, User
from sync.store import default_org


class OrgError(UserError):
    """An organisation request that cannot be carried out: no name, an organisation that does
    not exist."""


@dataclass(frozen=True)
class OrgSummary:
    id: int
    name: str
    demo: bool
    users: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "demo": self.demo, "users": self.users}


def add_org(session: Session, name: str, *, demo: bool = False) -> Organisation:
    """A new organisation named ``name`` (1–200 characters)."""
    name = " ".join(name.split())
    if not name:
        raise OrgError("{name} must not be empty.", field="name")
    if len(name) > 200:
        raise OrgError("{name} must be at most 200 characters.", field="name")
    org = Organisation(name=name, demo=demo)
    session.add(org)
    session.flush()
    return org


def resolve_org(session: Session, org_id: int | None) -> int:
    """The organisation a command works in: ``org_id`` when it exists, else the default one."""
    if org_id is None:
        return default_org(session).id
    if session.get(Organisation, org_id) is None:
        raise OrgError(f"There is no organisation {org_id}; 'postroom orgs list' shows them.", field="org")
    return org_id


def list_orgs(session: Session) -> list[OrgSummary]:
    users = select(User.org_id, func.count().label("n")).group_by(User.org_id).subquery()
    rows = session.execute(
        select(Organisation.id, Organisation.name, Organisation.demo, func.coalesce(users.c.n, 0))
        .outerjoin(users, users.c.org_id == Organisation.id)
        .order_by(Organisation.id)
    )
    return [OrgSummary(i, n, bool(d), int(u)) for i, n, d, u in rows]
