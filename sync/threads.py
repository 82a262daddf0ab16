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
Two workers indexing two mailboxes of the organisation at once can both miss
each other's keys; the one whose key insert loses the race merges the two
threads (``_join_lost_races``), so they still end as one.
Threads are per organisation, so the same Message-ID in two recruiters'
mailboxes lands in one thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from postroom.mime import ParsedHeaders
from postroom.models import Email, Participant, Thread, ThreadKey, utcnow
from postroom.reply_ids import is_identifier_key
from sync.conversations import ThreadIndex, ThreadSummary, is_reply_subject, normalise_subject, subject_tiebreak
from sync.store import chunks, insert_ignore

TIEBREAK_WINDOW = timedelta(days=30)

# (message id, thread keys, parsed headers)
Item = tuple[str, tuple[str, ...], ParsedHeaders]


class ThreadAssigner:
    """Assigns threads for a batch of new messages inside the caller's transaction."""

    def __init__(self, session: Session, org_id: int, own_addresses: frozenset[str] = frozenset()) -> None:
        self.s = session
        self.org_id = org_id
        self.own = own_addresses

    def assign(self, items: Sequence[Item]) -> dict[str, int]:
        all_keys = list(dict.fromkeys(k for _, keys, _ in items for k in keys))
        persisted: dict[str, int] = {}
        for part in chunks(all_keys):
            rows = self.s.execute(
                select(ThreadKey.key, ThreadKey.thread_id).where(
                    ThreadKey.org_id == self.org_id, ThreadKey.key.in_(part)
                )
            )
            persisted.update(dict(rows.tuples().all()))
        index = ThreadIndex.from_pairs(persisted.items())
        first_headers: dict[int, ParsedHeaders] = {}
        for _mid, offered, h in items:
            # a reply identifier joins a thread only where Postroom recorded it for a message it sent
            keys = tuple(k for k in offered if k in persisted or not is_identifier_key(k))
            if not any(index.find(k) is not None for k in keys) and len(keys) == 1:
                tid = self._subject_match(h)
                if tid is not None:  # join that thread through a key only it holds
                    sentinel = f"thread:{tid}"
                    index.seed([(sentinel, tid)])
                    keys = (*keys, sentinel)
            tid = index.add(keys)
            first_headers.setdefault(tid, h)
        changes = index.drain()
        real = self._new_threads([(tid, first_headers.get(tid)) for tid in changes.new_threads])
        for loser, winner in changes.merges:
            if loser > 0:  # provisional losers were never written
                self._merge(loser, real.get(winner, winner))
        merged = {loser: real.get(w, w) for loser, w in changes.merges if loser > 0}
        inserts, updates = [], []
        for key, tid in changes.keys.items():
            tid = real.get(tid, tid)
            if key.startswith("thread:"):
                continue
            if key not in persisted:
                inserts.append({"org_id": self.org_id, "key": key, "thread_id": tid})
            elif merged.get(persisted[key], persisted[key]) != tid:
                updates.append({"k": key, "t": tid})
        insert_ignore(self.s, ThreadKey.__table__, inserts, ("org_id", "key"))
        joined = self._join_lost_races(inserts)
        if updates:
            tk = cast(Table, ThreadKey.__table__)
            self.s.execute(
                update(tk)
                .where(tk.c.org_id == self.org_id, tk.c.key == bindparam("k"))
                .values(thread_id=bindparam("t")),
                updates,
            )
        out: dict[str, int] = {}
        last_date: dict[int, datetime] = {}
        for mid, keys, h in items:
            found = index.find(keys[0])
            assert found is not None
            tid = real.get(found, found)
            tid = joined.get(tid, tid)
            out[mid] = tid
            if h.date and (tid not in last_date or last_date[tid] < h.date):
                last_date[tid] = h.date
        self._touch(last_date)
        return out

    def _join_lost_races(self, inserts: list[dict[str, object]]) -> dict[int, int]:
        """Keys another worker wrote between our read and our insert (two mailboxes of the
        organisation indexed at once) were not inserted: their thread and ours are one
        conversation, so they are merged into the older. Returns merged thread → its winner."""
        if not inserts:
            return {}
        wanted = {str(row["key"]): int(row["thread_id"]) for row in inserts}  # type: ignore[call-overload]
        stored: dict[str, int] = {}
        for part in chunks(list(wanted)):
            query = select(ThreadKey.key, ThreadKey.thread_id).where(ThreadKey.org_id == self.org_id)
            stored.update(dict(self.s.execute(query.where(ThreadKey.key.in_(part))).tuples().all()))
        winner_of: dict[int, int] = {}

        def find(tid: int) -> int:
            while tid in winner_of:
                tid = winner_of[tid]
            return tid

        for key, ours in wanted.items():
            a, b = find(ours), find(stored.get(key, ours))
            if a != b:
                loser, winner = max(a, b), min(a, b)
                self._merge(loser, winner)
                winner_of[loser] = winner
        return {tid: find(tid) for tid in winner_of}

    def _new_threads(self, provisional: list[tuple[int, ParsedHeaders | None]]) -> dict[int, int]:
        """Insert one thread per provisional id in a single statement; provisional -> real id."""
        if not provisional:
            return {}
        rows = []
        for _tid, h in provisional:
            subject = (h.subject if h else "") or ""
            rows.append(
                {
                    "org_id": self.org_id,
                    "subject": subject,
                    "normalised_subject": normalise_subject(subject),
                    "last_date": h.date if h else None,
                    "created_at": utcnow(),
                }
            )
        ids = self.s.scalars(insert(Thread).returning(Thread.id, sort_by_parameter_order=True), rows).all()
        return {tid: int(real) for (tid, _), real in zip(provisional, ids, strict=True)}

    def _merge(self, loser: int, winner: int) -> None:
        self.s.execute(update(ThreadKey).where(ThreadKey.thread_id == loser).values(thread_id=winner))
        self.s.execute(update(Email).where(Email.thread_id == loser).values(thread_id=winner))
        self.s.execute(delete(Thread).where(Thread.id == loser))

    def _subject_match(self, h: ParsedHeaders) -> int | None:
        """Guarded subject tie-breaker for a reference-less reply (see subject_tiebreak)."""
        if h.references or h.in_reply_to or h.date is None or not is_reply_subject(h.subject):
            return None
        ns = normalise_subject(h.subject)
        rows = self.s.execute(
            select(Thread.id, Thread.subject, Thread.last_date).where(
                Thread.org_id == self.org_id,
                Thread.normalised_subject == ns,
                Thread.last_date >= h.date - TIEBREAK_WINDOW,
                Thread.last_date <= h.date + TIEBREAK_WINDOW,
            )
        ).all()
        candidates = []
        for tid, subject, last in rows[:20]:
            addrs = self.s.scalars(
                select(Participant.address)
                .join(Email, Email.id == Participant.email_id)
                .where(Email.thread_id == tid)
                .distinct()
            )
            candidates.append(
                ThreadSummary(thread_id=tid, subject=subject, participants=frozenset(addrs), last_date=last)
            )
        chosen = subject_tiebreak(candidates, h, own_addresses=self.own, window=TIEBREAK_WINDOW)
        return chosen.thread_id if chosen else None

    def _touch(self, last_date: dict[int, datetime]) -> None:
        rows = [{"tid": t, "d": d} for t, d in last_date.items()]
        if rows:
            t = cast(Table, Thread.__table__)
            self.s.execute(
                update(t)
                .where(t.c.id == bindparam("tid"), t.c.last_date.is_(None) | (t.c.last_date < bindparam("d")))
                .values(last_date=bindparam("d")),
                rows,
            )


def reserve_thread(
    session: Session, org_id: int, keys: Sequence[str], *, parent: str | None, subject: str, date: datetime
) -> int:
    """The thread of a message Postroom is about to send, with its keys recorded before it goes
    out: its Message-ID, each recipient copy's Message-ID and its reply identifiers (reply
    token, short id), so that an answer naming any of them — and the copy indexed later from
    Sent — joins this thread. A reply joins its parent's thread (the parent's key is recorded
    if the parent is not indexed yet)."""
    tid = None
    if parent:
        tid = session.scalar(select(ThreadKey.thread_id).where(ThreadKey.org_id == org_id, ThreadKey.key == parent))
    if tid is None:
        thread = Thread(org_id=org_id, subject=subject, normalised_subject=normalise_subject(subject), last_date=date)
        session.add(thread)
        session.flush()
        tid = thread.id
        keys = (parent, *keys) if parent else keys
    rows = [{"org_id": org_id, "key": k, "thread_id": tid} for k in dict.fromkeys(keys)]
    insert_ignore(session, ThreadKey.__table__, rows, ("org_id", "key"))
    return tid
