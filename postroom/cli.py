"""The ``postroom`` command: the composition root that wires config, database and services.

This module sits above every layer (it is the only part of the ``postroom``
package that imports ``sync``); the rest of ``postroom`` is the core that
``providers``, ``sync`` and ``web`` build on. Every command has ``--help``;
commands that print data take ``--json``. Errors go to stderr as one sentence
with exit status 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from postroom.cli_parser import build_parser
from postroom.config import Config, ConfigError, load_config

log = logging.getLogger("postroom")


class CommandError(Exception):
    """A command cannot be carried out; the message is shown as is."""


class App:
    """Lazily built config, engine and sessions for one command."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._sessions: Any = None

    @property
    def sessions(self) -> Any:
        if self._sessions is None:
            from postroom import db

            engine = db.make_engine(self.config.database)
            if engine.dialect.name == "sqlite":
                db.upgrade(engine)  # the embedded database keeps itself current
            else:
                db.check_schema(engine)
            self._sessions = db.make_sessionmaker(engine)
        return self._sessions


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text)


def cmd_db_upgrade(app: App, args: argparse.Namespace) -> int:
    from postroom import db

    engine = db.make_engine(app.config.database)
    rev = db.upgrade(engine)
    print(f"Database at revision {rev}.")
    return 0


def cmd_accounts_add_imap(app: App, args: argparse.Namespace) -> int:
    from sync.accounts import ImapAccountRequest, add_imap_account

    password = _env_secret(args.password_env, "--password-env")
    req = ImapAccountRequest(
        email=args.email,
        username=args.username,
        password=password,
        imap_host=args.imap_host,
        imap_port=args.imap_port,
        imap_security=args.imap_security,
        smtp_host=args.smtp_host,
        smtp_port=args.smtp_port,
        smtp_security=args.smtp_security,
        ca_file=args.ca_file,
        allow_plaintext=args.allow_plaintext,
        proxy=args.proxy,
    )
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise CommandError(f"--ca-file {args.ca_file} is not a file.")
    with app.sessions.begin() as s:
        account = add_imap_account(s, app.config, req)
        account_id = account.id
    _print(args, {"id": account_id}, str(account_id))
    return 0


def cmd_accounts_add_gmail(app: App, args: argparse.Namespace) -> int:
    from sync.accounts import add_gmail_account

    token = _env_secret(args.refresh_token_env, "--refresh-token-env")
    with app.sessions.begin() as s:
        account_id = add_gmail_account(s, app.config, args.email, token).id
    _print(args, {"id": account_id}, str(account_id))
    return 0


def _env_secret(var: str, flag: str) -> str:
    value = os.environ.get(var)
    if value is None:
        raise CommandError(f"Environment variable {var} (named by {flag}) is not set.")
    return value


def cmd_accounts_add_graph(app: App, args: argparse.Namespace) -> int:
    from sync.accounts import add_graph_account

    token = _env_secret(args.refresh_token_env, "--refresh-token-env")
    with app.sessions.begin() as s:
        account_id = add_graph_account(s, app.config, args.email, token).id
    _print(args, {"id": account_id}, str(account_id))
    return 0


def cmd_accounts_add_ews(app: App, args: argparse.Namespace) -> int:
    from sync.accounts import EwsAccountRequest, add_ews_account

    if args.password_env and args.refresh_token_env:
        raise CommandError("Give either --password-env or --refresh-token-env, not both.")
    if not (args.password_env or args.refresh_token_env):
        raise CommandError("Give --username and --password-env, or --refresh-token-env, to sign in to Exchange.")
    password = _env_secret(args.password_env, "--password-env") if args.password_env else None
    token = _env_secret(args.refresh_token_env, "--refresh-token-env") if args.refresh_token_env else None
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise CommandError(f"--ca-file {args.ca_file} is not a file.")
    req = EwsAccountRequest(
        email=args.email,
        ews_url=args.ews_url,
        auth=args.auth or ("oauth2" if token is not None else "ntlm"),
        username=args.username,
        password=password,
        refresh_token=token,
        ca_file=args.ca_file,
    )
    with app.sessions.begin() as s:
        account_id = add_ews_account(s, app.config, req).id
    _print(args, {"id": account_id}, str(account_id))
    return 0


