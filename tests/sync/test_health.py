"""The health rules of the scheduler, as a table: ``plan_next`` decides state and next due time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from postroom.config import SyncConfig
from providers.errors import AuthError, TransientError
from sync.engine import AccountResult
from sync.scheduler import plan_next

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CFG = SyncConfig(interval=120, jitter=0.1, backoff_base=30, backoff_max=600)
MIDDLE, LOW, HIGH = (lambda: 0.5), (lambda: 0.0), (lambda: 0.999999)


def ok() -> AccountResult:
    return AccountResult(1, "r@x.test")


def transient(retry_after: float | None = None) -> AccountResult:
    result = AccountResult(1, "r@x.test")
    result.fail(TransientError("connection lost", retry_after=retry_after), "Server unavailable")
    return result


def refused() -> AccountResult:
    result = AccountResult(1, "r@x.test")
    result.fail(AuthError("bad token"), "Login failed", reconnect=True)
    return result


@pytest.mark.parametrize(
    ("result", "failures_before", "status", "seconds", "failures_after"),
    [
        # a good pass: back to the interval, the failure count forgotten
        (ok(), 0, "active", 120, 0),
        (ok(), 7, "active", 120, 0),
        # refused credentials: stop, ask the user; no next time at all
        (refused(), 0, "reconnect-needed", None, 1),
        (refused(), 3, "reconnect-needed", None, 4),
        # transient failures 1..N: base * 2^(n-1), capped at backoff_max
        (transient(), 0, "backing-off", 30, 1),
        (transient(), 1, "backing-off", 60, 2),
        (transient(), 2, "backing-off", 120, 3),
        (transient(), 3, "backing-off", 240, 4),
        (transient(), 4, "backing-off", 480, 5),
        (transient(), 5, "backing-off", 600, 6),  # 960 capped
        (transient(), 60, "backing-off", 600, 61),  # no overflow after many failures
        # the server's Retry-After wins when it is longer than the backoff ...
        (transient(retry_after=300), 0, "backing-off", 300, 1),
        # ... never when shorter, and it is capped too
        (transient(retry_after=5), 2, "backing-off", 120, 3),
        (transient(retry_after=86400), 0, "backing-off", 600, 1),
    ],
)
def test_plan_next_table(
    result: AccountResult, failures_before: int, status: str, seconds: float | None, failures_after: int
) -> None:
    out = plan_next(result, failures_before, CFG, NOW, rand=MIDDLE)  # jitter factor exactly 1
    assert out.status == status
    assert out.failure_count == failures_after
    if seconds is None:
        assert out.next_sync_at is None
    else:
        assert out.next_sync_at == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(("result", "failures", "nominal"), [(ok(), 0, 120), (transient(), 2, 120)])
def test_jitter_stays_within_its_bounds(result: AccountResult, failures: int, nominal: float) -> None:
    low = plan_next(result, failures, CFG, NOW, rand=LOW).next_sync_at
    high = plan_next(result, failures, CFG, NOW, rand=HIGH).next_sync_at
    assert low == NOW + timedelta(seconds=nominal * 0.9)
    assert high is not None and NOW + timedelta(seconds=nominal * 1.0999) < high <= NOW + timedelta(
        seconds=nominal * 1.1
    )
    rng = random.Random(7)
    spread = {plan_next(result, failures, CFG, NOW, rand=rng.random).next_sync_at for _ in range(200)}
    assert len(spread) > 150  # really spread, not in lockstep
    assert all(low <= d <= high for d in spread if d is not None)  # type: ignore[operator]


def test_retry_after_is_not_shortened_by_jitter() -> None:
    out = plan_next(transient(retry_after=300), 0, CFG, NOW, rand=LOW)
    assert out.next_sync_at == NOW + timedelta(seconds=300)


def test_without_jitter_a_pass_is_due_exactly_one_interval_later() -> None:
    cfg = SyncConfig(interval=60, jitter=0, backoff_base=10, backoff_max=40)
    for rand in (LOW, MIDDLE, HIGH):
        assert plan_next(ok(), 0, cfg, NOW, rand=rand).next_sync_at == NOW + timedelta(seconds=60)
        assert plan_next(transient(), 3, cfg, NOW, rand=rand).next_sync_at == NOW + timedelta(seconds=40)
