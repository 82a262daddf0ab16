"""Engine and session creation, and schema upgrades through Alembic.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the
worker and the CLI can share the file; PostgreSQL is used through psycopg 3.
Sessions are short: callers open one per unit of work and never hold a
transaction across network I/O.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, make_url
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
from postroom.errors import UserError
from postroom.private_files import private_dir, private_file, tighten
from postroom.urls import redact_url

# migrations/ sits beside this package, both in a checkout and when installed.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseError(UserError):
    """The database cannot be reached or is not at the expected schema version."""


def driver_message(exc: DBAPIError, url: URL | None = None) -> str:
    """The driver's reason on one line (psycopg's messages span several), never showing
    the password of ``url`` should the driver quote it."""
    text = " ".join(line.strip() for line in str(exc.orig).splitlines() if line.strip()).rstrip(".")
    if url is not None and url.password and len(str(url.password)) >= 4:
        text = text.replace(str(url.password), "***")
    return text


def shown_url(url: URL | str) -> str:
    """A database URL as messages show it: the password (in the userinfo or the query) masked."""
    return redact_url(url.render_as_string(hide_password=False) if isinstance(url, URL) else url)


def cannot_connect(exc: DBAPIError) -> bool:
    """Whether ``exc`` came from opening a connection (refused, unknown host, a connection
    option libpq rejects) rather than from a statement."""
    return isinstance(exc, OperationalError) or exc.statement is None


def unreachable(engine: Engine, exc: DBAPIError) -> DatabaseError:
    return DatabaseError(f"Cannot reach the database at {shown_url(engine.url)}: {driver_message(exc, engine.url)}.")


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
    not_usable = f"Setting database.url is not a database URL Postroom can use: {shown_url(cfg.url)!r}."
    try:
        url = make_url(cfg.url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise DatabaseError(not_usable) from None
    # hide_parameters: errors and echoed statements never show bound values (message content)
    kwargs: dict[str, Any] = {"echo": cfg.echo, "future": True, "hide_parameters": True}
    path = None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            url = url.set(database=os.path.expanduser(url.database))
            path = Path(str(url.database))
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise DatabaseError(not_usable) from None
    except ImportError as exc:  # a dialect SQLAlchemy knows, whose driver is not installed
        raise DatabaseError(
            f"Setting database.url needs the driver {exc.name or 'module'}, which is not installed: "
            f"{shown_url(cfg.url)!r} (Postroom ships the drivers for sqlite:/// and postgresql:// URLs)."
        ) from None
    if path is not None:
        try:
            private_sqlite(path)
        except OSError as exc:
            raise DatabaseError(f"Cannot create the database {path}: {exc.strerror or exc}.") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def private_sqlite(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it gives its -wal and -shm files the
    database file's mode), in a 0700 directory if the directory is new; an existing
    database and its -wal/-shm/-journal files lose any group or other access. An existing
    directory keeps its mode: it may be a home directory or another that is not Postroom's."""
    private_dir(path.parent)
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(Path(f"{path}{suffix}"))


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
    except DBAPIError as exc:
        if not cannot_connect(exc):
            raise
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
    except DBAPIError as exc:
        if not cannot_connect(exc):
            raise
        raise unreachable(engine, exc) from None
    if rev != head:
        raise DatabaseError("The database schema is not up to date; run 'postroom db upgrade' first.")
