"""``postroom sync --once`` and ``postroom threads``.

Run in a terminal (and without ``--json``), ``postroom sync`` shows how far the account it is
syncing got on one line that updates in place, e.g.
``alice@example.com: 1,240 of 10,000 messages, 2 of 7 folders`` (:mod:`services.progress`,
polled from a thread), and clears it before the summary. Otherwise its output is the summary only.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import threading
from types import TracebackType
from typing import TextIO

from sqlalchemy.orm import Session, sessionmaker

from cli.common import App, Commands, Subparsers, common, json_flag, output
from services.progress import syncing_in_this_process
from services.threads import account_threads
from sync.scheduler import sync_all

PROGRESS_EVERY = 0.5  # seconds between two looks at the progress


def register(sub: Subparsers) -> Commands:
    sy = common(sub.add_parser("sync", help="sync mailboxes once"))
    sy.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    sy.add_argument("--account", type=int, metavar="ID", help="only this account")
    json_flag(sy)
    th = common(sub.add_parser("threads", help="conversation threads in one account"))
    th.add_argument("--account", type=int, required=True, metavar="ID")
    json_flag(th)
    return {("sync",): sync_once, ("threads",): threads}


class ProgressLine:
    """While the block runs, a line on ``out`` (a terminal) that shows the progress of the accounts
    this process syncs, rewritten in place (``\\r``) every ``every`` seconds when it changed; cleared
    when the block ends. The sync itself knows nothing of it: a thread reads the progress from
    the database (:func:`services.progress.syncing_in_this_process`)."""

    def __init__(self, sessions: sessionmaker[Session], out: TextIO, every: float = PROGRESS_EVERY) -> None:
        self.sessions, self.out, self.every = sessions, out, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postroom-progress", daemon=True)
        self._shown = ""

    def __enter__(self) -> ProgressLine:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._show("")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.sessions() as s:
                    text = "; ".join(p.summary() for p in syncing_in_this_process(s))
                if not self._stop.is_set():
                    self._show(text)
            except Exception:  # the database busy or away, the terminal gone: the summary says what matters
                pass
            self._stop.wait(self.every)

    def _show(self, text: str) -> None:
        width = shutil.get_terminal_size().columns - 1  # a line that wraps cannot be rewritten
        text = text if len(text) <= width else text[: max(width - 3, 0)] + "..."
        if text == self._shown:
            return
        self.out.write("\r" + text + " " * (len(self._shown) - len(text)) + ("\r" if not text else ""))
        self.out.flush()
        self._shown = text


def sync_once(app: App, args: argparse.Namespace) -> int:
    sessions = app.sessions
    show = not args.json and sys.stdout.isatty()
    with ProgressLine(sessions, sys.stdout) if show else contextlib.nullcontext():
        results = sync_all(app.config, sessions, args.account)
    if args.json:
        output(
            args,
            [
                {
                    "account_id": r.account_id,
                    "ok": r.ok,
                    "status": r.status,
                    "error": r.error,
                    "new": r.new,
                    "skipped": r.skipped,
                    "seconds": round(r.seconds, 3),
                }
                for r in results
            ],
            "",
        )
    else:
        if not results:
            print("No accounts to sync; add one with 'postroom accounts add-imap' (or add-gmail, add-graph, add-ews).")
        for r in results:
            print(r.summary())
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(f"{r.account_id} ({r.email})" for r in failed)
        print(f"postroom: error: {len(failed)} of {len(results)} accounts failed to sync: {names}.", file=sys.stderr)
        return 1
    return 0


def threads(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        found = account_threads(s, args.account)
    text = "\n".join(f"{t['id']:>6}  {len(t['message_ids']):>3} msgs  {t['subject']}" for t in found)  # type: ignore[arg-type]
    output(args, found, text or "No threads yet.")
    return 0
