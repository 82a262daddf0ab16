"""Conversation threading: pure helpers; the sync engine persists the result.

Threads are built from the References/In-Reply-To graph (JWZ style: a
Message-ID can be referenced before its message arrives, and a message that
links two existing groups merges them). Subject matching is only a guarded
tie-breaker for messages with no references at all (:func:`subject_tiebreak`).

:class:`sync.threads.ThreadAssigner` uses :class:`ThreadIndex` for one batch: it seeds the
index with the persisted threads of the batch's keys (:meth:`ThreadIndex.from_pairs`),
:meth:`~ThreadIndex.add` s each message's keys (:func:`thread_keys`), then
:meth:`~ThreadIndex.drain` s the changes — new threads, merges, keys to (re)point — and
writes them in one go.

Thread ids the index invents are provisional and negative (-1, -2, ...), so
they can never collide with persisted (positive) ids; pass ``new_id`` to
allocate real ids instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from postroom.addresses import canonical_address
from postroom.mime import ParsedHeaders, synthetic_message_id
from postroom.reply_ids import identifier_keys

__all__ = [
    "ThreadChanges",
    "ThreadIndex",
    "ThreadSummary",
    "is_reply_subject",
    "normalise_subject",
    "subject_tiebreak",
    "thread_keys",
]

# Reply and forward prefixes seen in the wild, in many languages. Each may carry
# a counter ("Re[2]:", "Re(3):", "Re^2:") and a space or dot before the colon
# ("Réf. :"). Single letters (Italian "R:"/"I:") and a plain "Ref:" are left out:
# they start too many real subjects.
_PREFIX_WORDS = (
    "re|aw|sv|vs|antw|antwort|odp|ynt|vá|res|réf|rif|отв|ответ|回复|回覆|答复|ΑΠ|ΣΧΕΤ"  # replies
    "|fwd|fw|wg|tr|rv|doorst|pd|vl|enc|пересл|转发|轉寄|轉發|πρθ"  # forwards
)
_PREFIX_RE = re.compile(
    r"\s*(?:\[[^\]]*\]|(?P<word>" + _PREFIX_WORDS + r")\.?\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：])",
    re.IGNORECASE,
)


def _strip_prefixes(subject: str) -> tuple[str, bool]:
    """The subject without leading reply/forward/list prefixes, and whether a
    reply or forward prefix was among them."""
    pos, replied = 0, False
    while True:
        m = _PREFIX_RE.match(subject, pos)
        if m is None or m.end() == pos:
            break
        if m.group("word"):
            replied = True
        pos = m.end()
    return subject[pos:], replied


def normalise_subject(s: str | None) -> str:
    """``"Re: AW: [hr-team] Fwd:  Your  Application"`` -> ``"your application"``."""
    if not s:
        return ""
    rest, _ = _strip_prefixes(s)
    return " ".join(rest.split()).casefold()


def is_reply_subject(s: str | None) -> bool:
    """True when the subject starts with a reply or forward prefix (after any
    ``[list]`` tags): ``"Re: Hello"``, ``"[jobs] AW: Hallo"``, ``"回复：你好"``."""
    if not s:
        return False
    rest, replied = _strip_prefixes(s)
    return replied and bool(rest.strip())


def thread_keys(h: ParsedHeaders) -> tuple[str, ...]:
    """The keys that must end up in one thread: the message's own id (a
    synthetic one if it has none), then References, then In-Reply-To, then the reply
    identifiers it carries (:mod:`postroom.reply_ids`: a reply token in To, Cc, Delivered-To
    or Reply-To, a short id in the subject), which count only where Postroom gave them out."""
    own = h.message_id or synthetic_message_id(h)
    addresses = (a.email for a in (*h.to, *h.cc, *h.delivered_to, *h.reply_to))
    return tuple(dict.fromkeys((own, *h.references, *h.in_reply_to, *identifier_keys(addresses, h.subject))))


@dataclass(frozen=True, slots=True)
class ThreadChanges:
    """What :meth:`ThreadIndex.drain` reports since the previous drain.

    ``keys``: key -> current thread id for every key added or moved.
    ``merges``: ``(loser, winner)`` pairs, already resolved to the final winner;
    rows of the loser thread must be repointed to the winner.
    ``new_threads``: provisional ids created (and still alive) in this period.
    """

    keys: dict[str, int]
    merges: list[tuple[int, int]]
    new_threads: list[int]


class ThreadIndex:
    """Union-find over message-id keys, grouping them into threads.

    >>> index = ThreadIndex()
    >>> child = index.add(["<c@x>", "<root@x>", "<p@x>"])   # child arrives first
    >>> index.add(["<root@x>"]) == child
    True
    >>> other = index.add(["<q@x>"])
    >>> index.add(["<r@x>", "<q@x>", "<p@x>"]) == index.find("<q@x>") == index.find("<c@x>")
    True
    >>> index.drain().merges
    [(-2, -1)]
    """

    def __init__(self, new_id: Callable[[], int] | None = None) -> None:
        self._key_thread: dict[str, int] = {}
        self._parent: dict[int, int] = {}  # merged thread -> thread it joined
        self._next_provisional = -1
        self._new_id = new_id
        self._dirty_keys: set[str] = set()
        self._merged: list[int] = []
        self._created: list[int] = []

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, int]], new_id: Callable[[], int] | None = None) -> ThreadIndex:
        """An index seeded with persisted ``(key, thread_id)`` pairs."""
        index = cls(new_id)
        index.seed(pairs)
        return index

    def seed(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Load persisted assignments; they are not reported by :meth:`drain`."""
        for key, tid in pairs:
            self._key_thread[key] = tid

    def _allocate(self) -> int:
        if self._new_id is not None:
            tid = self._new_id()
        else:
            tid = self._next_provisional
            self._next_provisional -= 1
        self._created.append(tid)
        return tid

    def resolve(self, tid: int) -> int:
        """The thread a (possibly merged-away) thread id now belongs to."""
        root = tid
        while root in self._parent:
            root = self._parent[root]
        while tid != root:  # path compression
            self._parent[tid], tid = root, self._parent[tid]
        return root

    def find(self, key: str) -> int | None:
        """The thread of ``key``, or None if the key was never seen."""
        tid = self._key_thread.get(key)
        return None if tid is None else self.resolve(tid)

    @staticmethod
    def _rank(tid: int) -> tuple[bool, int]:
        # Persisted (positive) ids win over provisional ones; then the oldest.
        return (tid < 0, abs(tid))

    def add(self, keys: Iterable[str]) -> int:
        """Put all ``keys`` into one thread and return its id, merging every
        thread any of them already belonged to."""
        keys = [k for k in dict.fromkeys(keys) if k]
        if not keys:
            raise ValueError("a message needs at least one thread key")
        found = {self.resolve(t) for k in keys if (t := self._key_thread.get(k)) is not None}
        if not found:
            winner = self._allocate()
        else:
            winner = min(found, key=self._rank)
            for loser in sorted(found - {winner}, key=self._rank):
                self._parent[loser] = winner
                self._merged.append(loser)
        for k in keys:
            if self._key_thread.get(k) != winner:
                self._key_thread[k] = winner
                self._dirty_keys.add(k)
        return winner

    def drain(self) -> ThreadChanges:
        """Report and forget what changed since the last drain."""
        merges = [(loser, self.resolve(loser)) for loser in self._merged]
        alive = [t for t in self._created if self.resolve(t) == t]
        keys = {k: self.resolve(self._key_thread[k]) for k in sorted(self._dirty_keys)}
        self._merged, self._created, self._dirty_keys = [], [], set()
        return ThreadChanges(keys=keys, merges=merges, new_threads=alive)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """What :func:`subject_tiebreak` needs to know about a candidate thread.

    ``participants`` are canonical addresses (:func:`canonical_address`).
    """

    thread_id: int
    subject: str
    participants: frozenset[str]
    last_date: datetime | None


