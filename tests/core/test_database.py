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


def test_upgrade_marks_the_bodies_applicants_still_wait_for(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Migration 0004: an applicant's message indexed before it, whose body was never
    stored, is fetched by the next pass; other mail is not. Rebuilding the emails table
    (SQLite batch mode) keeps every row that references it."""
    from alembic import command

    from postroom.config import DatabaseConfig

    engine = db.make_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'old.db'}"))
    command.upgrade(db.alembic_config(engine), "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO organisations (id, name, created_at) VALUES (1, 'o', CURRENT_TIMESTAMP)"))
        for i in (1, 2, 3):
            conn.execute(
                text(
                    'INSERT INTO emails (id, org_id, message_id, subject, from_name, "references", to_addrs, '
                    "cc_addrs, created_at) VALUES (:i, 1, :m, '', '', '[]', '[]', '[]', CURRENT_TIMESTAMP)"
                ),
                {"i": i, "m": f"<{i}@x.test>"},
            )
        conn.execute(
            text("INSERT INTO applicants (id, org_id, name, created_at) VALUES (1, 1, 'A', CURRENT_TIMESTAMP)")
        )
        for email_id in (1, 3):  # 1: in a history, no body; 2: not in any history; 3: body failed to parse
            conn.execute(
                text("INSERT INTO history_entries (applicant_id, email_id, direction) VALUES (1, :e, 'inbound')"),
                {"e": email_id},
            )
        conn.execute(text("UPDATE emails SET body_error = 'malformed' WHERE id = 3"))
    db.upgrade(engine)
    with engine.connect() as conn:
        wanted = conn.execute(text("SELECT id FROM emails WHERE body_wanted ORDER BY id")).scalars().all()
        history = conn.execute(text("SELECT email_id FROM history_entries ORDER BY email_id")).scalars().all()
        foreign_keys = conn.execute(text("PRAGMA foreign_keys")).scalar()
    engine.dispose()
    assert wanted == [1]
    assert history == [1, 3]  # not cascaded away with the old table
    assert foreign_keys == 1  # and enforced again afterwards


def test_upgrade_gives_existing_emails_the_fingerprint_new_copies_will_have(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Migration 0005: an email indexed before it gets the fingerprint the indexer computes for
    the same message, so a copy of it synced later (another mailbox) joins it, not a new email;
    the rows that reference the emails survive the SQLite table rebuild."""
    from datetime import UTC, datetime

    from alembic import command

    from postroom.config import DatabaseConfig
    from postroom.mime import fingerprint

    engine = db.make_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'old.db'}"))
    command.upgrade(db.alembic_config(engine), "0004")
    sent = datetime(2026, 3, 3, 9, 0, 5, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO organisations (id, name, created_at) VALUES (1, 'o', CURRENT_TIMESTAMP)"))
        conn.execute(
            text(
                'INSERT INTO emails (id, org_id, message_id, subject, from_addr, from_name, sent_at, "references", '
                "to_addrs, cc_addrs, created_at, body_wanted) VALUES (1, 1, '<a@x.test>', 'Your  application', "
                "'ann@example.org', '', :sent, '[]', '[]', '[]', CURRENT_TIMESTAMP, 0)"
            ),
            {"sent": sent.replace(tzinfo=None).isoformat(sep=" ")},
        )
        conn.execute(
            text("INSERT INTO participants (email_id, address, role, org_id) VALUES (1, 'ann@example.org', 'from', 1)")
        )
    db.upgrade(engine)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT fingerprint, id_reused FROM emails")).one()
        participants = conn.execute(text("SELECT count(*) FROM participants")).scalar()
    engine.dispose()
    assert stored == (fingerprint("ann@example.org", sent, "Your application"), 0)
    assert participants == 1
