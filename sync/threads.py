"""Persisted conversation threading: a union-find over Message-IDs in the database.

``thread_keys`` maps every key (a Message-ID seen or merely referenced, or a
provider thread hint ``hint:<account>:<id>``) of an organisation to its thread.
A new message looks up all its keys:

* none known → a new thread (unless the guarded subject tie-breaker finds
  exactly one recent thread with the same reply subject and a shared
  participant);
* one thread → it joins that thread;
* several threads → the message links them: they are merged into the oldest.

Then every key of the message points at the chosen thread, so a parent that
arrives after its child finds the child's thread through its own Message-ID.
Threads are per organisation, so the same Message-ID in two recruiters'
mailboxes lands in one thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from postroom.mime import ParsedHeaders
from postroom.models import Email, Participant, Thread, ThreadKey
from sync.conversations import ThreadCandidate, is_reply_subject, normalise_subject, subject_tiebreak
from sync.store import chunks, insert_ignore

TIEBREAK_WINDOW = timedelta(days=30)

# (message id, thread keys, parsed headers, [(canonical address, role), ...])
Item = tuple[str, tuple[str, ...], ParsedHeaders, list[tuple[str, str]]]


class ThreadAssigner:
    """Assigns threads for a batch of new messages inside the caller's transaction."""

    def __init__(self, session: Session, org_id: int) -> None:
        self.s = session
        self.org_id = org_id

    def assign(self, items: Sequence[Item]) -> dict[str, int]:
        all_keys = list(dict.fromkeys(k for _, keys, _, _ in items for k in keys))
        key_thread: dict[str, int] = {}
        for part in chunks(all_keys):
            rows = self.s.execute(select(ThreadKey.key, ThreadKey.thread_id).where(
                ThreadKey.org_id == self.org_id, ThreadKey.key.in_(part)))
            key_thread.update(dict(rows.tuples().all()))
        known_keys = set(key_thread)
        out: dict[str, int] = {}
        last_date: dict[int, datetime] = {}
        for mid, keys, h, parts in items:
            tids = {key_thread[k] for k in keys if k in key_thread}
            if not tids and len(keys) == 1 and is_reply_subject(h.subject or ""):
                tid = self._subject_match(h, parts)
                if tid is not None:
                    tids = {tid}
            if not tids:
                tid = self._new_thread(h)
            else:
                tid = min(tids)
                for loser in tids - {tid}:
                    self._merge(loser, tid, key_thread, out, last_date)
            for k in keys:
                key_thread[k] = tid
            out[mid] = tid
            if h.date and (tid not in last_date or last_date[tid] < h.date):
                last_date[tid] = h.date
        new_rows = [{"org_id": self.org_id, "key": k, "thread_id": t} for k, t in key_thread.items()
                    if k not in known_keys]
        insert_ignore(self.s, ThreadKey.__table__, new_rows, ("org_id", "key"))
        self._touch(last_date)
        return out

    def _new_thread(self, h: ParsedHeaders) -> int:
        subject = h.subject or ""
        tid = self.s.execute(insert(Thread).values(
            org_id=self.org_id, subject=subject, normalised_subject=normalise_subject(subject), last_date=h.date,
        ).returning(Thread.id)).scalar_one()
        return int(tid)

    def _merge(self, loser: int, winner: int, key_thread: dict[str, int], out: dict[str, int],
               last_date: dict[int, datetime]) -> None:
        self.s.execute(update(ThreadKey).where(ThreadKey.thread_id == loser).values(thread_id=winner))
        self.s.execute(update(Email).where(Email.thread_id == loser).values(thread_id=winner))
        self.s.execute(delete(Thread).where(Thread.id == loser))
        for k, t in key_thread.items():
            if t == loser:
                key_thread[k] = winner
        for m, t in out.items():
            if t == loser:
                out[m] = winner
        if loser in last_date:
            d = last_date.pop(loser)
            if winner not in last_date or last_date[winner] < d:
                last_date[winner] = d

    def _subject_match(self, h: ParsedHeaders, parts: list[tuple[str, str]]) -> int | None:
        ns = normalise_subject(h.subject or "")
        if not ns or h.date is None:
            return None
        rows = self.s.execute(select(Thread.id, Thread.last_date).where(
            Thread.org_id == self.org_id, Thread.normalised_subject == ns,
            Thread.last_date >= h.date - TIEBREAK_WINDOW)).all()
        if not rows:
            return None
        candidates = []
        for tid, last in rows:
            addrs = self.s.scalars(select(Participant.address).join(Email, Email.id == Participant.email_id)
                                   .where(Email.thread_id == tid).distinct())
            candidates.append(ThreadCandidate(thread_id=tid, normalised_subject=ns, last_date=last,
                                              participants=frozenset(addrs)))
        chosen = subject_tiebreak(candidates, h)
        return chosen.thread_id if chosen else None

    def _touch(self, last_date: dict[int, datetime]) -> None:
        rows = [{"tid": t, "d": d} for t, d in last_date.items()]
        if rows:
            t = Thread.__table__
            self.s.execute(
                update(t)
                .where(t.c.id == bindparam("tid"), t.c.last_date.is_(None) | (t.c.last_date < bindparam("d")))
                .values(last_date=bindparam("d")),
                rows,
            )


def account_threads(session: Session, account_id: int) -> list[dict[str, object]]:
    """Threads with messages in one account, newest activity first, each with its Message-IDs
    (those the account holds, oldest first)."""
    from postroom.models import MailAccount, MessageCopy

    if session.get(MailAccount, account_id) is None:
        raise ValueError(f"No mail account with id {account_id}.")
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
