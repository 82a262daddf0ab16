# ruff: noqa: E501
"""Webhook delivery benchmark (issue 13, item 6): deliveries per second through the worker's
real delivery path, :func:`sync.webhooks.deliver_due`, to local HTTP receivers that answer at
once, after 200 ms, or not within the timeout; SQLite and PostgreSQL side by side
(docs/benchmarks.md, "Webhook deliveries").

    .venv/bin/python bench/webhooks_bench.py                      # ~4 minutes
    .venv/bin/python bench/webhooks_bench.py --runs 3 --json bench/results/webhooks.json
    .venv/bin/python bench/webhooks_bench.py --database-url sqlite --database-url postgresql://postgres@127.0.0.1:5432/test_bench_webhooks

Receivers (``ThreadingHTTPServer`` on 127.0.0.1, ``[webhooks] allow_private = true``):
``fast`` answers 200 at once, ``slow`` after 200 ms, ``silent`` after 3 s, beyond the
benchmark's ``[webhooks] timeout`` of 1 s (a receiver that hangs). Each counts what it got and when.

Scenarios, each on a fresh set of subscriptions and deliveries, events queued by
:func:`services.webhooks.emit` in one transaction (as a sync pass or the inbound run queues them):

  fast     --fast deliveries to the fast receiver alone
  slow     --slow deliveries to the slow receiver alone
  mixed    the same fast and slow deliveries plus --silent to the silent receiver, queued
           interleaved (one of each in turn), three subscriptions of one organisation

Two delivery passes are compared, driven as the embedded worker drives them
(``sync.worker.Worker._webhooks``: a pass, then at once another or a 1 s pause):

  serial   ``deliver_due(fair=False)``: the former pass, every due delivery single file in one
           thread, a new pass at once only after a full batch of 100 (the worker's former rule)
  fair     ``deliver_due()``: subscriptions side by side (8 threads, one request in flight per
           subscription, a turn ends at its first failure or after 5 s), a new pass at once
           while the last one sent anything

Measured (wall clock, ``time.perf_counter``): deliveries per second of each receiver (its
deliveries / the time from the queue's commit to its last delivery), and the fast receiver's
latency from the commit to each arrival (p50, max). A scenario ends when the fast and slow
deliveries are all delivered (the silent ones are retried on their schedule, 5 s later, and do
not count). Each of --runs rounds runs every backend and pass (their order alternating), and the
tables show medians. The PostgreSQL database is WIPED (schema public dropped and migrated again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, delete, func, make_url, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from postroom.config import Config, WebhooksConfig, load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.models import WebhookDelivery, WebhookSubscription  # noqa: E402
from postroom.states import DeliveryStatus  # noqa: E402
from services.orgs import add_org  # noqa: E402
from services.webhooks import add_subscription, emit  # noqa: E402
from sync.webhooks import BATCH, deliver_due  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
TIMEOUT = 1.0
DELAYS = {"fast": 0.0, "slow": 0.2, "silent": 3.0}
EVENTS = {"fast": "message.opened", "slow": "message.clicked", "silent": "message.bounced"}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test_bench_webhooks"
MAX_SCENARIO = 300.0  # seconds; a scenario that takes longer is reported unfinished


class Receiver:
    """An HTTP receiver answering 200 after ``delay`` seconds, counting arrivals."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrivals: list[float] = []  # when each answer was sent
        self.requests = 0  # requests that reached it (a silent receiver's never answered in time)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.arrivals.append(time.perf_counter())
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.arrivals, self.requests = [], 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def backend(url: str) -> Iterator[tuple[str, Config, sessionmaker[Session]]]:
    with tempfile.TemporaryDirectory(prefix="webhooks-bench-") as tmp:
        env = {"POSTROOM_DATA_DIR": tmp, "POSTROOM_SECRET_KEY": SECRET, "HOME": tmp, "POSTROOM_LOG_LEVEL": "ERROR"}
        name = "sqlite"
        if url != "sqlite":
            env["POSTROOM_DATABASE_URL"] = url
            name = url.split(":", 1)[0].split("+")[0]
        config = load_config(env=env)
        config = dataclasses.replace(config, webhooks=WebhooksConfig(allow_private=True, timeout=TIMEOUT))
        if name == "postgresql":
            target = make_url(config.database.url)
            server = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with server.connect() as conn:
                if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}):
                    conn.execute(text(f'CREATE DATABASE "{target.database}"'))
            server.dispose()
            admin = create_engine(config.database.url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            admin.dispose()
        engine = make_engine(config.database)
        upgrade(engine)
        try:
            yield name, config, make_sessionmaker(engine)
        finally:
            engine.dispose()


def scenario(
    config: Config,
    sessions: sessionmaker[Session],
    receivers: dict[str, Receiver],
    counts: dict[str, int],
    fair: bool,
) -> dict[str, Any]:
    with sessions.begin() as s:
        s.execute(delete(WebhookDelivery))
        s.execute(delete(WebhookSubscription))
        org = add_org(s, f"Bench {time.monotonic_ns()}").id
        for kind in counts:
            add_subscription(s, config, org, receivers[kind].url, [EVENTS[kind]])
    for r in receivers.values():
        r.reset()
    with sessions.begin() as s:  # interleaved: one of each kind in turn
        for i in range(max(counts.values())):
            for kind, n in counts.items():
                if i < n:
                    emit(s, org, EVENTS[kind], {"kind": kind, "n": i})
    start = time.perf_counter()
    passes = 0
    wanted = {k: n for k, n in counts.items() if k != "silent"}
    while time.perf_counter() - start < MAX_SCENARIO:
        attempted = deliver_due(sessions, config, fair=fair)
        passes += 1
        if all(len(receivers[k].arrivals) >= n for k, n in wanted.items()):
            with sessions() as s:
                delivered = s.scalar(
                    select(func.count()).where(WebhookDelivery.status == DeliveryStatus.DELIVERED.value)
                )
            if delivered is not None and delivered >= sum(wanted.values()):
                break
        again = attempted >= BATCH if not fair else attempted > 0
        if not again:
            time.sleep(1.0)  # the worker's WEBHOOK_POLL
    result: dict[str, Any] = {"passes": passes, "finished": time.perf_counter() - start < MAX_SCENARIO}
    for kind, n in wanted.items():
        arrivals = receivers[kind].arrivals[:n]
        last = (arrivals[-1] - start) if len(arrivals) == n else float("nan")
        result[f"{kind}_per_s"] = n / last if last == last and last > 0 else 0.0
        result[f"{kind}_last_s"] = last
        if kind == "fast":
            lat = sorted(a - start for a in arrivals)
            result["fast_p50_s"] = statistics.median(lat) if lat else float("nan")
    if "silent" in counts:
        result["silent_attempts"] = receivers["silent"].requests
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--database-url",
        action="append",
        help="'sqlite' (a temporary file) or a PostgreSQL URL, which is WIPED; repeatable "
        f"(default: sqlite and {DEFAULT_PG}, created when missing)",
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fast", type=int, default=300)
    ap.add_argument("--slow", type=int, default=25)
    ap.add_argument("--silent", type=int, default=5)
    ap.add_argument("--scenarios", default="fast,slow,mixed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    urls = args.database_url or ["sqlite", DEFAULT_PG]
    plans = {
        "fast": {"fast": args.fast},
        "slow": {"slow": args.slow},
        "mixed": {"fast": args.fast, "slow": args.slow, "silent": args.silent},
    }
    chosen = [p for p in args.scenarios.split(",") if p]
    receivers = {kind: Receiver(delay) for kind, delay in DELAYS.items()}
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    try:
        with ExitStack() as stack:
            backends = [stack.enter_context(backend(url)) for url in urls]
            for run in range(args.runs):
                order = backends if run % 2 == 0 else list(reversed(backends))
                for name, config, sessions in order:
                    modes = ("serial", "fair") if run % 2 == 0 else ("fair", "serial")
                    for plan in chosen:
                        for mode in modes:
                            r = scenario(config, sessions, receivers, plans[plan], mode == "fair")
                            results.setdefault((plan, name, mode), []).append(r)
                            print(f"run {run + 1} {name:<10} {plan:<6} {mode:<6} {json.dumps(r)}", flush=True)
                print(f"run {run + 1} done; load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for r in receivers.values():
            r.close()

    def med(rows: list[dict[str, Any]], key: str) -> float:
        values = [row[key] for row in rows if key in row]
        return statistics.median(values) if values else float("nan")

    print(f"\nMedians of {args.runs} runs; {platform.python_version()}, {os.cpu_count()} CPUs, timeout {TIMEOUT:g} s\n")
    print(
        "| scenario | database | pass | fast deliveries/s | fast: last delivered | fast: p50 latency | slow deliveries/s | silent attempts | passes |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    summary = []
    for (plan, name, mode), rows in results.items():
        row = {
            "scenario": plan,
            "database": name,
            "pass": mode,
            "fast_per_s": med(rows, "fast_per_s"),
            "fast_last_s": med(rows, "fast_last_s"),
            "fast_p50_s": med(rows, "fast_p50_s"),
            "slow_per_s": med(rows, "slow_per_s"),
            "silent_attempts": med(rows, "silent_attempts"),
            "passes": med(rows, "passes"),
            "runs": rows,
        }
        summary.append(row)

        def cell(v: float, fmt: str) -> str:
            return "–" if v != v else format(v, fmt)

        print(
            f"| {plan} | {name} | {mode} | {cell(row['fast_per_s'], '.0f')} | {cell(row['fast_last_s'], '.2f')} s | "
            f"{cell(row['fast_p50_s'], '.2f')} s | {cell(row['slow_per_s'], '.1f')} | {cell(row['silent_attempts'], '.0f')} | {cell(row['passes'], '.0f')} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": summary}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
