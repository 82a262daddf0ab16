"""emails.body_wanted: the bodies the "applicants" policy still has to fetch

An idle sync pass used to find them by scanning every copy of the account (a few ms
per 10,000 messages, on every pass). The marker is set when a history entry is recorded
for an email without a body and cleared when the body is stored; a partial index holds
only the marked emails.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 16:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_wanted", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE emails SET body_wanted = TRUE WHERE body_id IS NULL AND body_error IS NULL "
        "AND EXISTS (SELECT 1 FROM history_entries h WHERE h.email_id = emails.id)"
    )
    op.create_index(
        "ix_emails_body_wanted",
        "emails",
        ["id"],
        sqlite_where=sa.text("body_wanted = 1"),
        postgresql_where=sa.text("body_wanted"),
    )


def downgrade() -> None:
    op.drop_index("ix_emails_body_wanted", table_name="emails")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("body_wanted")
