"""``postroom send`` and ``postroom outbox list | retry``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.common import App, CommandError, Commands, Subparsers, common, group, json_flag, org_flag, output
from services.outbox import OutboxEntry, OutboxStatus, list_outbox, retry_message
from services.sending import Invite, SendRequest, send_message


def register(sub: Subparsers) -> Commands:
    se = common(
        sub.add_parser(
            "send",
            help="send a message through an account (from a template or as given), optionally tracked",
            description="Send a message and keep one clean copy in Sent. Either --subject and --body-file "
            "(Markdown) or --template (with --data-file for its placeholders).",
        )
    )
    se.add_argument("--account", type=int, required=True, metavar="ID")
    se.add_argument("--to", required=True, action="append", help="a recipient (repeat for several)")
    se.add_argument("--cc", action="append", default=[], help="a Cc recipient (repeat for several)")
    se.add_argument("--bcc", action="append", default=[], help="a Bcc recipient, named in no header (repeatable)")
    se.add_argument("--subject")
    se.add_argument("--body-file", metavar="FILE", help="UTF-8 Markdown of the body ('-' for stdin)")
    se.add_argument("--template", metavar="NAME", help="a template (see 'postroom templates list')")
    se.add_argument("--data-file", metavar="FILE", help="a JSON object with the template's placeholders")
    se.add_argument("--applicant", type=int, metavar="ID", help="the applicant this message is for")
    se.add_argument(
        "--track", action="store_true", help="one copy per recipient with its own open pixel and links (honest opens)"
    )
    se.add_argument("--in-reply-to", metavar="MSGID", help="Message-ID of the message answered")
    se.add_argument("--invite-start", metavar="ISO", help="an interview invitation: start, e.g. 2027-01-12T10:00+01:00")
    se.add_argument("--invite-end", metavar="ISO", help="the invitation's end")
    se.add_argument("--invite-location", metavar="L", default="", help="where, or a video link")
    se.add_argument("--invite-timezone", metavar="TZ", help="the invitation's time zone, e.g. Europe/Berlin")
    json_flag(se)
    ob = group(sub, "outbox", "messages sent through Postroom and their state")
    obl = common(
        ob.add_parser("list", help="every outbox message, newest first, with its state and refused recipients")
    )
    obl.add_argument("--status", choices=[str(s) for s in OutboxStatus], help="only this state")
    org_flag(obl, "only this organisation's messages (default: every organisation's)")
    json_flag(obl)
    obr = common(
        ob.add_parser("retry", help="send a queued or failed message now; an uncertain one is looked for in Sent first")
    )
    obr.add_argument("id", type=int, metavar="ID", help="the outbox message (see 'postroom outbox list')")
    obr.add_argument(
        "--force", action="store_true", help="send an uncertain message again although it may already have gone out"
    )
    json_flag(obr)
    return {("send",): send, ("outbox", "list"): list_, ("outbox", "retry"): retry}


def read_body(path: str, what: str = "Body file") -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{what} {path} does not exist.") from None
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path} is not UTF-8 text.") from None
    except OSError as exc:
        raise CommandError(f"{what} {path} cannot be read: {exc.strerror}.") from None


def send(app: App, args: argparse.Namespace) -> int:
    if args.template is None and (args.subject is None or args.body_file is None):
        raise CommandError("Give --subject and --body-file, or --template.")
    if args.template is not None and (args.subject is not None or args.body_file is not None):
        raise CommandError("Give either --template or --subject and --body-file, not both.")
    if args.data_file is not None and args.template is None:
        raise CommandError("--data-file fills a template's placeholders; name the template with --template.")
    req = SendRequest(
        account_id=args.account,
        to=args.to,
        cc=args.cc,
        bcc=args.bcc,
        subject=args.subject,
        text=read_body(args.body_file) if args.body_file is not None else None,
        template=args.template,
        data=read_data(args.data_file) if args.data_file is not None else None,
        applicant_id=args.applicant,
        track=args.track,
        in_reply_to=args.in_reply_to,
        invite=_invite(args),
    )
    outcome = send_message(app.config, app.sessions, req)
    entry = outcome.entry
    text = entry.message_id
    if outcome.tracked and entry.status == OutboxStatus.SENT:
        text += "\n" + MODES.get(outcome.mode, "")
    return report_outcome(args, entry, outcome.as_json(), text)


MODES = {
    "smtp": "Tracked: one SMTP transaction per recipient, every copy with the same visible headers.",
    "api": "Tracked: one copy per recipient naming only that recipient (this account's provider takes recipients "
    "from the headers); the copy in Sent shows everyone.",
}


def _invite(args: argparse.Namespace) -> Invite | None:
    if args.invite_start is None and args.invite_end is None:
        if args.invite_location or args.invite_timezone:
            raise CommandError("--invite-location and --invite-timezone need --invite-start and --invite-end.")
        return None
    if args.invite_start is None or args.invite_end is None:
        raise CommandError("An invitation needs both --invite-start and --invite-end.")
    return Invite(
        start=when(args.invite_start, "--invite-start"),
        end=when(args.invite_end, "--invite-end"),
        location=args.invite_location,
        timezone=args.invite_timezone,
    )


def when(text: str, flag_name: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{flag_name} must be a date and time like 2027-01-12T10:00+01:00, not {text!r}.") from None


def read_data(path: str) -> dict[str, Any]:
    """The JSON object of a --data-file."""
    text = read_body(path, "Data file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"Data file {path} is not JSON: {exc.msg} on line {exc.lineno}.") from None
    if not isinstance(data, dict):
        raise CommandError(f"Data file {path} must hold a JSON object ({{...}}), not a {type(data).__name__}.")
    return data


def report_outcome(args: argparse.Namespace, entry: OutboxEntry, data: Any, text: str) -> int:
    """Print what became of a message sent now: 0 if it went out (refused recipients and a
    missing Sent copy are warnings), else one sentence on stderr and 1."""
    if entry.status == OutboxStatus.SENT or args.json:
        output(args, data, text)
    if entry.status == OutboxStatus.SENT:
        if entry.refused:
            refused = ", ".join(f"{addr} ({why})" for addr, why in entry.refused.items())
            print(f"postroom: warning: the server refused {refused}; the others were sent.", file=sys.stderr)
        if entry.error:
            print(f"postroom: warning: {entry.error}", file=sys.stderr)
        return 0
    what, recipients = f"Message {entry.id} ({entry.message_id})", ", ".join(entry.recipients)
    if entry.status == OutboxStatus.UNCERTAIN:
        sentence = (
            f"{what} may have gone out although the answer was lost ({entry.error}), so it is not sent again: "
            f"check the Sent folder of {entry.account_email} or ask {recipients}, then run "
            f"'postroom outbox retry {entry.id}' (it looks in Sent first; --force sends it anyway)."
        )
    elif entry.status == OutboxStatus.FAILED:
        sentence = f"{what} was refused and not sent: {entry.error}."
    else:
        sentence = (
            f"{what} could not be sent yet ({entry.error}); it stays in the outbox and the worker tries again "
            f"later, or run 'postroom outbox retry {entry.id}'."
        )
    print(f"postroom: error: {sentence}", file=sys.stderr)
    return 1


def list_(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        entries = list_outbox(s, args.status, args.org)
    if args.json:
        output(args, [e.as_json() for e in entries], "")
        return 0
    if not entries:
        print(f"No {args.status} messages in the outbox." if args.status else "The outbox is empty.")
    for e in entries:
        when = (e.sent_at or e.created_at).strftime("%Y-%m-%d %H:%M")
        print(f"{e.id:>5}  {e.status:<9}  {when}  {e.message_id}  to {', '.join(e.recipients)}  {e.subject!r}")
        for addr, why in e.refused.items():
            print(f"{'':>7}refused: {addr} ({why})")
        for addr, b in e.bounced.items():
            why = ": ".join(str(v) for v in (b["status"], b["reason"]) if v) or "no reason given"
            print(f"{'':>7}bounced: {addr} ({why})")
        if e.error:
            print(f"{'':>7}{'note' if e.status == OutboxStatus.SENT else 'error'}: {e.error}")
    return 0


def retry(app: App, args: argparse.Namespace) -> int:
    outcome = retry_message(app.config, app.sessions, args.id, force=args.force)
    e = outcome.entry
    data = e.as_json() | {"found_in_sent": outcome.found_in_sent, "already_sent": outcome.already_sent}
    if outcome.already_sent:
        text = f"Message {e.id} ({e.message_id}) was already sent; nothing was done."
    elif outcome.found_in_sent:
        text = (
            f"Message {e.id} ({e.message_id}) is in the Sent folder of {e.account_email}, so it did go out: "
            "marked sent, and not sent again."
        )
    else:
        text = f"Message {e.id} ({e.message_id}) sent."
    return report_outcome(args, e, data, text)
