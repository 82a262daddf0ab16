"""outbox_recipients.bounced_at, bounce_status, bounce_reason: a delivery status notification
(RFC 3464) for a message Postroom sent, read by the processing mailbox, marks its recipient

``bounce_status`` is the RFC 3463 status code (``5.1.1``), ``bounce_reason`` the diagnostic in
one line (``550 5.1.1 no such user``); the first notice for a recipient is kept.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("bounce_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("bounce_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_recipients", schema=None) as batch_op:
        batch_op.drop_column("bounce_reason")
        batch_op.drop_column("bounce_status")
        batch_op.drop_column("bounced_at")
