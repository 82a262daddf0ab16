"""The conversations of a mailbox, as a user lists them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.errors import AccountError
from postroom.models import Email, MailAccount, MessageCopy, Thread


def account_threads(session: Session, account_id: int) -> list[dict[str, object]]:
    """Threads with messages in one account, newest activity first, each with its Message-IDs
    (those the account holds, oldest first)."""
    if session.get(MailAccount, account_id) is None:
        raise AccountError(f"No mail account with id {account_id}.", "account")
    rows = session.execute(
        select(Thread.id, Thread.subject, Thread.last_date, Email.message_id, Email.sent_at)
        .join(Email, Email.thread_id == Thread.id)
        .where(Email.id.in_(select(MessageCopy.email_id).where(MessageCopy.account_id == account_id)))
        .order_by(Thread.id, Email.sent_at, Email.id)
    ).all()
    threads: dict[int, dict[str, object]] = {}
    last: dict[int, datetime | None] = {}
    for tid, subject, last_date, mid, _sent in rows:
        entry = threads.setdefault(tid, {"id": tid, "subject": subject, "message_ids": []})
        entry["message_ids"].append(mid)  # type: ignore[attr-defined]
        last[tid] = last_date
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(threads.values(), key=lambda t: last[t["id"]] or epoch, reverse=True)  # type: ignore[index]
