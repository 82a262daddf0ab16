"""Faults the stand-ins inject for tests: the next N calls of one method (or ``"*"``) go wrong.

Two kinds, as real services fail:

* before the call is carried out: a rate limit or a 5xx, nothing happened (safe to retry);
* after it (``after=True``): the call happened — a message was sent, an item created — and
  only its answer goes wrong: an error status, no answer at all (``drop``: the connection is
  closed, :data:`DROPPED`), or the real answer ``stall`` seconds late (a client's read timeout).

Each stand-in keeps a :class:`Faults` and answers through :func:`with_fault`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DROPPED = 0  # the status of an answer that is never written: the server closes the connection

Answer = tuple[int, Any, bytes]


@dataclass
class Fault:
    target: str  # the method, route or operation it applies to, or "*"
    times: int
    status: int = 500
    reason: str | None = None  # the service's error reason, where it has one
    retry_after: float | None = None
    after: bool = False  # the call is carried out first; its answer is what goes wrong
    drop: bool = False  # no answer: the connection is closed
    stall: float = 0.0  # seconds before answering


class Faults:
    """The faults still to inject, taken one call at a time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._items.append(fault)

    def take(self, target: str) -> Fault | None:
        with self._lock:
            for fault in self._items:
                if fault.times > 0 and fault.target in ("*", target):
                    fault.times -= 1
                    return fault
        return None


def with_fault(fault: Fault | None, carry_out: Callable[[], Answer], error: Callable[[Fault], Answer]) -> Answer:
    """The answer to one call with ``fault`` (or None) injected; ``error`` words the fault's status."""
    if fault is not None and not fault.after:
        return error(fault)
    result = carry_out()
    if fault is None:
        return result
    if fault.stall:
        time.sleep(fault.stall)
    if fault.drop:
        return DROPPED, {}, b""
    return result if fault.stall else error(fault)