def subject_tiebreak(
    candidate_threads: Iterable[ThreadSummary],
    msg: ParsedHeaders,
    *,
    own_addresses: Iterable[str] = (),
    window: timedelta = timedelta(days=30),
) -> ThreadSummary | None:
    """The one thread a reference-less reply belongs to by subject, or None.

    A candidate qualifies only if the message has no References/In-Reply-To,
    its subject is a reply/forward subject, the normalised subjects are equal,
    a participant other than the mailbox owner (``own_addresses``) is shared,
    and the thread's latest message is within ``window`` of this one. Returns a
    thread only when exactly one candidate qualifies. Always pass the
    mailbox's own addresses: otherwise the owner links unrelated threads.
    """
    if msg.references or msg.in_reply_to or msg.date is None or not is_reply_subject(msg.subject):
        return None
    subject = normalise_subject(msg.subject)
    if not subject:
        return None
    own = {c for a in own_addresses if (c := canonical_address(a))}
    people = {c for a in msg.participants() if (c := canonical_address(a.email))} - own
    if not people:
        return None
    qualified = [
        t
        for t in candidate_threads
        if t.last_date is not None
        and abs(msg.date - t.last_date) <= window
        and normalise_subject(t.subject) == subject
        and people & t.participants
    ]
    return qualified[0] if len(qualified) == 1 else None
