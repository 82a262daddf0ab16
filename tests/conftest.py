"""Shared fixtures: configuration, databases (SQLite and PostgreSQL), the mail rig.

Every test that takes ``config`` or ``sessions`` runs twice: on SQLite and on
PostgreSQL. PostgreSQL is found through ``POSTROOM_TEST_POSTGRES_URL`` (the
Makefile sets it to the local server). If that variable is empty the
PostgreSQL runs are skipped, unless ``POSTROOM_TEST_REQUIRE_SERVICES=1`` (as
in CI), which turns a missing or unreachable server into a failure.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from postroom import db
from postroom.config import Config, load_config
from postroom.models import Base
from tests.rig.fixtures import *  # noqa: F403  (mail_rig, mailbox, ...)
from tests.rig.webhook_receiver import receiver  # noqa: F401  (a real HTTP receiver of webhooks)

REQUIRE_SERVICES = os.environ.get("POSTROOM_TEST_REQUIRE_SERVICES") == "1"


def _pg_base_url() -> str | None:
    url = os.environ.get("POSTROOM_TEST_POSTGRES_URL", "")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("POSTROOM_TEST_POSTGRES_URL is not set but POSTROOM_TEST_REQUIRE_SERVICES=1.")
        return None
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test run (dropped at the end), at the newest schema."""
    base = _pg_base_url()
    if base is None:
        yield None
        return
    name = f"postroom_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable server: a failure, never a silent skip
        pytest.fail(f"PostgreSQL at {make_url(base)!r} is not usable: {exc}")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    db.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy (much faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = db.make_engine(
        load_config(
            env={
                "POSTROOM_DATABASE_URL": f"sqlite:///{path}",
                "POSTROOM_SECRET_KEY": "x" * 32,
                "HOME": str(path.parent),
            }
        ).database
    )
    db.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate_all(url: str) -> None:
    """Empty every table. A session an earlier test left open makes TRUNCATE wait, and for ever
    if nothing allocates meanwhile (the garbage collector never returns that connection): on a
    short lock timeout, collect and try once more, then fail naming the culprit, never hang."""
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    try:
        for wait in ("2s", "20s"):
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"SET LOCAL lock_timeout = '{wait}'"))
                    conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
                return
            except OperationalError:
                gc.collect()
        with engine.connect() as conn:
            held = conn.execute(
                text(
                    "SELECT state, query FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        pytest.fail(f"an earlier test left a PostgreSQL session open: {held}")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        dest = tmp_path / "postroom.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), dest)
        return f"sqlite:///{dest}"
    url = request.getfixturevalue("pg_url")
    if url is None:
        pytest.skip("PostgreSQL not configured (POSTROOM_TEST_POSTGRES_URL is empty)")
    _truncate_all(url)
    return url


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the CLI against this test's database and data directory."""
    return {
        "HOME": str(tmp_path),
        "POSTROOM_DATA_DIR": str(tmp_path / "data"),
        "POSTROOM_DATABASE_URL": database_url,
        "POSTROOM_SECRET_KEY": "test-secret-key-0123456789abcdef",
        "POSTROOM_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def config(env: dict[str, str]) -> Config:
    return load_config(env=env)


@pytest.fixture
def tracking(config: Config) -> Config:
    """``config`` with open tracking served at https://t.example.com."""
    return dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, base_url="https://t.example.com"))


@pytest.fixture
def sessions(config: Config):  # type: ignore[no-untyped-def]
    engine = db.make_engine(config.database)
    db.check_schema(engine)
    yield db.make_sessionmaker(engine)
    engine.dispose()
