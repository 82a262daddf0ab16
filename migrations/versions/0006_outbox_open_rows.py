"""outbox: a partial index on the rows not settled yet (queued, sending, uncertain)

The worker looks at an account's outbox on every sync pass. An account that has sent
thousands of messages keeps them all as ``sent`` rows; the index holds only the few
that still need something done, so the idle pass reads one short index range.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('queued', 'sending', 'uncertain')"


def upgrade() -> None:
    op.create_index(
        "ix_outbox_open",
        "outbox",
        ["account_id"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_open", table_name="outbox")
