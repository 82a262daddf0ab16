"""hardening: quarantine entries, emails keyed by Message-ID + fingerprint, outbox claims

* ``quarantine``: messages that could not be indexed or whose body could not be stored,
  with the reason, listed by ``postroom quarantine list`` and retried on request.
* ``emails.fingerprint`` (From, Date, Subject) joins the Message-ID in the key of an
  email, so two different messages that reuse one Message-ID stay two emails;
  ``emails.id_reused`` marks them. Existing emails get the fingerprint of what they
  stored (sender, date, subject).
* ``outbox``: per-recipient refusals, the claiming process and its deadline, attempts,
  and when Sent was last searched for an uncertain message.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 21:00:00
"""

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fingerprint(sender: str | None, date: datetime | None, subject: str | None) -> str:
    """The formula of postroom.mime.fingerprint as of this revision (frozen here on purpose)."""
    if date is not None and date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    when = int(date.timestamp()) if date else ""
    text = f"{(sender or '').lower()}\x00{when}\x00{' '.join((subject or '').split()).casefold()}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=32), server_default="", nullable=False))
        batch_op.add_column(sa.Column("id_reused", sa.Boolean(), server_default=sa.false(), nullable=False))
    conn = op.get_bind()
    emails = sa.table(
        "emails",
        sa.column("id", sa.Integer),
        sa.column("from_addr", sa.String),
        sa.column("sent_at", sa.DateTime(timezone=True)),
        sa.column("subject", sa.Text),
        sa.column("fingerprint", sa.String),
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(emails.c.id, emails.c.from_addr, emails.c.sent_at, emails.c.subject)
            .where(emails.c.id > last)
            .order_by(emails.c.id)
            .limit(5000)
        ).all()
        if not rows:
            break
        sent_at = [r.sent_at if isinstance(r.sent_at, datetime) else _parse(r.sent_at) for r in rows]
        conn.execute(
            sa.update(emails).where(emails.c.id == sa.bindparam("eid")).values(fingerprint=sa.bindparam("fp")),
            [
                {"eid": r.id, "fp": _fingerprint(r.from_addr, when, r.subject)}
                for r, when in zip(rows, sent_at, strict=True)
            ],
        )
        last = rows[-1].id
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_constraint("uq_emails_org_id_message_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_emails_org_id_message_id_fingerprint", ["org_id", "message_id", "fingerprint"]
        )

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("copy_id", sa.Integer(), nullable=False),
        sa.Column("remote_id", sa.String(length=200), nullable=False),
        sa.Column("message_id", sa.String(length=1000), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("retry_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["mail_accounts.id"], name="fk_quarantine_account_id_mail_accounts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["folder_id"], ["folders.id"], name="fk_quarantine_folder_id_folders", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["copy_id"], ["message_copies.id"], name="fk_quarantine_copy_id_message_copies", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("copy_id", name="uq_quarantine_copy_id"),
    )
    op.create_index("ix_quarantine_account_id", "quarantine", ["account_id"], unique=False)

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refused", sa.JSON(), server_default=sa.text("'{}'"), nullable=False))
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))


def _parse(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("owner")
        batch_op.drop_column("refused")
    op.drop_index("ix_quarantine_account_id", table_name="quarantine")
    op.drop_table("quarantine")
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_constraint("uq_emails_org_id_message_id_fingerprint", type_="unique")
        batch_op.create_unique_constraint("uq_emails_org_id_message_id", ["org_id", "message_id"])
        batch_op.drop_column("id_reused")
        batch_op.drop_column("fingerprint")
