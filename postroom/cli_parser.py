"""The ``postroom`` command line: every command, argument and help text (no wiring; see :mod:`postroom.cli`)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from postroom.config import LOG_LEVELS


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        msg = message[0].upper() + message[1:] if message else message
        self.exit(2, f"{self.prog}: error: {msg.rstrip('.')}. See '{self.prog} --help'.\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML config file (default: $POSTROOM_CONFIG, else the embedded defaults)",
    )


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _quarantine(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    qu = sub.add_parser("quarantine", help="messages set aside because they could not be indexed or stored")
    _common(qu)
    qusub = qu.add_subparsers(dest="quarantine_command", metavar="COMMAND", parser_class=Parser)
    qusub.required = True
    ls = qusub.add_parser("list", help="every quarantined message with the reason, oldest first")
    _common(ls)
    ls.add_argument("--account", type=int, metavar="ID", help="only this account's")
    _json_flag(ls)
    rt = qusub.add_parser(
        "retry", help="try quarantined messages again (after an upgrade or a settings change), then sync their accounts"
    )
    _common(rt)
    rt.add_argument("ids", type=int, nargs="*", metavar="ID", help="entries to retry (default: all)")
    rt.add_argument("--account", type=int, metavar="ID", help="only this account's")
    rt.add_argument("--no-sync", action="store_true", help="only mark them; the worker's next pass retries them")
    _json_flag(rt)


def build_parser() -> Parser:
    root = Parser(prog="postroom", description="Sync recruiters' mailboxes and keep applicants' email history.")
    _common(root)
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    db = sub.add_parser("db", help="database schema")
    _common(db)
    dbsub = db.add_subparsers(dest="db_command", metavar="COMMAND", parser_class=Parser)
    dbsub.required = True
    up = dbsub.add_parser("upgrade", help="create or upgrade the schema to the newest version")
    _common(up)

    acc = sub.add_parser("accounts", help="connected mailboxes")
    _common(acc)
    accsub = acc.add_subparsers(dest="accounts_command", metavar="COMMAND", parser_class=Parser)
    accsub.required = True
    imap = accsub.add_parser("add-imap", help="connect an IMAP/SMTP mailbox")
    _common(imap)
    imap.add_argument("--email", required=True, help="the mailbox's address")
    imap.add_argument("--username", required=True, help="login name (often the address)")
    imap.add_argument(
        "--password-env", required=True, metavar="VAR", help="name of the environment variable that holds the password"
    )
    imap.add_argument("--imap-host", required=True)
    imap.add_argument("--imap-port", required=True, type=int)
    imap.add_argument("--imap-security", required=True, choices=("ssl", "starttls", "none"))
    imap.add_argument("--smtp-host", required=True)
    imap.add_argument("--smtp-port", required=True, type=int)
    imap.add_argument("--smtp-security", required=True, choices=("ssl", "starttls", "none"))
    imap.add_argument("--ca-file", help="PEM file of CA certificates to trust for this server")
    imap.add_argument(
        "--allow-plaintext", action="store_true", help="allow --*-security none to a host that is not this machine"
    )
    imap.add_argument("--proxy", metavar="URL", help="HTTP CONNECT proxy for IMAP, e.g. http://proxy:3128")
    _json_flag(imap)
    gm = accsub.add_parser(
        "add-gmail", help="import an existing Google grant for a Gmail mailbox (client from [google])"
    )
    _common(gm)
    gm.add_argument("--email", required=True, help="the mailbox's address")
    gm.add_argument(
        "--refresh-token-env",
        required=True,
        metavar="VAR",
        help="name of the environment variable that holds the OAuth refresh token",
    )
    _json_flag(gm)
    gr = accsub.add_parser(
        "add-graph", help="import an existing Microsoft grant for a Microsoft 365 mailbox (app from [microsoft])"
    )
    _common(gr)
    gr.add_argument("--email", required=True, help="the mailbox's address")
    gr.add_argument(
        "--refresh-token-env",
        required=True,
        metavar="VAR",
        help="name of the environment variable that holds the OAuth refresh token",
    )
    _json_flag(gr)
    ews = accsub.add_parser("add-ews", help="connect an Exchange mailbox through Exchange Web Services (EWS)")
    _common(ews)
    ews.add_argument("--email", required=True, help="the mailbox's address")
    ews.add_argument("--ews-url", required=True, metavar="URL", help="e.g. https://mail.example.com/EWS/Exchange.asmx")
    ews.add_argument("--username", help="login name, e.g. EXAMPLE\\alice or alice@example.com (ntlm, basic)")
    ews.add_argument("--password-env", metavar="VAR", help="name of the environment variable that holds the password")
    ews.add_argument(
        "--refresh-token-env",
        metavar="VAR",
        help="name of the environment variable that holds an OAuth refresh token issued to the [microsoft] app",
    )
    ews.add_argument(
        "--auth",
        choices=("ntlm", "basic", "oauth2"),
        help="how to sign in (default: ntlm with a password, oauth2 with a refresh token)",
    )
    ews.add_argument("--ca-file", help="PEM file of CA certificates to trust for this server")
    _json_flag(ews)
    lst = accsub.add_parser("list", help="list accounts with their sync status")
    _common(lst)
    _json_flag(lst)

    app = sub.add_parser("applicants", help="applicants whose email history is kept")
    _common(app)
    appsub = app.add_subparsers(dest="applicants_command", metavar="COMMAND", parser_class=Parser)
    appsub.required = True
    add = appsub.add_parser("add", help="add an applicant and backfill their history")
    _common(add)
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True, action="append", help="an address (repeat for several)")
    _json_flag(add)

    sy = sub.add_parser("sync", help="sync mailboxes once")
    _common(sy)
    sy.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    sy.add_argument("--account", type=int, metavar="ID", help="only this account")
    _json_flag(sy)

    th = sub.add_parser("threads", help="conversation threads in one account")
    _common(th)
    th.add_argument("--account", type=int, required=True, metavar="ID")
    _json_flag(th)

    hi = sub.add_parser("history", help="an applicant's email history, oldest first")
    _common(hi)
    hi.add_argument("--applicant", type=int, required=True, metavar="ID")
    _json_flag(hi)

    se = sub.add_parser("send", help="send a message through an account and keep it in Sent")
    _common(se)
    se.add_argument("--account", type=int, required=True, metavar="ID")
    se.add_argument("--to", required=True, action="append", help="a recipient (repeat for several)")
    se.add_argument("--subject", required=True)
    se.add_argument("--body-file", required=True, metavar="FILE", help="UTF-8 text of the body ('-' for stdin)")
    se.add_argument("--in-reply-to", metavar="MSGID", help="Message-ID of the message answered")
    _json_flag(se)

    ob = sub.add_parser("outbox", help="messages sent through Postroom and their state")
    _common(ob)
    obsub = ob.add_subparsers(dest="outbox_command", metavar="COMMAND", parser_class=Parser)
    obsub.required = True
    obl = obsub.add_parser("list", help="every outbox message, newest first, with its state and refused recipients")
    _common(obl)
    obl.add_argument("--status", choices=("queued", "sending", "sent", "uncertain", "failed"), help="only this state")
    _json_flag(obl)
    obr = obsub.add_parser(
        "retry", help="send a queued or failed message now; an uncertain one is looked for in Sent first"
    )
    _common(obr)
    obr.add_argument("id", type=int, metavar="ID", help="the outbox message (see 'postroom outbox list')")
    obr.add_argument(
        "--force", action="store_true", help="send an uncertain message again although it may already have gone out"
    )
    _json_flag(obr)

    wk = sub.add_parser("worker", help="sync every account every sync.interval until stopped")
    _common(wk)

    sv = sub.add_parser("serve", help="the web app (OAuth connect, health, metrics) with the worker in-process")
    _common(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sv.add_argument("--no-worker", action="store_true", help="serve the web app only (a worker runs elsewhere)")

    cel = sub.add_parser("celery", help="scale-out mode on PostgreSQL: Celery workers and the beat that dispatches")
    _common(cel)
    celsub = cel.add_subparsers(dest="celery_command", metavar="COMMAND", parser_class=Parser)
    celsub.required = True
    cw = celsub.add_parser("worker", help="sync the accounts beat dispatches until SIGTERM (finishing those in hand)")
    _common(cw)
    cw.add_argument(
        "--concurrency",
        "-c",
        type=int,
        metavar="N",
        help="accounts synced at once, in threads (default: sync.concurrency)",
    )
    cw.add_argument("--loglevel", "-l", type=str.upper, choices=LOG_LEVELS, help="log level (default: logging.level)")
    cw.add_argument("--queue", "-Q", default="postroom", help="broker queue to consume (default: postroom)")
    cb = celsub.add_parser("beat", help="dispatch due accounts every celery.dispatch_interval until SIGTERM")
    _common(cb)
    cb.add_argument("--loglevel", "-l", type=str.upper, choices=LOG_LEVELS, help="log level (default: logging.level)")
    cb.add_argument("--queue", "-Q", default="postroom", help="broker queue to send to (default: postroom)")

    st = sub.add_parser("status", help="per-account state, last successful sync, lag and last error")
    _common(st)
    _json_flag(st)

    _quarantine(sub)

    ke = sub.add_parser("keys", help="the key that encrypts stored credentials (docs/security.md)")
    _common(ke)
    kesub = ke.add_subparsers(dest="keys_command", metavar="COMMAND", parser_class=Parser)
    kesub.required = True
    rot = kesub.add_parser(
        "rotate",
        help="re-seal every stored credential under security.secret_key (old keys in security.previous_keys)",
    )
    _common(rot)
    _json_flag(rot)
    return root
