"""``postroom sync --once`` and ``postroom threads``."""

from __future__ import annotations

import argparse
import sys

from cli.common import App, Commands, Subparsers, common, json_flag, output
from services.threads import account_threads
from sync.scheduler import sync_all


def register(sub: Subparsers) -> Commands:
    sy = common(sub.add_parser("sync", help="sync mailboxes once"))
    sy.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    sy.add_argument("--account", type=int, metavar="ID", help="only this account")
    json_flag(sy)
    th = common(sub.add_parser("threads", help="conversation threads in one account"))
    th.add_argument("--account", type=int, required=True, metavar="ID")
    json_flag(th)
    return {("sync",): sync_once, ("threads",): threads}


def sync_once(app: App, args: argparse.Namespace) -> int:
    results = sync_all(app.config, app.sessions, args.account)
    if args.json:
        output(
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


def threads(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        found = account_threads(s, args.account)
    text = "\n".join(f"{t['id']:>6}  {len(t['message_ids']):>3} msgs  {t['subject']}" for t in found)  # type: ignore[arg-type]
    output(args, found, text or "No threads yet.")
    return 0
