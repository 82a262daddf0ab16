"""scheduling and health: leases, backoff, dispatch marks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:30:59.152624
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mail_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_error_class", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("failure_count", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_mail_accounts_next_sync_at"), ["next_sync_at"], unique=False)
    # v1 called a failed account "error"; it is now backing off until its next try.
    op.execute("UPDATE mail_accounts SET status = 'backing-off' WHERE status = 'error'")


def downgrade() -> None:
    op.execute("UPDATE mail_accounts SET status = 'error' WHERE status = 'backing-off'")
    with op.batch_alter_table("mail_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_accounts_next_sync_at"))
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("failure_count")
        batch_op.drop_column("last_error_class")
