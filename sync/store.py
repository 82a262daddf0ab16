"""Small database helpers shared by the sync services (dialect-aware bulk writes)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Float, FromClause, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from postroom.models import Organisation, UTCDateTime

T = TypeVar("T")

# SQLite allows 32k bound parameters per statement since 3.32; PostgreSQL 65k.
CHUNK = 500


class db_now(FunctionElement[Any]):
    """The database server's clock (UTC), plus ``seconds``: the one clock every worker on
    every machine agrees on, for leases and claims (a worker's own clock may be off).

    PostgreSQL: ``statement_timestamp()``; SQLite: ``strftime('%Y-%m-%d %H:%M:%f', 'now')``,
    which compares correctly with the timestamps SQLAlchemy stores there."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(literal(float(seconds), Float()))


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(statement_timestamp() + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({compiler.process(element.clauses, **kw)}) || ' seconds')"


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_ignore_stmt(session: Session, table: FromClause, conflict: Sequence[str]) -> Any:
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(conflict))


def insert_ignore(session: Session, table: FromClause, rows: Iterable[dict[str, Any]], conflict: Sequence[str]) -> None:
    """INSERT rows, silently skipping those that collide on the ``conflict`` columns."""
    rows = list(rows)
    if rows:
        session.execute(_insert_ignore_stmt(session, table, conflict), rows)


def insert_ignore_returning(
    session: Session, table: FromClause, rows: Sequence[dict[str, Any]], conflict: Sequence[str], key: Sequence[str]
) -> dict[tuple[Any, ...], int]:
    """Like :func:`insert_ignore`; returns ``{(row[k] for k in key): id}`` for the rows actually inserted."""
    if not rows:
        return {}
    stmt = _insert_ignore_stmt(session, table, conflict).returning(*(table.c[k] for k in key), table.c.id)
    return {tuple(r[:-1]): int(r[-1]) for r in session.execute(stmt, rows).tuples().all()}


def upsert(
    session: Session,
    table: FromClause,
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    *,
    update: Sequence[str],
    increment: Sequence[str] = (),
    reset: dict[str, Any] | None = None,
) -> None:
    """INSERT rows; a row that collides on ``conflict`` gets the new values of the ``update``
    columns, its ``increment`` columns one higher and the ``reset`` values."""
    if not rows:
        return
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = module.insert(table)
    values: dict[str, Any] = {c: stmt.excluded[c] for c in update}
    values |= {c: table.c[c] + 1 for c in increment}
    values |= reset or {}
    session.execute(stmt.on_conflict_do_update(index_elements=list(conflict), set_=values), list(rows))


def default_org(session: Session) -> Organisation:
    """The organisation the CLI works in (the first one; created on first use)."""
    org = session.query(Organisation).order_by(Organisation.id).first()
    if org is None:
        org = Organisation(name="Default")
        session.add(org)
        session.flush()
    return org
