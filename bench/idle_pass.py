"""The cost of one no-change sync pass, measured serially in one thread (issue 3).

    .venv/bin/python bench/idle_pass.py --passes 200 --accounts 20

It starts a throwaway Dovecot (tests/rig, ``high_performance=True``) with ``--accounts``
users, each with a small INBOX and the rig's usual folders, adds them as IMAP accounts
to a fresh SQLite database (or ``--postgres URL``: a scratch database), syncs each once
(the initial pass), then runs ``--passes`` passes round-robin over the accounts through
:meth:`sync.scheduler.Scheduler.sync` — exactly what the worker does per account — with
nothing changed on the server. Per pass it reports the median and mean of:

  worker CPU   process CPU time (user + system) of this process
  wall         elapsed time
  Dovecot CPU  the Dovecot process tree (master, reaped children, live descendants)
  SQL          statements and transactions (SQLAlchemy events)
  IMAP         commands sent by imaplib (greeting counted as one round trip)

These are the numbers behind "CPU per account-sync" in docs/benchmarks.md; the
accounts benchmark (bench/accounts_bench.py) shows what they mean for a whole worker.
"""

from __future__ import annotations

import argparse
import cProfile
import imaplib
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from accounts_bench import Db, tiny_messages, tree_cpu, users_for  # noqa: E402
from sqlalchemy import event  # noqa: E402

from services.applicants import add_applicant  # noqa: E402
from sync.scheduler import Scheduler  # noqa: E402
from tests.rig.mailrig import MailRig  # noqa: E402


class Counters:
    def __init__(self) -> None:
        self.sql = 0
        self.tx = 0
        self.imap = 0


def instrument(db: Db, counters: Counters) -> None:
    @event.listens_for(db.engine, "before_cursor_execute")
    def _stmt(*_: Any) -> None:
        counters.sql += 1

    @event.listens_for(db.engine, "commit")
    def _commit(*_: Any) -> None:
        counters.tx += 1

    original = imaplib.IMAP4._command

    def counted(self: imaplib.IMAP4, name: str, *args: Any) -> Any:
        counters.imap += 1
        return original(self, name, *args)

    imaplib.IMAP4._command = counted  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=200)
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--messages", type=int, default=3, help="messages in each account's INBOX")
    ap.add_argument("--applicant", action="store_true", help="make the first sender an applicant (history + bodies)")
    ap.add_argument("--postgres", default=None)
    ap.add_argument("--no-tuning", action="store_true", help="Dovecot with the rig's default config")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the passes (slows them)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="idle-pass-")
    os.chmod(base, 0o755)
    rig = MailRig(
        root=os.path.join(base, "rig"), users=users_for(args.accounts), smtp="none", high_performance=not args.no_tuning
    )
    db = None
    try:
        rig.start()
        for i, user in enumerate(rig.users):
            rig.seed_maildir(user, tiny_messages(user, i, args.messages))
        db = Db(base, args.postgres)
        ids = db.add_accounts(rig)
        if args.applicant:
            with db.sessions.begin() as s:
                add_applicant(s, "Sender Zero", ["sender0@example.org"])
        scheduler = Scheduler(db.config, db.sessions, owner="bench:0:idle")
        for i in ids:
            assert scheduler.sync(i, force=True).ok
        counters = Counters()
        instrument(db, counters)
        dovecot = rig.procs["dovecot"].pid
        samples: dict[str, list[float]] = {k: [] for k in ("cpu_ms", "wall_ms", "dovecot_ms", "sql", "tx", "imap")}
        profiler = cProfile.Profile() if args.profile else None
        for k in range(args.passes):
            account = ids[k % len(ids)]
            c0, w0, d0 = time.process_time(), time.perf_counter(), tree_cpu(dovecot)
            s0, t0, i0 = counters.sql, counters.tx, counters.imap
            if profiler is not None:
                profiler.enable()
            result = scheduler.sync(account)
            if profiler is not None:
                profiler.disable()
            c1, w1 = time.process_time(), time.perf_counter()
            time.sleep(0.02)  # let Dovecot's processes finish the logout before reading their CPU
            d1 = tree_cpu(dovecot)
            assert result.ok and result.new == 0, result.summary()
            samples["cpu_ms"].append(1000 * (c1 - c0))
            samples["wall_ms"].append(1000 * (w1 - w0))
            samples["dovecot_ms"].append(1000 * (d1 - d0))
            samples["sql"].append(counters.sql - s0)
            samples["tx"].append(counters.tx - t0)
            samples["imap"].append(counters.imap - i0)
        out = {
            "passes": args.passes,
            "accounts": args.accounts,
            "messages_per_account": args.messages,
            "folders_per_account": len(result.folders),
            "database": "postgresql" if args.postgres else "sqlite",
            **{f"{k}_median": statistics.median(v) for k, v in samples.items()},
            **{f"{k}_mean": statistics.fmean(v) for k, v in samples.items()},
        }
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
    finally:
        if db is not None:
            db.close()
        rig.cleanup()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
