"""inbound_items.bounces: the recipients a delivery status notification newly marked bounced,
stored with the item (recipient id, address, RFC 3463 status, reason) rather than worked out
again from the recipients' timestamps

Items stored before this revision have none recorded (NULL, shown as an empty list).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounces", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound_items", schema=None) as batch_op:
        batch_op.drop_column("bounces")
