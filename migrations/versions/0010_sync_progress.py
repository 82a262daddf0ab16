"""folders.messages_found, folders.messages_indexed: the progress of a folder's sync

* ``messages_found``: how many messages the server holds in the folder, from the complete
  listing its initial sync starts from (NULL: not listed yet), then kept by every pass.
* ``messages_indexed``: how many of them are in the header index; written once per batch
  while an initial sync runs, so a long one shows how far it got (``services.progress``).
* Folders synced before this revision get both from their copies (``messages_found`` only
  where the initial sync is done: the others are listed again by their next pass).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_found", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("messages_indexed", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE folders SET messages_indexed = (SELECT COUNT(*) FROM message_copies c WHERE c.folder_id = folders.id)"
    )
    op.execute("UPDATE folders SET messages_found = messages_indexed WHERE state = 'incremental'")


def downgrade() -> None:
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.drop_column("messages_indexed")
        batch_op.drop_column("messages_found")
