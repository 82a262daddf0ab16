"""Prometheus metrics, with the standard ``prometheus_client``.

Two kinds:

* **Per worker process** (:class:`SyncMetrics`): counters and a histogram fed by
  every finished pass (``Scheduler(sink=...)``) — syncs by outcome, messages
  synced, errors by class, pass duration. Each worker process (embedded or
  Celery) serves its own on ``[metrics] port``; Prometheus scrapes each one.
* **From the database** (:class:`DatabaseCollector`), the same whichever process
  serves them (a worker or the web app's ``/metrics``): accounts by state, sync
  lag quantiles (seconds since each account's last successful sync), queue depth
  (accounts due now that no worker holds yet) and accounts queued for Celery.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import MetricsConfig
from postroom.models import MailAccount
from sync.engine import AccountResult

LAG_QUANTILES = (0.5, 0.9, 0.99, 1.0)


class SyncMetrics:
    """Counters for one process; pass it as the scheduler's result sink."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.syncs = Counter("postroom_syncs", "Account sync passes by outcome", ["outcome"], registry=self.registry)
        self.messages = Counter("postroom_messages_synced", "Messages newly indexed", registry=self.registry)
        self.errors = Counter(
            "postroom_sync_errors", "Failed passes by error class", ["error_class"], registry=self.registry
        )
        self.duration = Histogram(
            "postroom_sync_duration_seconds",
            "Duration of one account pass",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )

    def observe(self, result: AccountResult) -> None:
        if result.skipped:
            self.syncs.labels("skipped").inc()
            return
        self.syncs.labels("ok" if result.ok else "failed").inc()
        self.duration.observe(result.seconds)
        self.messages.inc(result.new)
        if result.error_class:
            self.errors.labels(result.error_class).inc()
        for folder in result.folders:
            if folder.error:
                self.errors.labels("FolderError").inc()


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[rank]


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        with self.sessions() as s:
            by_status: dict[str, int] = dict(
                s.execute(select(MailAccount.status, func.count()).group_by(MailAccount.status)).tuples().all()
            )
            rows = s.execute(
                select(MailAccount.last_success_at, MailAccount.created_at).where(MailAccount.status != "disabled")
            ).all()
            due = s.scalar(
                select(func.count()).where(
                    MailAccount.status.in_(("active", "backing-off")),
                    or_(MailAccount.next_sync_at.is_(None), MailAccount.next_sync_at <= now),
                    or_(MailAccount.lease_owner.is_(None), MailAccount.lease_expires_at < now),
                )
            )
            dispatched = s.scalar(select(func.count()).where(MailAccount.dispatched_at.is_not(None)))
        accounts = GaugeMetricFamily("postroom_accounts", "Mail accounts by state", labels=["status"])
        for status in ("active", "syncing", "backing-off", "reconnect-needed", "disabled"):
            accounts.add_metric([status], by_status.get(status, 0))
        yield accounts
        lags = sorted((now - (success or created)).total_seconds() for success, created in rows)
        lag = GaugeMetricFamily(
            "postroom_sync_lag_seconds",
            "Seconds since each account's last successful sync, as quantiles over accounts",
            labels=["quantile"],
        )
        for q in LAG_QUANTILES:
            lag.add_metric([str(q)], quantile(lags, q))
        yield lag
        yield GaugeMetricFamily("postroom_queue_depth", "Accounts due now that no worker holds yet", value=due or 0)
        yield GaugeMetricFamily(
            "postroom_accounts_dispatched", "Accounts queued for a Celery worker", value=dispatched or 0
        )


def serve(cfg: MetricsConfig, sessions: sessionmaker[Session], metrics: SyncMetrics) -> int | None:
    """Expose this process's metrics on ``cfg.port`` (if set); returns the port."""
    if not cfg.port:
        return None
    metrics.registry.register(DatabaseCollector(sessions))
    start_http_server(cfg.port, addr=cfg.host, registry=metrics.registry)
    return cfg.port
