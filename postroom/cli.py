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
                    "skipped": r.skipped,
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
    entry = send_message(app.config, app.sessions, req)
    data = {
        "id": entry.id,
        "message_id": entry.message_id,
        "status": str(entry.status),
        "refused": dict(entry.refused),
        "error": entry.error,
    }
    return _send_outcome(args, entry, data, entry.message_id)


def _send_outcome(args: argparse.Namespace, entry: Any, data: Any, text: str) -> int:
    """Print what became of a message sent now: 0 if it went out (refused recipients and a
    missing Sent copy are warnings), else one sentence on stderr and 1."""
    from sync.outbox import OutboxStatus

    if entry.status == OutboxStatus.SENT or args.json:
        _print(args, data, text)
    if entry.status == OutboxStatus.SENT:
        if entry.refused:
            refused = ", ".join(f"{addr} ({why})" for addr, why in entry.refused.items())
            print(f"postroom: warning: the server refused {refused}; the others were sent.", file=sys.stderr)
        if entry.error:
            print(f"postroom: warning: {entry.error}", file=sys.stderr)
        return 0
    what, recipients = f"Message {entry.id} ({entry.message_id})", ", ".join(entry.recipients)
    if entry.status == OutboxStatus.UNCERTAIN:
        sentence = (
            f"{what} may have gone out although the answer was lost ({entry.error}), so it is not sent again: "
            f"check the Sent folder of {entry.account_email} or ask {recipients}, then run "
            f"'postroom outbox retry {entry.id}' (it looks in Sent first; --force sends it anyway)."
        )
    elif entry.status == OutboxStatus.FAILED:
        sentence = f"{what} was refused and not sent: {entry.error}."
    else:
        sentence = (
            f"{what} could not be sent yet ({entry.error}); it stays in the outbox and the worker tries again "
            f"later, or run 'postroom outbox retry {entry.id}'."
        )
    print(f"postroom: error: {sentence}", file=sys.stderr)
    return 1


def cmd_outbox_list(app: App, args: argparse.Namespace) -> int:
    from sync.outbox import OutboxStatus, list_outbox

    with app.sessions() as s:
        entries = list_outbox(s, args.status)
    if args.json:
        _print(args, [e.as_json() for e in entries], "")
        return 0
    if not entries:
        print(f"No {args.status} messages in the outbox." if args.status else "The outbox is empty.")
    for e in entries:
        when = (e.sent_at or e.created_at).strftime("%Y-%m-%d %H:%M")
        print(f"{e.id:>5}  {e.status:<9}  {when}  {e.message_id}  to {', '.join(e.recipients)}  {e.subject!r}")
        for addr, why in e.refused.items():
            print(f"{'':>7}refused: {addr} ({why})")
        if e.error:
            print(f"{'':>7}{'note' if e.status == OutboxStatus.SENT else 'error'}: {e.error}")
    return 0


