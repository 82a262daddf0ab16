"""Engine and session creation, and schema upgrades through Alembic.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the
worker and the CLI can share the file; PostgreSQL is used through psycopg 3.
Sessions are short: callers open one per unit of work and never hold a
transaction across network I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import DatabaseConfig

# migrations/ sits beside this package, both in a checkout and when installed.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseError(Exception):
    """The database cannot be reached or is not at the expected schema version."""


def driver_message(exc: OperationalError) -> str:
    """The driver's reason on one line (psycopg's messages span several)."""
    return " ".join(line.strip() for line in str(exc.orig).splitlines() if line.strip()).rstrip(".")


def unreachable(engine: Engine, exc: OperationalError) -> DatabaseError:
    url = engine.url.render_as_string(hide_password=True)
    return DatabaseError(f"Cannot reach the database at {url}: {driver_message(exc)}.")


# PostgreSQL SQLSTATE classes that mean "this data", not "the database": data exceptions
# (value too long, invalid text, NUL), integrity violations, program limits (index row size)
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be used at all (connection refused or
    lost, server shutting down, file locked, schema missing) rather than that it refused
    the data of this statement. The indexer quarantines a message for the second kind
    only; the first stops the pass, to be retried later.
    """
    if not isinstance(exc, SQLAlchemyError):
        return False  # e.g. UnicodeEncodeError while sqlite3 binds a value: the data
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, DataError | IntegrityError):
            return False
        state = getattr(exc.orig, "sqlstate", None)
        if state:
            return state[:2] not in _DATA_SQLSTATE_CLASSES
        return isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, DisconnectionError | PoolTimeout)


def make_engine(cfg: DatabaseConfig) -> Engine:
    url = cfg.url
    # hide_parameters: errors and echoed statements never show bound values (message content)
    kwargs: dict[str, Any] = {"echo": cfg.echo, "future": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError):
        raise DatabaseError(f"Setting database.url is not a database URL Postroom can use: {url!r}.") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest migration; returns the revision now applied."""
    try:
        command.upgrade(alembic_config(engine), "head")
    except OperationalError as exc:
        raise unreachable(engine, exc) from None
    return current_revision(engine) or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Raise DatabaseError with a one-sentence fix if the schema is not at head."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    try:
        rev = current_revision(engine)
    except OperationalError as exc:
        raise unreachable(engine, exc) from None
    if rev != head:
        raise DatabaseError("The database schema is not up to date; run 'postroom db upgrade' first.")
