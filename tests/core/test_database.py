"""Schema: Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from postroom import db
from postroom.config import Config
from postroom.models import Base


def test_migrations_match_models(config: Config) -> None:
    engine = db.make_engine(config.database)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models changed without a migration: {diff}"


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from postroom.config import DatabaseConfig

    engine = db.make_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'x.db'}"))
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()