def cmd_outbox_retry(app: App, args: argparse.Namespace) -> int:
    from sync.outbox_retry import retry_message

    outcome = retry_message(app.config, app.sessions, args.id, force=args.force)
    e = outcome.entry
    data = e.as_json() | {"found_in_sent": outcome.found_in_sent, "already_sent": outcome.already_sent}
    if outcome.already_sent:
        text = f"Message {e.id} ({e.message_id}) was already sent; nothing was done."
    elif outcome.found_in_sent:
        text = (
            f"Message {e.id} ({e.message_id}) is in the Sent folder of {e.account_email}, so it did go out: "
            "marked sent, and not sent again."
        )
    else:
        text = f"Message {e.id} ({e.message_id}) sent."
    return _send_outcome(args, e, data, text)


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
    from sync.metrics import SyncMetrics, serve
    from sync.worker import Worker
    from web import create_app

    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be a TCP port between 1 and 65535, not {args.port}.")
    flask_app = create_app(app.config)
    try:
        server = create_server(flask_app, host=args.host, port=args.port, threads=8)
    except OSError as exc:
        raise CommandError(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.") from None
    metrics = SyncMetrics()
    if serve(app.config.metrics, app.sessions, metrics):  # [metrics] port, as `postroom worker` serves it
        log.info("metrics on http://%s:%d/metrics", app.config.metrics.host, app.config.metrics.port)
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
    worker = None if args.no_worker else Worker(app.config, app.sessions, sink=metrics)

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
    from postroom.private_files import private_dir, tighten

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


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_keys_rotate(app: App, args: argparse.Namespace) -> int:
    from sync.key_rotation import rotate_secrets

    done = rotate_secrets(app.config, app.sessions)
    _print(
        args,
        done.as_json(),
        f"Stored credentials: {len(done.resealed)} re-sealed under the current key, "
        f"{len(done.current)} already sealed under it, {len(done.unreadable)} unreadable.",
    )
    if done.unreadable:
        ids = ", ".join(map(str, done.unreadable))
        raise CommandError(
            f"{len(done.unreadable)} stored credentials (accounts {ids}) open with neither security.secret_key "
            "nor security.previous_keys: add the key they were sealed under to security.previous_keys and run "
            "'postroom keys rotate' again, or reconnect those accounts."
        )
    if done.busy:
        ids = ", ".join(map(str, done.busy))
        raise CommandError(f"Accounts {ids} changed on every attempt; run 'postroom keys rotate' again.")
    return 0


def cmd_quarantine_list(app: App, args: argparse.Namespace) -> int:
    from sync.quarantine import list_quarantined

    with app.sessions() as s:
        items = list_quarantined(s, account_id=args.account)
    if args.json:
        _print(args, [i.as_json() for i in items], "")
        return 0
    if not items:
        print("No quarantined messages.")
    for i in items:
        where = f"{i.folder} #{i.remote_id}"
        print(
            f"{i.id:>5}  account {i.account_id} ({i.account})  {where}  {i.message_id or '(no Message-ID)'}  "
            f"{i.stage}  {i.at.strftime('%Y-%m-%d %H:%M:%S')}  {i.reason}"
            + ("  [retry requested]" if i.retry_requested else "")
        )
    return 0


def cmd_quarantine_retry(app: App, args: argparse.Namespace) -> int:
    from sync.quarantine import list_quarantined, request_retry
    from sync.scheduler import sync_account

    with app.sessions.begin() as s:
        before = [i for i in list_quarantined(s, account_id=args.account) if not args.ids or i.id in args.ids]
        missing = sorted(set(args.ids) - {i.id for i in before})
        if missing:
            raise CommandError(f"No quarantined message with id {missing[0]}; see 'postroom quarantine list'.")
        accounts = request_retry(s, account_id=args.account, ids=[i.id for i in before])
    if not before:
        _print(args, {"requested": 0, "still_quarantined": [], "accounts": []}, "No quarantined messages to retry.")
        return 0
    if args.no_sync:
        _print(
            args,
            {"requested": len(before), "still_quarantined": None, "accounts": accounts},
            f"{len(before)} message(s) will be retried by the next sync of account(s) "
            + ", ".join(map(str, accounts))
            + " (due now).",
        )
        return 0
    results = [sync_account(app.config, app.sessions, a) for a in accounts]
    asked = {(i.account_id, i.folder, i.remote_id) for i in before}
    with app.sessions() as s:
        still = [
            i
            for a in accounts
            for i in list_quarantined(s, account_id=a)
            if (i.account_id, i.folder, i.remote_id) in asked
        ]
    done = len(before) - len(still)
    text = f"{len(before)} message(s) retried: {done} indexed or stored, {len(still)} still quarantined."
    text += "".join(f"\n{i.id:>5}  {i.folder} #{i.remote_id}  {i.reason}" for i in still)
    failed = [r for r in results if not r.ok]
    text += "".join(f"\npostroom: warning: {r.summary()}" for r in failed)
    _print(
        args,
        {
            "requested": len(before),
            "still_quarantined": [i.as_json() for i in still],
            "accounts": [
                {"account_id": r.account_id, "ok": r.ok, "status": r.status, "error": r.error} for r in results
            ],
        },
        text,
    )
    return 1 if failed else 0


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
    ("outbox", "list"): cmd_outbox_list,
    ("outbox", "retry"): cmd_outbox_retry,
    ("worker",): cmd_worker,
    ("serve",): cmd_serve,
    ("celery", "worker"): cmd_celery_worker,
    ("celery", "beat"): cmd_celery_beat,
    ("status",): cmd_status,
    ("quarantine", "list"): cmd_quarantine_list,
    ("quarantine", "retry"): cmd_quarantine_retry,
    ("keys", "rotate"): cmd_keys_rotate,
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
