"""Conversations, as a user reads them: the threads of a mailbox, and one thread's messages.

A thread is the organisation's (:mod:`sync.threads` joins messages by their References, reply
identifiers and provider hints), so :func:`get_thread` shows every message of it whichever
mailboxes hold them, each once, with its snippet (kept with the stored body, see
:mod:`postroom.message_parts`), its direction (out when sent from one of the organisation's
connected mailboxes) and the applicants whose history holds it. Four queries, whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postroom.addresses import canonical_address
from postroom.errors import AccountError, UserError
from postroom.models import Applicant, Body, Email, HistoryEntry, MailAccount, MessageCopy, Thread
from sync.history import own_addresses


class ThreadError(UserError):
    """A thread that does not exist, or is another organisation's (field ``thread``)."""


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


@dataclass(frozen=True)
class ThreadMessage:
    email_id: int
    message_id: str
    date: datetime | None
    subject: str
    from_name: str
    from_address: str | None
    to: list[str]
    cc: list[str]
    direction: str  # in | out
    snippet: str
    applicant_ids: list[int]

    def as_json(self) -> dict[str, Any]:
        return {
            "email_id": self.email_id,
            "message_id": self.message_id,
            "date": self.date.isoformat() if self.date else None,
            "subject": self.subject,
            "from": {"name": self.from_name, "address": self.from_address},
            "to": self.to,
            "cc": self.cc,
            "direction": self.direction,
            "snippet": self.snippet,
            "applicant_ids": self.applicant_ids,
        }


@dataclass(frozen=True)
class ThreadView:
    id: int
    subject: str
    messages: list[ThreadMessage]  # oldest first
    applicants: dict[int, str]  # the names of the applicants its messages are with, by id

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "messages": [m.as_json() for m in self.messages],
            "applicants": [{"id": aid, "name": name} for aid, name in self.applicants.items()],
        }


def get_thread(session: Session, org_id: int, thread_id: int) -> ThreadView:
    """One thread of the organisation with its messages, oldest first; another organisation's
    thread raises the same :class:`ThreadError` as a missing one."""
    thread = session.get(Thread, thread_id)
    if thread is None or thread.org_id != org_id:
        raise ThreadError(f"No thread with id {thread_id}.", "thread")
    rows = session.execute(
        select(
            Email.id,
            Email.message_id,
            Email.sent_at,
            Email.subject,
            Email.from_name,
            Email.from_addr,
            Email.to_addrs,
            Email.cc_addrs,
            Body.snippet,
        )
        .outerjoin(Body, Body.id == Email.body_id)
        .where(Email.thread_id == thread_id, Email.org_id == org_id)
        .order_by(func.coalesce(Email.sent_at, Email.created_at), Email.id)
    ).all()
    applicants: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for eid, aid, name in session.execute(
        select(HistoryEntry.email_id, HistoryEntry.applicant_id, Applicant.name)
        .join(Applicant, Applicant.id == HistoryEntry.applicant_id)
        .where(
            HistoryEntry.email_id.in_(select(Email.id).where(Email.thread_id == thread_id)),
            Applicant.org_id == org_id,
        )
        .order_by(HistoryEntry.applicant_id)
    ):
        applicants.setdefault(eid, []).append(aid)
        names[aid] = name
    own = own_addresses(session, org_id)
    messages = [
        ThreadMessage(
            email_id=eid,
            message_id=mid,
            date=sent_at,
            subject=subject or "",
            from_name=from_name or "",
            from_address=from_addr,
            to=list(to or []),
            cc=list(cc or []),
            direction="out" if from_addr and canonical_address(from_addr) in own else "in",
            snippet=snippet or "",
            applicant_ids=applicants.get(eid, []),
        )
        for eid, mid, sent_at, subject, from_name, from_addr, to, cc, snippet in rows
    ]
    return ThreadView(thread.id, thread.subject or (messages[0].subject if messages else ""), messages, names)
