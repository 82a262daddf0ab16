"""``postroom quarantine list | retry``."""

from __future__ import annotations

import argparse

from cli.common import App, CommandError, Commands, Subparsers, common, group, json_flag, output
from postroom.errors import UserError
from services.quarantine import list_quarantined, retry_quarantined


def register(sub: Subparsers) -> Commands:
    qu = group(sub, "quarantine", "messages set aside because they could not be indexed or stored")
    ls = common(qu.add_parser("list", help="every quarantined message with the reason, oldest first"))
    ls.add_argument("--account", type=int, metavar="ID", help="only this account's")
    json_flag(ls)
    rt = common(
        qu.add_parser(
            "retry",
            help="try quarantined messages again (after an upgrade or a settings change), then sync their accounts",
        )
    )
    rt.add_argument("ids", type=int, nargs="*", metavar="ID", help="entries to retry (default: all)")
    rt.add_argument("--account", type=int, metavar="ID", help="only this account's")
    rt.add_argument("--no-sync", action="store_true", help="only mark them; the worker's next pass retries them")
    json_flag(rt)
    return {("quarantine", "list"): list_, ("quarantine", "retry"): retry}


def list_(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        items = list_quarantined(s, account_id=args.account)
    if args.json:
        output(args, [i.as_json() for i in items], "")
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


def retry(app: App, args: argparse.Namespace) -> int:
    try:
        report = retry_quarantined(app.config, app.sessions, args.account, args.ids, sync=not args.no_sync)
    except UserError as exc:
        if exc.field != "id":
            raise
        raise CommandError(f"{str(exc).rstrip('.')}; see 'postroom quarantine list'.") from None
    if not report.requested:
        output(args, {"requested": 0, "still_quarantined": [], "accounts": []}, "No quarantined messages to retry.")
        return 0
    if report.results is None:
        output(
            args,
            {"requested": report.requested, "still_quarantined": None, "accounts": report.accounts},
            f"{report.requested} message(s) will be retried by the next sync of account(s) "
            + ", ".join(map(str, report.accounts))
            + " (due now).",
        )
        return 0
    done = report.requested - len(report.still)
    text = f"{report.requested} message(s) retried: {done} indexed or stored, {len(report.still)} still quarantined."
    text += "".join(f"\n{i.id:>5}  {i.folder} #{i.remote_id}  {i.reason}" for i in report.still)
    failed = [r for r in report.results if not r.ok]
    text += "".join(f"\npostroom: warning: {r.summary()}" for r in failed)
    data = {
        "requested": report.requested,
        "still_quarantined": [i.as_json() for i in report.still],
        "accounts": [
            {"account_id": r.account_id, "ok": r.ok, "status": r.status, "error": r.error} for r in report.results
        ],
    }
    output(args, data, text)
    return 1 if failed else 0
