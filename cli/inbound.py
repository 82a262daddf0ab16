"""``postroom inbound add|run|list|retry``: processing mailboxes (docs/inbound.md) — designate an
account, run every processing mailbox once, read what they took, retry a failed message."""

from __future__ import annotations

import argparse

from cli.common import App, CommandError, Commands, Subparsers, common, group, json_flag, org_flag, output
from services.inbound import (
    MOVE_MODES,
    STATUSES,
    InboundItemView,
    add_mailbox,
    list_items,
    retry_item,
    run_once,
)
from services.orgs import resolve_org


def register(sub: Subparsers) -> Commands:
    inbound = group(sub, "inbound", "processing mailboxes: inbound mail turned into data")
    add = common(inbound.add_parser("add", help="designate an account as a processing mailbox"))
    org_flag(add)
    add.add_argument("--account", required=True, type=int, metavar="ID", help="the account (postroom accounts list)")
    add.add_argument("--folder", default="INBOX", help="where mail is taken from (default: INBOX)")
    add.add_argument("--processed", default="processed", help="where processed mail goes (default: processed)")
    add.add_argument("--failed", default="failed", help="where mail that failed goes (default: failed)")
    add.add_argument(
        "--move",
        default="auto",
        metavar="|".join(MOVE_MODES),
        help="auto: MOVE where the server has it; copy-delete: always COPY + delete + expunge",
    )
    json_flag(add)
    run = common(inbound.add_parser("run", help="take the new mail of every processing mailbox"))
    run.add_argument("--once", action="store_true", help="one run, then exit (the worker runs it continuously)")
    json_flag(run)
    ls = common(inbound.add_parser("list", help="what the processing mailboxes took, newest first"))
    org_flag(ls)
    ls.add_argument("--status", metavar="|".join(STATUSES), help="only processed or only failed items")
    ls.add_argument("--limit", type=int, default=100, metavar="N")
    json_flag(ls)
    retry = common(inbound.add_parser("retry", help="process a failed item again from its kept message"))
    org_flag(retry)
    retry.add_argument("id", type=int, metavar="ID", help="the item (postroom inbound list)")
    json_flag(retry)
    return {
        ("inbound", "add"): inbound_add,
        ("inbound", "run"): inbound_run,
        ("inbound", "list"): inbound_list,
        ("inbound", "retry"): inbound_retry,
    }


def inbound_add(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        box_id = add_mailbox(s, app.config, args.org, args.account, args.folder, args.processed, args.failed, args.move)
    output(args, {"id": box_id}, f"Processing mailbox {box_id}: account {args.account}, mail taken from {args.folder}.")
    return 0


def inbound_run(app: App, args: argparse.Namespace) -> int:
    if not args.once:
        raise CommandError(
            "Add --once to run the processing mailboxes once ('postroom worker' runs them continuously)."
        )
    result = run_once(app.config, app.sessions)
    text = f"{result.processed} processed, {result.failed} failed."
    for error in result.errors:
        text += f"\nNot reached: {error}"
    output(args, {"processed": result.processed, "failed": result.failed}, text)
    return 1 if result.errors and not (result.processed or result.failed) else 0


def _line(item: InboundItemView) -> str:
    routed = f" → {item.routed_kind} {item.routed_id}" if item.routed_kind else ""
    why = f" — {item.reason}" if item.reason else ""
    return f"{item.id:>6}  {item.status:<9} {item.sender or '-'}  {item.subject[:60]!r}{routed}{why}"


def inbound_list(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        items = list_items(s, resolve_org(s, args.org), args.status, max(1, min(args.limit, 1000)))
    output(args, [i.as_json() for i in items], "\n".join(_line(i) for i in items) or "Nothing taken yet.")
    return 0


def inbound_retry(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        org = resolve_org(s, args.org)
    item = retry_item(app.config, app.sessions, org, args.id)
    text = f"Item {item.id}: {item.status}." + (f" {item.reason}" if item.reason else "")
    output(args, item.as_json(), text)
    return 0 if item.status == "processed" else 1
