"""Fetching a batch so that one message the server refuses or garbles cannot fail the rest.

A server answers a batch (an IMAP ``UID FETCH`` range, a Gmail or Graph batch) as a whole:
one broken message can make the whole answer a :class:`~providers.errors.ProtocolError`.
:func:`isolate` then narrows it down: it splits the batch in halves and fetches them again,
down to the message(s) that fail on their own (each tried twice), and reports those apart
so the engine can quarantine them while the rest is indexed. A backend that knows which
message failed says so (``ProtocolError.remote_id``) and the narrowing goes straight to it.

A server that refuses *everything* is not a message problem: when no message of the batch
could be fetched, the original error is raised and the folder fails this pass (to be tried
again next pass) — nothing is quarantined. The number of requests spent narrowing is
bounded; when it runs out, what was learnt so far is kept and ``complete`` is False, so the
folder's cursor does not move and the next pass carries on from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from postroom.logs import error_summary
from providers.errors import ProtocolError

T = TypeVar("T")
BUDGET = 64  # requests one batch may spend on narrowing down its failures


@dataclass
class Isolated(Generic[T]):
    """What a batch gave: the items fetched, the ids that failed on their own (with the
    server's reason) and whether every id was settled one way or the other."""

    items: list[T] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    complete: bool = True


def isolate(fetch: Callable[[Sequence[str]], list[T]], ids: Sequence[str], budget: int = BUDGET) -> Isolated[T]:
    """``fetch(ids)``; on a :class:`ProtocolError`, narrow it down as the module says.

    A plain loop over a work list (no recursive closures: those would form a reference cycle
    that keeps every fetched body alive until the garbage collector happens to run)."""
    out: Isolated[T] = Isolated()
    spent, answered = 0, False
    first: ProtocolError | None = None
    todo: list[tuple[Sequence[str], ProtocolError | None]] = [(ids, None)]  # None: still to fetch
    while todo:
        part, error = todo.pop()
        if error is None:  # fetch it
            if spent >= budget:
                out.complete = False
                continue
            spent += 1
            try:
                got = fetch(part)
            except ProtocolError as exc:
                error, first = exc, first or exc
            else:
                answered = True
                out.items.extend(got)
                continue
        culprit = error.remote_id if error.remote_id in part else None
        if culprit is not None:  # the backend named it, after its own retries: a message problem
            out.failed[culprit] = error_summary(error)
            answered = True
        elif len(part) == 1:  # fails "on every fetch": try it once more on its own
            culprit = part[0]
            if spent >= budget:
                out.complete = False
                continue
            spent += 1
            try:
                got = fetch([culprit])
            except ProtocolError as again:
                out.failed[culprit] = error_summary(again)
            else:
                answered = True
                out.items.extend(got)
        if culprit is not None:
            rest = [i for i in part if i != culprit]
            if rest:
                todo.append((rest, None))
            continue
        half = len(part) // 2
        todo += [(part[half:], None), (part[:half], None)]  # the first half first
    if first is not None and not answered and len(ids) > 1:
        raise first  # the server answered nothing at all: its fault, not the messages'
    return out
