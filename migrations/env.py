"""Alembic environment: runs online against the engine Postroom hands over."""

from alembic import context

from postroom.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Postroom runs migrations online only: use 'postroom db upgrade'.")
run_migrations_online()
