"""``postroom applicants add`` and ``postroom history``."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, group, json_flag, org_flag, output
from services.applicants import add_applicant, applicant_history


def register(sub: Subparsers) -> Commands:
    app = group(sub, "applicants", "applicants whose email history is kept")
    add = common(app.add_parser("add", help="add an applicant and backfill their history"))
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True, action="append", help="an address (repeat for several)")
    org_flag(add)
    json_flag(add)
    hi = common(sub.add_parser("history", help="an applicant's email history, oldest first"))
    hi.add_argument("--applicant", type=int, required=True, metavar="ID")
    json_flag(hi)
    return {("applicants", "add"): add_, ("history",): history}


def add_(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        applicant, backfilled = add_applicant(s, args.name, args.email, args.org)
        applicant_id = applicant.id
    output(args, {"id": applicant_id, "history_entries": backfilled}, str(applicant_id))
    return 0


def history(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        items = applicant_history(s, args.applicant)
    text = "\n".join(
        f"{(i.date.strftime('%Y-%m-%d %H:%M') if i.date else '?'):<16} {i.direction:<8} {i.subject}  {i.message_id}"
        for i in items
    )
    output(args, [i.as_json() for i in items], text or "No messages yet.")
    return 0
