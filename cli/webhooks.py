"""``postroom webhooks add|deliveries``: subscribe a URL to an organisation's events (its
signing secret is shown once), and read the delivery log."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, group, json_flag, org_flag, output
from services.orgs import resolve_org
from services.webhooks import EVENTS, add_subscription, list_deliveries


def register(sub: Subparsers) -> Commands:
    hooks = group(sub, "webhooks", "signed webhooks announcing an organisation's events")
    add = common(hooks.add_parser("add", help="subscribe a URL to events (prints its signing secret, once)"))
    org_flag(add)
    add.add_argument("--url", required=True, help="where deliveries are POSTed (https)")
    add.add_argument("--events", required=True, metavar="E[,E...]", help=f"comma-separated, of: {', '.join(EVENTS)}")
    json_flag(add)
    log = common(hooks.add_parser("deliveries", help="the latest deliveries, newest first"))
    org_flag(log)
    log.add_argument("--limit", type=int, default=100, metavar="N")
    json_flag(log)
    return {("webhooks", "add"): webhooks_add, ("webhooks", "deliveries"): webhooks_deliveries}


def webhooks_add(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        sub_id, secret = add_subscription(s, app.config, resolve_org(s, args.org), args.url, args.events.split(","))
    text = f"Subscription {sub_id}. Its signing secret, shown only now:\n{secret}"
    output(args, {"id": sub_id, "secret": secret}, text)
    return 0


def webhooks_deliveries(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        rows = list_deliveries(s, resolve_org(s, args.org), max(1, min(args.limit, 1000)))
    text = "\n".join(
        f"{d.id:>6}  {d.created_at:%Y-%m-%d %H:%M}  {d.event:<24} {d.status:<9} {d.attempts} attempt(s)  "
        f"{d.last_status_code or '-'}  {d.url}"
        for d in rows
    )
    output(args, [d.as_json() for d in rows], text or "No deliveries yet.")
    return 0
