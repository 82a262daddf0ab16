"""bodies.snippet, bodies.attachments: a stored body's preview, for timelines and thread views

``snippet`` is the first words of its text, ``attachments`` how many attachments it has (those
that start in its first 256 KiB). Both are written when a body is stored (``sync.bodies``), so
listing an applicant's 1,000 messages reads two columns instead of parsing 1,000 MIME bodies.
Bodies stored before this revision have neither (NULL) until their message is opened
(``services.messages`` fills them then).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bodies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snippet", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("attachments", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bodies", schema=None) as batch_op:
        batch_op.drop_column("attachments")
        batch_op.drop_column("snippet")
