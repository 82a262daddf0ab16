"""``postroom tracking`` and ``postroom tracking-ranges update``."""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import App, Commands, Subparsers, common, group, json_flag, output
from services.tracking import APPLE_FEED, tracking_report, update_apple_ranges


def register(sub: Subparsers) -> Commands:
    tr = common(
        sub.add_parser(
            "tracking",
            help="who opened, clicked and replied to a tracked message (people only; every hit with its verdict)",
        )
    )
    tr.add_argument("--message-id", required=True, metavar="MSGID", help="the message's Message-ID (<> optional)")
    json_flag(tr)
    ranges = group(sub, "tracking-ranges", "Apple's Mail Privacy Protection ranges, used to tell its prefetch apart")
    up = common(
        ranges.add_parser(
            "update",
            help="replace the list in the data directory with Apple's current one (or a file or URL of your own)",
        )
    )
    up.add_argument(
        "--source",
        metavar="URL_OR_FILE",
        help=f"a CSV feed or a list of ranges, one a line (default: {APPLE_FEED})",
    )
    json_flag(up)
    return {("tracking",): report, ("tracking-ranges", "update"): update}


def report(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        data = tracking_report(s, args.message_id)
    output(args, data, _table(data))
    return 0


def _table(data: dict[str, Any]) -> str:
    people = data["recipients"]
    opened = sum(r["opened"] for r in people)
    clicked = sum(r["clicked"] for r in people)
    replied = sum(r["replied"] for r in people)
    lines = [
        f"{data['message_id']}: {len(people)} recipients; opened by {opened}, clicked by {clicked}, "
        f"replied by {replied} (people only; machine hits are listed but not counted)",
        "",
    ]
    width = max([len("RECIPIENT"), *(len(r["address"]) for r in people)])
    lines.append(f"{'RECIPIENT':<{width}}  OPENED  CLICKED  REPLIED  AUTO-REPLY  BOUNCED  HITS")
    for r in people:
        hits = r["events"]
        machines = sum(e["machine"] for e in hits)
        yes = {True: "yes", False: "no"}
        lines.append(
            f"{r['address']:<{width}}  {yes[r['opened']]:<6}  {yes[r['clicked']]:<7}  {yes[r['replied']]:<7}  "
            f"{yes[r['auto_replied']]:<10}  {_bounced(r):<7}  {len(hits)}"
            + (f" ({machines} by machines)" if machines else "")
        )
        if r["bounced"] and r["bounce_reason"]:
            lines.append(f"{'':<{width}}    bounced: {r['bounce_reason']}")
        for e in hits:
            who = "machine" if e["machine"] else "person"
            lines.append(f"{'':<{width}}    {e['at'][:19].replace('T', ' ')}  {e['kind']:<5}  {who:<7}  {e['reason']}")
    return "\n".join(lines)


def _bounced(r: dict[str, Any]) -> str:
    """``no``, ``yes`` or the bounce's RFC 3463 status (``5.1.1``)."""
    if not r["bounced"]:
        return "no"
    return str(r["bounce_status"] or "yes")


def update(app: App, args: argparse.Namespace) -> int:
    count = update_apple_ranges(app.config, args.source)
    where = app.config.data_dir / "apple-relay-egress.txt"
    data = {"ranges": count, "file": str(where), "source": args.source or APPLE_FEED}
    note = ""
    if app.config.tracking.apple_ranges_file:
        note = (
            f"\nNote: tracking.apple_ranges_file is set ({app.config.tracking.apple_ranges_file}), "
            "so that file stays in use."
        )
    output(args, data, f"{count} Apple ranges written to {where}; a running server reads them within a minute.{note}")
    return 0
