"""``postroom send`` and ``postroom outbox list | retry``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.common import App, CommandError, Commands, Subparsers, common, group, json_flag, output
from services.outbox import OutboxEntry, OutboxStatus, SendRequest, list_outbox, retry_message, send_message


def register(sub: Subparsers) -> Commands:
    se = common(sub.add_parser("send", help="send a message through an account and keep it in Sent"))
    se.add_argument("--account", type=int, required=True, metavar="ID")
    se.add_argument("--to", required=True, action="append", help="a recipient (repeat for several)")
    se.add_argument("--subject", required=True)
    se.add_argument("--body-file", required=True, metavar="FILE", help="UTF-8 text of the body ('-' for stdin)")
    se.add_argument("--in-reply-to", metavar="MSGID", help="Message-ID of the message answered")
    json_flag(se)
    ob = group(sub, "outbox", "messages sent through Postroom and their state")
    obl = common(
        ob.add_parser("list", help="every outbox message, newest first, with its state and refused recipients")
    )
    obl.add_argument("--status", choices=[str(s) for s in OutboxStatus], help="only this state")
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


def read_body(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"Body file {path} does not exist.") from None
    except UnicodeDecodeError:
        raise CommandError(f"Body file {path} is not UTF-8 text.") from None
    except OSError as exc:
        raise CommandError(f"Body file {path} cannot be read: {exc.strerror}.") from None


def send(app: App, args: argparse.Namespace) -> int:
    req = SendRequest(
        account_id=args.account,
        to=args.to,
        subject=args.subject,
        text=read_body(args.body_file),
        in_reply_to=args.in_reply_to,
    )
    entry = send_message(app.config, app.sessions, req)
    data = {
        "id": entry.id,
        "message_id": entry.message_id,
        "status": str(entry.status),
        "refused": dict(entry.refused),
        "error": entry.error,
    }
    return _outcome(args, entry, data, entry.message_id)


def _outcome(args: argparse.Namespace, entry: OutboxEntry, data: Any, text: str) -> int:
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
        entries = list_outbox(s, args.status)
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
    return _outcome(args, e, data, text)
