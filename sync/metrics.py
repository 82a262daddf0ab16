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

With ``[metrics] token`` set, both the workers' port and the web app's ``/metrics``
answer 401 unless the scrape sends ``Authorization: Bearer <token>`` (:func:`bearer_ok`).
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import ConfigError, MetricsConfig
from postroom.models import MailAccount, utcnow
from postroom.states import AccountStatus
from sync.engine import AccountResult
from sync.scheduler import due

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
        if result.skipped or result.lease_lost:
            self.syncs.labels("skipped" if result.skipped else "lease-lost").inc()
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
        now = utcnow()
        with self.sessions() as s:
            by_status: dict[str, int] = dict(
                s.execute(select(MailAccount.status, func.count()).group_by(MailAccount.status)).tuples().all()
            )
            rows = s.execute(
                select(MailAccount.last_success_at, MailAccount.created_at).where(
                    MailAccount.status != AccountStatus.DISABLED
                )
            ).all()
            waiting = s.scalar(select(func.count()).where(due(now)))
            dispatched = s.scalar(select(func.count()).where(MailAccount.dispatched_at.is_not(None)))
        accounts = GaugeMetricFamily("postroom_accounts", "Mail accounts by state", labels=["status"])
        for status in AccountStatus:
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
        yield GaugeMetricFamily("postroom_queue_depth", "Accounts due now that no worker holds yet", value=waiting or 0)
        yield GaugeMetricFamily(
            "postroom_accounts_dispatched", "Accounts queued for a Celery worker", value=dispatched or 0
        )


def bearer_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    )


UNAUTHORIZED_BODY = b"Metrics need the header Authorization: Bearer <metrics.token>.\n"
UNAUTHORIZED_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("WWW-Authenticate", 'Bearer realm="postroom metrics"'),
]


def _token_required(app: WSGIApplication, token: str) -> WSGIApplication:
    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if bearer_ok(environ.get("HTTP_AUTHORIZATION"), token):
            return app(environ, start_response)
        start_response("401 Unauthorized", UNAUTHORIZED_HEADERS)
        return [UNAUTHORIZED_BODY]

    return guarded


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def serve(cfg: MetricsConfig, sessions: sessionmaker[Session], metrics: SyncMetrics) -> int | None:
    """Expose this process's metrics on ``cfg.port`` (if set) in a thread; returns the port.

    With ``metrics.token`` set, a scrape without ``Authorization: Bearer <token>`` gets 401."""
    if not cfg.port:
        return None
    metrics.registry.register(DatabaseCollector(sessions))
    app = make_wsgi_app(metrics.registry)
    if cfg.token:
        app = _token_required(app, cfg.token)
    try:
        family = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (_Server,), {"address_family": family})
        httpd: WSGIServer = make_server(cfg.host, cfg.port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(
            f"Cannot serve metrics on {cfg.host}:{cfg.port} (metrics.host, metrics.port): {exc.strerror or exc}."
        ) from None
    threading.Thread(target=httpd.serve_forever, name="postroom-metrics", daemon=True).start()
    return cfg.port
