"""The long-running commands: ``postroom worker``, ``postroom serve``, ``postroom celery worker | beat``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import threading
from dataclasses import replace
from typing import Any

from cli.common import App, CommandError, Commands, Subparsers, common, group
from cli.demo import DemoRun
from postroom import db
from postroom.config import LOG_LEVELS
from postroom.logs import setup_logging
from postroom.private_files import private_dir, tighten
from postroom.urls import is_loopback_host
from sync.metrics import SyncMetrics
from sync.metrics import serve as serve_metrics
from sync.tasks import require_server_database
from sync.worker import Worker

log = logging.getLogger("postroom")


def register(sub: Subparsers) -> Commands:
    common(sub.add_parser("worker", help="sync every account every sync.interval until stopped"))
    sv = common(sub.add_parser("serve", help="the web app (OAuth connect, health, metrics) with the worker in-process"))
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sv.add_argument("--no-worker", action="store_true", help="serve the web app only (a worker runs elsewhere)")
    cel = group(sub, "celery", "scale-out mode on PostgreSQL: Celery workers and the beat that dispatches")
    cw = common(
        cel.add_parser("worker", help="sync the accounts beat dispatches until SIGTERM (finishing those in hand)")
    )
    cw.add_argument(
        "--concurrency",
        "-c",
        type=int,
        metavar="N",
        help="accounts synced at once, in threads (default: sync.concurrency)",
    )
    cw.add_argument("--loglevel", "-l", type=str.upper, choices=LOG_LEVELS, help="log level (default: logging.level)")
    cw.add_argument("--queue", "-Q", default="postroom", help="broker queue to consume (default: postroom)")
    cb = common(cel.add_parser("beat", help="dispatch due accounts every celery.dispatch_interval until SIGTERM"))
    cb.add_argument("--loglevel", "-l", type=str.upper, choices=LOG_LEVELS, help="log level (default: logging.level)")
    cb.add_argument("--queue", "-Q", default="postroom", help="broker queue to send to (default: postroom)")
    return {
        ("worker",): worker,
        ("serve",): serve,
        ("celery", "worker"): celery_worker,
        ("celery", "beat"): celery_beat,
    }


def _stop_on_signals(stop: Any) -> None:
    """SIGTERM and Ctrl-C stop claiming accounts; those in hand finish."""

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; finishing the accounts in hand", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def worker(app: App, args: argparse.Namespace) -> int:
    metrics = SyncMetrics()
    runner = Worker(app.config, app.sessions, sink=metrics)
    port = serve_metrics(app.config.metrics, app.sessions, metrics)
    if port:
        log.info("metrics on http://%s:%d/metrics", app.config.metrics.host, port)
    _stop_on_signals(runner.stop)
    runner.run()
    return 0


def serve(app: App, args: argparse.Namespace) -> int:
    """The embedded default in one process: the web app on waitress, the worker beside it, and
    the demo when there is one or the database has nothing real in it yet (cli.demo).

    SIGTERM or Ctrl-C stops claiming accounts, lets the accounts in hand finish, then
    closes the web server."""
    from waitress.server import create_server

    from web import create_app

    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be a TCP port between 1 and 65535, not {args.port}.")
    browse = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host  # where this machine reaches it
    demo = DemoRun.plan(app, f"http://{f'[{browse}]' if ':' in browse else browse}:{args.port}/")
    config = demo.config if demo else app.config
    flask_app = create_app(config)
    # Everything built so far lives as long as the process: out of the collector's sight, a full
    # collection during a request costs under 1 ms instead of 55–100 ms (docs/benchmarks.md)
    gc.collect()
    gc.freeze()
    try:
        # waitress drops X-Forwarded-* before the app sees them unless told not to; ProxyFix
        # (web.trusted_proxies) decides which of them to believe
        server = create_server(
            flask_app,
            host=args.host,
            port=args.port,
            threads=8,
            clear_untrusted_proxy_headers=not app.config.web.trusted_proxies,
        )
    except OSError as exc:
        raise CommandError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.") from None
    metrics = SyncMetrics()
    if serve_metrics(app.config.metrics, app.sessions, metrics):  # [metrics] port, as `postroom worker` serves it
        log.info("metrics on http://%s:%d/metrics", app.config.metrics.host, app.config.metrics.port)
    threading.Thread(target=server.run, name="postroom-web", daemon=True).start()
    if not is_loopback_host(args.host):
        log.warning(
            "serving on %s: the connect flows have no recruiter sign-in yet, so anyone who reaches this port "
            "can add a mailbox; put it behind your own authentication and HTTPS",
            args.host,
        )
    url = f"http://{args.host}:{server.effective_port}/"
    log.info("web app on %s (mailboxes connect at /connect/google and /connect/microsoft)", url)
    stopped = threading.Event()
    runner = None if args.no_worker else Worker(config, app.sessions, sink=metrics)

    def stop() -> None:
        stopped.set()
        if runner is not None:
            runner.stop()

    _stop_on_signals(stop)
    if demo is not None:
        demo.start()  # seeds when due (the password is printed once), serves the demo's mailboxes
    if runner is not None:
        runner.run()
    else:
        stopped.wait()
    server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)  # requests in hand are answered
    server.close()
    if demo is not None:
        demo.close()
    flask_app.extensions["postroom"]["hits"].close()  # the tracking hits still queued are written
    log.info("web app stopped")
    return 0


def _celery_app(app: App, args: argparse.Namespace) -> Any:
    """The Flask app and its Celery app, as Flask's Celery pattern builds them (PostgreSQL only)."""
    from web import create_app
    from web.celery_app import celery_init_app

    require_server_database(app.config)
    engine = db.make_engine(app.config.database)
    try:
        db.check_schema(engine)  # one sentence now rather than a traceback in every task
    finally:
        engine.dispose()
    if args.loglevel:
        setup_logging(replace(app.config.logging, level=args.loglevel))
    flask_app = create_app(app.config)
    celery_app = celery_init_app(flask_app)
    celery_app.conf.task_default_queue = args.queue
    return flask_app, celery_app


