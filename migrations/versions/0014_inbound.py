"""The processing mailbox: inbound_mailboxes (an account designated, its source and target
folders, how it moves), inbound_items (one message taken, unique by mailbox + UIDVALIDITY + UID,
what parsing made of it, where it was routed, processed or failed and why, the raw message kept
for a retry, moved yet or not) and inbound_attachments (bytes in the blob directory, linked to
the applicant).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def UTCDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbound_mailboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(length=1000), nullable=False),
        sa.Column("processed_folder", sa.String(length=1000), nullable=False),
        sa.Column("failed_folder", sa.String(length=1000), nullable=False),
        sa.Column("move_mode", sa.String(length=16), nullable=False),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_accounts.id"],
            name=op.f("fk_inbound_mailboxes_account_id_mail_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_inbound_mailboxes_org_id_organisations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_mailboxes")),
        sa.UniqueConstraint("account_id", name=op.f("uq_inbound_mailboxes_account_id")),
    )
    with op.batch_alter_table("inbound_mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_mailboxes_org_id"), ["org_id"], unique=False)

    op.create_table(
        "inbound_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=1000), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("data_source", sa.String(length=16), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("auto_reply", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("defects", sa.JSON(), nullable=False),
        sa.Column("routed_kind", sa.String(length=16), nullable=True),
        sa.Column("routed_id", sa.Integer(), nullable=True),
        sa.Column("routed_via", sa.String(length=16), nullable=True),
        sa.Column("applicant_id", sa.Integer(), nullable=True),
        sa.Column("body_id", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("moved", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.Column("moved_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["applicant_id"],
            ["applicants.id"],
            name=op.f("fk_inbound_items_applicant_id_applicants"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["body_id"], ["bodies.id"], name=op.f("fk_inbound_items_body_id_bodies"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["inbound_mailboxes.id"],
            name=op.f("fk_inbound_items_mailbox_id_inbound_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_inbound_items_org_id_organisations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_items")),
        sa.UniqueConstraint(
            "mailbox_id", "uidvalidity", "uid", name=op.f("uq_inbound_items_mailbox_id_uidvalidity_uid")
        ),
    )
    with op.batch_alter_table("inbound_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_items_applicant_id"), ["applicant_id"], unique=False)
        batch_op.create_index("ix_inbound_items_mailbox_message_id", ["mailbox_id", "message_id"], unique=False)
        batch_op.create_index("ix_inbound_items_org_status", ["org_id", "status"], unique=False)

    op.create_table(
        "inbound_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("applicant_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["applicant_id"],
            ["applicants.id"],
            name=op.f("fk_inbound_attachments_applicant_id_applicants"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["inbound_items.id"],
            name=op.f("fk_inbound_attachments_item_id_inbound_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_inbound_attachments_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_attachments")),
    )
    with op.batch_alter_table("inbound_attachments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_attachments_applicant_id"), ["applicant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbound_attachments_item_id"), ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbound_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_attachments_item_id"))
        batch_op.drop_index(batch_op.f("ix_inbound_attachments_applicant_id"))

    op.drop_table("inbound_attachments")
    with op.batch_alter_table("inbound_items", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_items_org_status")
        batch_op.drop_index("ix_inbound_items_mailbox_message_id")
        batch_op.drop_index(batch_op.f("ix_inbound_items_applicant_id"))

    op.drop_table("inbound_items")
    with op.batch_alter_table("inbound_mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_mailboxes_org_id"))

    op.drop_table("inbound_mailboxes")
