"""What every command group shares: the parser class, common flags, output, the lazily opened
database, and one sentence for what went wrong."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any, NoReturn

from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom.config import Config
from postroom.errors import UserError


class CommandError(UserError):
    """A command cannot be carried out as given; the message names the flags themselves."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        msg = message[0].upper() + message[1:] if message else message
        self.exit(2, f"{self.prog}: error: {msg.rstrip('.')}. See '{self.prog} --help'.\n")


Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]


class App:
    """The config of one command, and its database sessions, opened on first use."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._sessions: sessionmaker[Session] | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            engine = db.make_engine(self.config.database)
            if engine.dialect.name == "sqlite":
                db.upgrade(engine)  # the embedded database keeps itself current
            else:
                db.check_schema(engine)
            self._sessions = db.make_sessionmaker(engine)
        return self._sessions


Handler = Callable[[App, argparse.Namespace], int]
Commands = dict[tuple[str, ...], Handler]


def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML config file (default: $POSTROOM_CONFIG, else the embedded defaults)",
    )
    return p


def json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def org_flag(p: argparse.ArgumentParser, help: str = "the organisation (default: the default one)") -> None:
    p.add_argument("--org", type=int, metavar="ID", help=help)


def group(sub: Subparsers, name: str, help: str) -> Subparsers:
    """A command with subcommands (``postroom accounts ...``)."""
    parser = common(sub.add_parser(name, help=help))
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", parser_class=Parser)
    inner.required = True
    return inner


def output(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text)


def env_secret(var: str, flag: str) -> str:
    """A secret read from the environment variable a flag names (never from the command line)."""
    value = os.environ.get(var)
    if value is None:
        raise CommandError(f"Environment variable {var} (named by {flag}) is not set.")
    return value


# fields whose flag is not simply "--" + the field: secrets come from named environment variables
_FLAGS = {
    "password": "--password-env",
    "refresh_token": "--refresh-token-env",
    "body": "--body-file",  # texts and data come from files
    "data": "--data-file",
}


def flag(field: str) -> str:
    """The flag that gives a service's field: ``imap_security`` -> ``--imap-security``."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))
