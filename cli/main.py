"""``postroom``: the argument parser built one command group at a time, and one way to fail."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sqlalchemy.exc import OperationalError

from cli import (
    accounts,
    applicants,
    db,
    demo,
    inbound,
    invites,
    keys,
    mail,
    orgs,
    outbox,
    quarantine,
    running,
    templates,
    tracking,
    webhooks,
)
from cli.common import App, Commands, Parser, common, flag
from postroom.config import load_config
from postroom.db import driver_message
from postroom.logs import setup_logging
from services.errors import ServerError, UserError

GROUPS = (
    db,
    orgs,
    accounts,
    applicants,
    mail,
    outbox,
    invites,
    running,
    quarantine,
    keys,
    templates,
    tracking,
    webhooks,
    inbound,
    demo,
)


def build_parser() -> tuple[Parser, Commands]:
    """The whole command line, and which handler runs each command."""
    root = Parser(prog="postroom", description="Sync recruiters' mailboxes and keep applicants' email history.")
    common(root)
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    commands: Commands = {}
    for module in GROUPS:
        commands |= module.register(sub)
    return root, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    key = tuple(v for v in (args.command, getattr(args, f"{args.command}_command", None)) if v)
    try:
        config = load_config(getattr(args, "config", None))
        setup_logging(config.logging)
        return commands[key](App(config), args)
    except UserError as exc:  # a field is named as this command's flag
        return _fail(exc.sentence(flag))
    except ServerError as exc:  # a mail server's answer, in one sentence
        return _fail(str(exc))
    except OperationalError as exc:  # the database went away mid-command
        return _fail(f"The database cannot be reached: {driver_message(exc)}.")
    except KeyboardInterrupt:
        print("postroom: interrupted.", file=sys.stderr)
        return 130


def _fail(sentence: str) -> int:
    print(f"postroom: error: {sentence.strip() or 'failed'}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
