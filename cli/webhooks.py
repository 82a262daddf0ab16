"""``postroom webhooks add|list|rotate|delete|deliveries``: subscribe a URL to an organisation's
events (its signing secret is shown once), list the subscriptions, rotate a secret (the new one
shown once; the previous one keeps signing beside it for 24 hours), delete one, and read the
delivery log."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, group, json_flag, org_flag, output
from services.orgs import resolve_org
from services.webhooks import (
    EVENTS,
    add_subscription,
    delete_subscription,
    list_deliveries,
    list_subscriptions,
    rotate_secret,
)


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
    ls = common(hooks.add_parser("list", help="the organisation's subscriptions (never their secrets)"))
    org_flag(ls)
    json_flag(ls)
    rotate = common(hooks.add_parser("rotate", help="a new signing secret (printed once); the old one signs for 24 h"))
    rotate.add_argument("id", type=int, metavar="ID")
    org_flag(rotate)
    json_flag(rotate)
    delete = common(hooks.add_parser("delete", help="remove a subscription with its queued deliveries and log"))
    delete.add_argument("id", type=int, metavar="ID")
    org_flag(delete)
    json_flag(delete)
    return {
        ("webhooks", "add"): webhooks_add,
        ("webhooks", "list"): webhooks_list,
        ("webhooks", "rotate"): webhooks_rotate,
        ("webhooks", "delete"): webhooks_delete,
        ("webhooks", "deliveries"): webhooks_deliveries,
    }


def webhooks_add(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        sub_id, secret = add_subscription(s, app.config, resolve_org(s, args.org), args.url, args.events.split(","))
    text = f"Subscription {sub_id}. Its signing secret, shown only now:\n{secret}"
    output(args, {"id": sub_id, "secret": secret}, text)
    return 0


def webhooks_list(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        subs = list_subscriptions(s, app.config, resolve_org(s, args.org))
    text = "\n".join(
        f"{v.id:>4}  {'active' if v.active else 'disabled':<8}  {v.url}  {','.join(v.events)}"
        + (f"\n      {v.disabled_reason}" if v.disabled_reason else "")
        for v in subs
    )
    output(args, [v.as_json() for v in subs], text or "No webhook subscriptions.")
    return 0


def webhooks_rotate(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        secret, until = rotate_secret(s, app.config, resolve_org(s, args.org), args.id)
    text = (
        f"Subscription {args.id}. Its new signing secret, shown only now:\n{secret}\n"
        f"The previous secret signs deliveries too until {until:%Y-%m-%d %H:%M} UTC."
    )
    output(args, {"secret": secret}, text)
    return 0


def webhooks_delete(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        delete_subscription(s, resolve_org(s, args.org), args.id)
    output(args, {"id": args.id, "deleted": True}, f"Subscription {args.id} is deleted; nothing more is sent to it.")
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