def cmd_accounts_list(app: App, args: argparse.Namespace) -> int:
    from sync.accounts import list_accounts

    with app.sessions() as s:
        accounts = list_accounts(s)
    if args.json:
        _print(args, [a.as_json() for a in accounts], "")
        return 0
    if not accounts:
        print("No accounts yet; add one with 'postroom accounts add-imap' (or add-gmail, add-graph, add-ews).")
    for a in accounts:
        last = a.last_sync_at.strftime("%Y-%m-%d %H:%M:%S") if a.last_sync_at else "never"
        line = f"{a.id:>4}  {a.email:<32} {a.provider:<6} {a.status:<17} last sync {last}"
        print(line + (f"  error: {a.last_error}" if a.last_error else ""))
    return 0


def cmd_applicants_add(app: App, args: argparse.Namespace) -> int:
    from sync.history import add_applicant

    with app.sessions.begin() as s:
        applicant, backfilled = add_applicant(s, args.name, args.email)
        applicant_id = applicant.id
    _print(args, {"id": applicant_id, "history_entries": backfilled}, str(applicant_id))
    return 0


def cmd_sync(app: App, args: argparse.Namespace) -> int:
    from sync.scheduler import sync_all

    results = sync_all(app.config, app.sessions, args.account)
    if args.json:
        _print(
            args,
            [
                {
                    "account_id": r.account_id,
                    "ok": r.ok,
                    "status": r.status,
                    "error": r.error,
                    "new": r.new,
                    "seconds": round(r.seconds, 3),
                }
                for r in results
            ],
            "",
        )
    else:
        if not results:
            print("No accounts to sync; add one with 'postroom accounts add-imap' (or add-gmail, add-graph, add-ews).")
        for r in results:
            print(r.summary())
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(f"{r.account_id} ({r.email})" for r in failed)
        print(f"postroom: error: {len(failed)} of {len(results)} accounts failed to sync: {names}.", file=sys.stderr)
        return 1
    return 0


def cmd_threads(app: App, args: argparse.Namespace) -> int:
    from sync.threads import account_threads

    with app.sessions() as s:
        threads = account_threads(s, args.account)
    text = "\n".join(f"{t['id']:>6}  {len(t['message_ids']):>3} msgs  {t['subject']}" for t in threads)  # type: ignore[arg-type]
    _print(args, threads, text or "No threads yet.")
    return 0


def cmd_history(app: App, args: argparse.Namespace) -> int:
    from sync.history import applicant_history

    with app.sessions() as s:
        items = applicant_history(s, args.applicant)
    text = "\n".join(
        f"{(i.date.strftime('%Y-%m-%d %H:%M') if i.date else '?'):<16} {i.direction:<8} {i.subject}  {i.message_id}"
        for i in items
    )
    _print(args, [i.as_json() for i in items], text or "No messages yet.")
    return 0


def cmd_send(app: App, args: argparse.Namespace) -> int:
    from sync.outbox import SendRequest, read_body, send_message

    req = SendRequest(
        account_id=args.account,
        to=args.to,
        subject=args.subject,
        text=read_body(args.body_file),
        in_reply_to=args.in_reply_to,
    )
    row = send_message(app.config, app.sessions, req)
    if row.error:
        print(f"postroom: warning: {row.error}", file=sys.stderr)
    _print(args, {"message_id": row.message_id, "status": row.status}, row.message_id)
    return 0


def cmd_worker(app: App, args: argparse.Namespace) -> int:
    from sync.metrics import SyncMetrics, serve
    from sync.worker import Worker

    metrics = SyncMetrics()
    worker = Worker(app.config, app.sessions, sink=metrics)
    port = serve(app.config.metrics, app.sessions, metrics)
    if port:
        log.info("metrics on http://%s:%d/metrics", app.config.metrics.host, port)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; finishing the accounts in hand", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    return 0


def cmd_serve(app: App, args: argparse.Namespace) -> int:
    """The embedded default in one process: the web app on waitress, the worker beside it.

    SIGTERM or Ctrl-C stops claiming accounts, lets the accounts in hand finish, then
    closes the web server."""
    import threading

    from waitress.server import create_server

    from providers.transport import is_loopback
    from sync.metrics import SyncMetrics
    from sync.worker import Worker
    from web import create_app

    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be a TCP port between 1 and 65535, not {args.port}.")
    flask_app = create_app(app.config)
    try:
        server = create_server(flask_app, host=args.host, port=args.port, threads=8)
    except OSError as exc:
        raise CommandError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.") from None
    web = threading.Thread(target=server.run, name="postroom-web", daemon=True)
    web.start()
    if not is_loopback(args.host):
        log.warning(
            "serving on %s: the connect flows have no recruiter sign-in yet, so anyone who reaches this port "
            "can add a mailbox; put it behind your own authentication and HTTPS",
            args.host,
        )
    url = f"http://{args.host}:{server.effective_port}/"
    log.info("web app on %s (mailboxes connect at /connect/google and /connect/microsoft)", url)
    stopped = threading.Event()
    worker = None if args.no_worker else Worker(app.config, app.sessions, sink=SyncMetrics())

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; finishing the accounts in hand", signal.Signals(signum).name)
        stopped.set()
        if worker is not None:
            worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if worker is not None:
        worker.run()
    else:
        stopped.wait()
    server.close()
    log.info("web app stopped")
    return 0


