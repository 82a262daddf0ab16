"""``postroom invites reschedule | cancel``: change an interview invitation sent before."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, group, json_flag
from cli.outbox import MODES, report_outcome, when
from services.sending import update_invitation


def register(sub: Subparsers) -> Commands:
    inv = group(sub, "invites", "interview invitations sent with 'postroom send --invite-start ...'")
    re = common(
        inv.add_parser(
            "reschedule",
            help="move the interview: the same calendar event, updated in the recipients' calendars",
        )
    )
    re.add_argument("id", type=int, metavar="ID", help="the outbox message that carried the invitation")
    re.add_argument("--start", metavar="ISO", help="the new start, e.g. 2027-01-12T10:00+01:00")
    re.add_argument("--end", metavar="ISO", help="the new end (default: as long as before)")
    re.add_argument("--location", metavar="L", help="a new place or video link")
    json_flag(re)
    ca = common(inv.add_parser("cancel", help="call the interview off (METHOD:CANCEL to every recipient)"))
    ca.add_argument("id", type=int, metavar="ID", help="the outbox message that carried the invitation")
    json_flag(ca)
    return {("invites", "reschedule"): reschedule, ("invites", "cancel"): cancel}


def reschedule(app: App, args: argparse.Namespace) -> int:
    sent = update_invitation(
        app.config,
        app.sessions,
        args.id,
        start=when(args.start, "--start") if args.start else None,
        end=when(args.end, "--end") if args.end else None,
        location=args.location,
    )
    text = f"Rescheduled: {sent.entry.message_id}" + ("\n" + MODES.get(sent.mode, "") if sent.tracked else "")
    return report_outcome(args, sent.entry, sent.as_json(), text)


def cancel(app: App, args: argparse.Namespace) -> int:
    sent = update_invitation(app.config, app.sessions, args.id, cancel=True)
    return report_outcome(args, sent.entry, sent.as_json(), f"Cancelled: {sent.entry.message_id}")
