"""sending: templates, reply identifiers, per-recipient copies and tracking

* ``templates``: a name, a subject and a Markdown body with placeholders, and whether the
  message carries its data as an application/json part.
* ``outbox``: the reply identifiers (``reply_token`` in the Reply-To, ``short_id`` in the
  subject), the thread, applicant and template of a message, whether it is tracked and how
  it went out (``mode``), how long Sent is searched for recipients' copies a server filed
  itself (``cleanup_until``), an interview invitation (``invite``).
* ``outbox_recipients``: every recipient of every message, with their own copy's Message-ID
  and state on a tracked send, and their reply.
* ``tracking_events``: hits on tracked copies, with raw signals and verdict.
* ``ix_outbox_open`` also holds tracked messages whose cleanup is still running, so the
  worker's one outbox query per pass finds them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_OPEN = "status IN ('queued', 'sending', 'uncertain')"
OPEN = "status IN ('queued', 'sending', 'uncertain') OR cleanup_until IS NOT NULL"


def UTCDateTime() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("json_part", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_templates_org_id_organisations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_templates_org_id_name")),
    )
    op.create_index(op.f("ix_templates_org_id"), "templates", ["org_id"], unique=False)

    op.drop_index("ix_outbox_open", table_name="outbox")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("short_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("reply_to", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("thread_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("applicant_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("template_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tracked", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("mode", sa.String(length=16), server_default="single", nullable=False))
        batch_op.add_column(sa.Column("cleanup_until", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("invite", sa.JSON(), nullable=True))
        batch_op.create_unique_constraint(op.f("uq_outbox_reply_token"), ["reply_token"])
        batch_op.create_index(op.f("ix_outbox_short_id"), ["short_id"], unique=False)
        batch_op.create_index(op.f("ix_outbox_applicant_id"), ["applicant_id"], unique=False)
        batch_op.create_foreign_key(
            op.f("fk_outbox_thread_id_threads"), "threads", ["thread_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            op.f("fk_outbox_applicant_id_applicants"), "applicants", ["applicant_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            op.f("fk_outbox_template_id_templates"), "templates", ["template_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index(
        "ix_outbox_open", "outbox", ["account_id"], sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN)
    )

    op.create_table(
        "outbox_recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=4), nullable=False),
        sa.Column("message_id", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("checked_at", UTCDateTime(), nullable=True),
        sa.Column("copy_removed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("replied_at", UTCDateTime(), nullable=True),
        sa.Column("reply_email_id", sa.Integer(), nullable=True),
        sa.Column("auto_replied_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_outbox_recipients_outbox_id_outbox"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["reply_email_id"],
            ["emails.id"],
            name=op.f("fk_outbox_recipients_reply_email_id_emails"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_recipients")),
        sa.UniqueConstraint("outbox_id", "address", name=op.f("uq_outbox_recipients_outbox_id_address")),
    )
    op.create_index(op.f("ix_outbox_recipients_outbox_id"), "outbox_recipients", ["outbox_id"], unique=False)
    op.create_index(op.f("ix_outbox_recipients_message_id"), "outbox_recipients", ["message_id"], unique=False)

    op.create_table(
        "tracking_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("seconds_after_send", sa.Float(), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("link", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["outbox_recipients.id"],
            name=op.f("fk_tracking_events_recipient_id_outbox_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_events")),
    )
    op.create_index(op.f("ix_tracking_events_recipient_id"), "tracking_events", ["recipient_id"], unique=False)


def downgrade() -> None:
    op.drop_table("tracking_events")
    op.drop_table("outbox_recipients")
    op.drop_index("ix_outbox_open", table_name="outbox")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_outbox_template_id_templates"), type_="foreignkey")
        batch_op.drop_constraint(op.f("fk_outbox_applicant_id_applicants"), type_="foreignkey")
        batch_op.drop_constraint(op.f("fk_outbox_thread_id_threads"), type_="foreignkey")
        batch_op.drop_index(op.f("ix_outbox_applicant_id"))
        batch_op.drop_index(op.f("ix_outbox_short_id"))
        batch_op.drop_constraint(op.f("uq_outbox_reply_token"), type_="unique")
        for column in (
            "invite",
            "cleanup_until",
            "mode",
            "tracked",
            "template_id",
            "applicant_id",
            "thread_id",
            "reply_to",
            "short_id",
            "reply_token",
        ):
            batch_op.drop_column(column)
    op.create_index(
        "ix_outbox_open", "outbox", ["account_id"], sqlite_where=sa.text(OLD_OPEN), postgresql_where=sa.text(OLD_OPEN)
    )
    op.drop_index(op.f("ix_templates_org_id"), table_name="templates")
    op.drop_table("templates")
