"""``postroom accounts add-imap | add-gmail | add-graph | add-ews | list`` and ``postroom status``."""

from __future__ import annotations

import argparse
import os

from cli.common import App, CommandError, Commands, Subparsers, common, env_secret, group, json_flag, org_flag, output
from postroom.models import utcnow
from services.accounts import (
    EwsAccountRequest,
    ImapAccountRequest,
    account_status,
    add_ews_account,
    add_gmail_account,
    add_graph_account,
    add_imap_account,
    list_accounts,
)

NO_ACCOUNTS = "No accounts yet; add one with 'postroom accounts add-imap' (or add-gmail, add-graph, add-ews)."


def register(sub: Subparsers) -> Commands:
    acc = group(sub, "accounts", "connected mailboxes")
    imap = common(acc.add_parser("add-imap", help="connect an IMAP/SMTP mailbox"))
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
    org_flag(imap)
    json_flag(imap)
    for name, help, smtp in (
        (
            "add-gmail",
            "import an existing Google grant for a Gmail mailbox (client from [google])",
            "send tracked copies over Gmail's SMTP submission (the grant must include https://mail.google.com/)",
        ),
        (
            "add-graph",
            "import an existing Microsoft grant for a Microsoft 365 mailbox (app from [microsoft])",
            "send tracked copies over Exchange Online's SMTP submission "
            "(the grant must include https://outlook.office.com/SMTP.Send)",
        ),
    ):
        oauth = common(acc.add_parser(name, help=help))
        oauth.add_argument("--email", required=True, help="the mailbox's address")
        oauth.add_argument(
            "--refresh-token-env",
            required=True,
            metavar="VAR",
            help="name of the environment variable that holds the OAuth refresh token",
        )
        oauth.add_argument("--smtp-submission", action="store_true", help=smtp)
        org_flag(oauth)
        json_flag(oauth)
    ews = common(acc.add_parser("add-ews", help="connect an Exchange mailbox through Exchange Web Services (EWS)"))
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
    org_flag(ews)
    json_flag(ews)
    for parser in (
        common(acc.add_parser("list", help="list accounts with their sync status")),
        common(sub.add_parser("status", help="per-account state, last successful sync, lag and last error")),
    ):
        org_flag(parser, "only this organisation's accounts (default: every organisation's)")
        json_flag(parser)
    return {
        ("accounts", "add-imap"): add_imap,
        ("accounts", "add-gmail"): add_gmail,
        ("accounts", "add-graph"): add_graph,
        ("accounts", "add-ews"): add_ews,
        ("accounts", "list"): list_,
        ("status",): status,
    }


def _ca_file(path: str | None) -> None:
    if path and not os.path.isfile(path):
        raise CommandError(f"--ca-file {path} is not a file.")


def _added(args: argparse.Namespace, account_id: int) -> int:
    output(args, {"id": account_id}, str(account_id))
    return 0


def add_imap(app: App, args: argparse.Namespace) -> int:
    req = ImapAccountRequest(
        email=args.email,
        username=args.username,
        password=env_secret(args.password_env, "--password-env"),
        imap_host=args.imap_host,
        imap_port=args.imap_port,
        imap_security=args.imap_security,
        smtp_host=args.smtp_host,
        smtp_port=args.smtp_port,
        smtp_security=args.smtp_security,
        ca_file=args.ca_file,
        allow_plaintext=args.allow_plaintext,
        proxy=args.proxy,
        org_id=args.org,
    )
    _ca_file(args.ca_file)
    with app.sessions.begin() as s:
        return _added(args, add_imap_account(s, app.config, req).id)


def add_gmail(app: App, args: argparse.Namespace) -> int:
    token = env_secret(args.refresh_token_env, "--refresh-token-env")
    with app.sessions.begin() as s:
        account = add_gmail_account(
            s, app.config, args.email, token, smtp_submission=args.smtp_submission, org_id=args.org
        )
        return _added(args, account.id)


def add_graph(app: App, args: argparse.Namespace) -> int:
    token = env_secret(args.refresh_token_env, "--refresh-token-env")
    with app.sessions.begin() as s:
        account = add_graph_account(
            s, app.config, args.email, token, smtp_submission=args.smtp_submission, org_id=args.org
        )
        return _added(args, account.id)


def add_ews(app: App, args: argparse.Namespace) -> int:
    if args.password_env and args.refresh_token_env:
        raise CommandError("Give either --password-env or --refresh-token-env, not both.")
    if not (args.password_env or args.refresh_token_env):
        raise CommandError("Give --username and --password-env, or --refresh-token-env, to sign in to Exchange.")
    password = env_secret(args.password_env, "--password-env") if args.password_env else None
    token = env_secret(args.refresh_token_env, "--refresh-token-env") if args.refresh_token_env else None
    _ca_file(args.ca_file)
    req = EwsAccountRequest(
        email=args.email,
        ews_url=args.ews_url,
        auth=args.auth or ("oauth2" if token is not None else "ntlm"),
        username=args.username,
        password=password,
        refresh_token=token,
        ca_file=args.ca_file,
        org_id=args.org,
    )
    with app.sessions.begin() as s:
        return _added(args, add_ews_account(s, app.config, req).id)


def list_(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        accounts = list_accounts(s, args.org)
    if args.json:
        output(args, [a.as_json() for a in accounts], "")
        return 0
    if not accounts:
        print(NO_ACCOUNTS)
    for a in accounts:
        last = a.last_sync_at.strftime("%Y-%m-%d %H:%M:%S") if a.last_sync_at else "never"
        line = f"{a.id:>4}  {a.email:<32} {a.provider:<6} {a.status:<17} last sync {last}"
        print(line + (f"  error: {a.last_error}" if a.last_error else ""))
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def status(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        rows = account_status(s, utcnow(), args.org)
    if args.json:
        output(args, [r.as_json() for r in rows], "")
        return 0
    if not rows:
        print(NO_ACCOUNTS)
    for r in rows:
        last = r.last_success_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_success_at else "never"
        line = f"{r.id:>4}  {r.email:<32} {r.status:<17} last ok {last} (lag {_age(r.lag_seconds)})"
        if r.syncing_on:
            line += f"  syncing on {r.syncing_on}"
        if r.last_error:
            line += f"  error ({r.last_error_class}, {r.failure_count}x): {r.last_error}"
        print(line)
    return 0
