"""due times for every scheduled account

The worker finds due accounts by walking the ``next_sync_at`` index in order; a NULL
sorts first in SQLite but last in PostgreSQL, so a scheduled account must have a due
time. New accounts get one (the model's default); this gives it to older rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 15:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE mail_accounts SET next_sync_at = CURRENT_TIMESTAMP "
        "WHERE next_sync_at IS NULL AND status IN ('active', 'backing-off', 'syncing')"
    )


def downgrade() -> None:
    pass  # a due time in the past means the same as none: due now
