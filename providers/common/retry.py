"""Retrying calls to the HTTP backends (Gmail, Graph): one policy, one batch loop.

The policy (:class:`RetryPolicy`, applied per call by :class:`Backoff`): attempt n waits
``base * 2**n`` capped at ``cap``, or the server's Retry-After when that is longer; a call
gives up after ``max_retries`` retries, or once its sleeps would pass ``budget`` seconds,
or -- with ``give_up_above_cap`` -- at once when the server asks for more than ``cap``, so
the scheduler backs the account off instead of a worker thread sleeping. Only a
:class:`~providers.errors.TransientError` is retried, and a call that is not safe to
repeat (a send) only when the server refused it by throttling, before doing anything.

Batches (:func:`run_batch`): each round sends the parts still pending and sorts the
answers (:class:`BatchRound`): answered, skipped (404: vanished meanwhile), failed for good
(raised at once; a :class:`~providers.errors.ProtocolError` names its part as
``remote_id``, so the engine quarantines that message alone), or to send again. Parts to
send again wait for the backoff; when the policy gives up:

* if the other parts were answered (or, for a batch of one, other calls of the pass were)
  and none of the failures was throttling, the parts that keep failing have a problem of
  their own -- Gmail answers 500 every time for a message it cannot read -- and that is a
  :class:`~providers.errors.ProtocolError` naming the first of them;
* otherwise the server is in trouble or throttling us: a
  :class:`~providers.errors.TransientError` with its Retry-After, and the account backs off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.errors import ProtocolError, ProviderError, TransientError


@dataclass(frozen=True)
class RetryPolicy:
    """How long one call may keep trying (see the module docstring)."""

    base: float = 1.0
    cap: float = 32.0
    budget: float = 60.0
    max_retries: int = 5
    give_up_above_cap: bool = False  # a Retry-After above ``cap`` gives up at once

    def delay(self, attempt: int, waited: float, retry_after: float | None) -> float | None:
        """Seconds to sleep before retry number ``attempt`` (from 0) after ``waited`` seconds
        of sleeping, or None to give up.

        >>> RetryPolicy(base=1.0, cap=32.0, budget=60.0).delay(2, 3.0, retry_after=None)
        4.0
        """
        if attempt >= self.max_retries or (self.give_up_above_cap and (retry_after or 0.0) > self.cap):
            return None
        delay = max(min(self.cap, self.base * 2**attempt), retry_after or 0.0)
        return delay if waited + delay <= self.budget else None


class Backoff:
    """The retries of one call (or one batch) under a :class:`RetryPolicy`."""

    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self._policy, self._sleep = policy, sleep
        self._attempt, self._waited = 0, 0.0

    def wait(self, retry_after: float | None) -> bool:
        """Sleep before the next attempt and return True, or return False: give up."""
        delay = self._policy.delay(self._attempt, self._waited, retry_after)
        if delay is None:
            return False
        self._sleep(delay)
        self._attempt, self._waited = self._attempt + 1, self._waited + delay
        return True

    def retry(self, err: ProviderError, *, idempotent: bool, throttled: bool) -> bool:
        """Whether to send a call that failed with ``err`` again (having slept first): only a
        :class:`TransientError`, and for a call that is not safe to repeat only a throttling
        answer, which the server gives before doing anything."""
        if not isinstance(err, TransientError) or not (idempotent or throttled):
            return False
        return self.wait(err.retry_after)


@dataclass
class BatchRound:
    """What one batch request came back with, sorted part by part by the backend."""

    answers: dict[str, Any] = field(default_factory=dict)
    again: list[str] = field(default_factory=list)  # keys to send again
    last: TransientError | None = None  # the last transient failure (None: resend at once)
    throttled: bool = False  # some part was throttled: the account backs off, no message is at fault
    retry_after: float | None = None  # the longest Retry-After of this round

    def answered(self, key: str, answer: Any) -> None:
        self.answers[key] = answer

    def resend(self, key: str) -> None:
        """Send ``key`` again at once (e.g. with a token refreshed after a 401)."""
        self.again.append(key)

    def failed(
        self, key: str, err: ProviderError, *, throttled: bool = False, cause: BaseException | None = None
    ) -> None:
        """Part ``key`` failed with ``err``: kept for another round if it is transient, else
        raised at once (a :class:`ProtocolError` naming the part: the engine quarantines it)."""
        if not isinstance(err, TransientError):
            if isinstance(err, ProtocolError):
                err.remote_id = key  # this part, not the batch
            raise err from cause
        self.again.append(key)
        self.last = err
        self.throttled = self.throttled or throttled
        self.retry_after = max(self.retry_after or 0.0, err.retry_after or 0.0) or None

    def all_failed(self, keys: Sequence[str], err: TransientError) -> None:
        """The whole batch request failed (transiently): every part again, no message at fault."""
        self.again.extend(keys)
        self.last, self.throttled, self.retry_after = err, True, err.retry_after


def run_batch(
    keys: Sequence[str],
    send: Callable[[list[str]], BatchRound],
    backoff: Backoff,
    *,
    answered_before: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """``{key: answer}`` of the parts ``keys``, each round ``send(pending keys)`` until every
    part is answered, skipped or failed (see the module docstring). ``answered_before`` says
    whether other calls of this provider were answered (a batch of one has no other parts to
    show that the server is up)."""
    results: dict[str, Any] = {}
    pending, throttled = list(keys), False
    while pending:
        round_ = send(pending)
        results.update(round_.answers)
        throttled = throttled or round_.throttled
        pending = round_.again
        if not pending or round_.last is None or backoff.wait(round_.retry_after):
            continue
        others_answered = len(pending) < len(keys) or (len(keys) == 1 and answered_before())
        if others_answered and not throttled:
            raise ProtocolError(f"{round_.last} (every retry)", remote_id=pending[0])
        raise TransientError(f"{round_.last} ({len(pending)} of {len(keys)} calls)", retry_after=round_.retry_after)
    return results