def _celery_app(app: App, args: argparse.Namespace) -> Any:
    """The Flask app and its Celery app, as Flask's Celery pattern builds them (PostgreSQL only)."""
    from dataclasses import replace

    from postroom import db
    from postroom.logs import setup_logging
    from sync.tasks import require_server_database
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


def cmd_celery_worker(app: App, args: argparse.Namespace) -> int:
    import socket

    from sync.metrics import SyncMetrics, serve

    concurrency = args.concurrency or app.config.sync.concurrency
    if not 1 <= concurrency <= 256:
        raise CommandError(f"--concurrency must be between 1 and 256, not {concurrency}.")
    flask_app, celery_app = _celery_app(app, args)
    metrics = SyncMetrics()
    ext = flask_app.extensions["postroom"]
    ext["metrics"] = metrics
    port = serve(app.config.metrics, ext["sessions"], metrics)  # one port per process: the pool is threads
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


def cmd_celery_beat(app: App, args: argparse.Namespace) -> int:
    _flask_app, celery_app = _celery_app(app, args)
    app.config.data_dir.mkdir(parents=True, exist_ok=True)
    code = celery_app.start(
        [
            "beat",
            f"--schedule={app.config.data_dir / 'celerybeat-schedule'}",
            f"--loglevel={args.loglevel or app.config.logging.level}",
        ]
    )
    return int(code or 0)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_status(app: App, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sync.accounts import account_status

    with app.sessions() as s:
        rows = account_status(s, datetime.now(UTC))
    if args.json:
        _print(args, [r.as_json() for r in rows], "")
        return 0
    if not rows:
        print("No accounts yet; add one with 'postroom accounts add-imap' (or add-gmail, add-graph, add-ews).")
    for r in rows:
        last = r.last_success_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_success_at else "never"
        line = f"{r.id:>4}  {r.email:<32} {r.status:<17} last ok {last} (lag {_age(r.lag_seconds)})"
        if r.syncing_on:
            line += f"  syncing on {r.syncing_on}"
        if r.last_error:
            line += f"  error ({r.last_error_class}, {r.failure_count}x): {r.last_error}"
        print(line)
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[App, argparse.Namespace], int]] = {
    ("db", "upgrade"): cmd_db_upgrade,
    ("accounts", "add-imap"): cmd_accounts_add_imap,
    ("accounts", "add-gmail"): cmd_accounts_add_gmail,
    ("accounts", "add-graph"): cmd_accounts_add_graph,
    ("accounts", "add-ews"): cmd_accounts_add_ews,
    ("accounts", "list"): cmd_accounts_list,
    ("applicants", "add"): cmd_applicants_add,
    ("sync",): cmd_sync,
    ("threads",): cmd_threads,
    ("history",): cmd_history,
    ("send",): cmd_send,
    ("worker",): cmd_worker,
    ("serve",): cmd_serve,
    ("celery", "worker"): cmd_celery_worker,
    ("celery", "beat"): cmd_celery_beat,
    ("status",): cmd_status,
}


def _known_errors() -> tuple[type[BaseException], ...]:
    from postroom.crypto import SecretError
    from postroom.db import DatabaseError
    from providers.errors import ProviderError
    from sync.accounts import AccountError
    from sync.history import ApplicantError
    from sync.outbox import OutboxError

    return (
        CommandError,
        ConfigError,
        DatabaseError,
        SecretError,
        AccountError,
        ApplicantError,
        OutboxError,
        ProviderError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key = tuple(v for v in (args.command, getattr(args, f"{args.command}_command", None)) if v)
    try:
        config = load_config(getattr(args, "config", None))
        from postroom.logs import setup_logging

        setup_logging(config.logging)
        return COMMANDS[key](App(config), args)
    except _known_errors() as exc:
        msg = str(exc).strip() or exc.__class__.__name__
        print(f"postroom: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("postroom: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:
        from sqlalchemy.exc import OperationalError

        from postroom.db import driver_message

        if isinstance(exc, OperationalError):  # the database went away mid-command
            print(f"postroom: error: The database cannot be reached: {driver_message(exc)}.", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
