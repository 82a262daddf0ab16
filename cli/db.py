"""``postroom db upgrade``."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, group
from postroom import db


def register(sub: Subparsers) -> Commands:
    dbs = group(sub, "db", "database schema")
    common(dbs.add_parser("upgrade", help="create or upgrade the schema to the newest version"))
    return {("db", "upgrade"): upgrade}


def upgrade(app: App, args: argparse.Namespace) -> int:
    rev = db.upgrade(db.make_engine(app.config.database))
    print(f"Database at revision {rev}.")
    return 0