def celery_worker(app: App, args: argparse.Namespace) -> int:
    concurrency = args.concurrency or app.config.sync.concurrency
    if not 1 <= concurrency <= 256:
        raise CommandError(f"--concurrency must be between 1 and 256, not {concurrency}.")
    flask_app, celery_app = _celery_app(app, args)
    metrics = SyncMetrics()
    ext = flask_app.extensions["postroom"]
    ext["metrics"] = metrics
    port = serve_metrics(app.config.metrics, ext["sessions"], metrics)  # one port per process: the pool is threads
    if port:
        log.info("metrics on http://%s:%d/metrics", app.config.metrics.host, port)
    code = celery_app.worker_main(
        [
            "worker",
            "--pool=threads",  # syncs wait on mail servers and the database
            f"--concurrency={concurrency}",
            f"--loglevel={args.loglevel or app.config.logging.level}",
            f"--queues={args.queue}",
            f"--hostname=postroom-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",  # workers coordinate through database leases, not with each other
            "--without-mingle",
        ]
    )
    return int(code or 0)


def celery_beat(app: App, args: argparse.Namespace) -> int:
    _flask_app, celery_app = _celery_app(app, args)
    private_dir(app.config.data_dir)
    for old in app.config.data_dir.glob("celerybeat-schedule*"):
        tighten(old)
    # the schedule's file names depend on the dbm module shelve picks: keep whatever beat creates private
    os.umask(0o077)
    code = celery_app.start(
        [
            "beat",
            f"--schedule={app.config.data_dir / 'celerybeat-schedule'}",
            f"--loglevel={args.loglevel or app.config.logging.level}",
        ]
    )
    return int(code or 0)
