"""Peak memory of fetching large bodies (issue 9): chunks bounded by size, not only by count.

    .venv/bin/python bench/body_memory.py --messages 60 --size-mb 3 --rounds 3

One throwaway Dovecot (tests/rig) with one user whose INBOX holds ``--messages`` messages of
about ``--size-mb`` MB each (an incompressible attachment). Each measurement is a fresh child
process with a fresh SQLite database that adds the mailbox and runs one full pass with
``sync.body_policy = "all"`` through the real engine (``postroom sync --once``'s code path),
and reports the peak of memory Python held during the pass (``tracemalloc``: what Postroom
keeps alive at once, whatever the allocator does), the process's peak RSS (``VmHWM`` —
``ru_maxrss`` would carry over the parent's peak across exec — with glibc's
``MALLOC_MMAP_THRESHOLD_`` pinned at 128 KiB so that freed bodies go back to the system
instead of staying in the heap) and the wall time (under tracemalloc, so slower than
a real pass). Two variants, alternating in ``--rounds`` rounds so that both see the same
machine noise:

  count-only   bodies fetched 50 at a time whatever their size (what Postroom did before:
               ``sync.body_chunk_bytes`` set out of reach)
  size-bound   the default: at most 50 and at most ``sync.body_chunk_bytes`` (16 MiB) by the
               sizes in the header index

Results: JSON on stdout (medians and every run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

VARIANTS = {"count-only": 2**36, "size-bound": 16 * 1024 * 1024}
USER, PASSWORD = "big@example.test", "bigpw"


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def child(args: argparse.Namespace) -> None:
    from postroom import db
    from postroom.config import load_config
    from services.accounts import ImapAccountRequest, add_imap_account
    from sync.scheduler import sync_all

    config = load_config(
        env={
            "POSTROOM_DATA_DIR": args.data,
            "POSTROOM_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "HOME": args.data,
        }
    )
    import dataclasses

    config = dataclasses.replace(
        config,
        sync=dataclasses.replace(config.sync, body_policy="all", body_chunk_bytes=args.chunk_bytes),
    )
    engine = db.make_engine(config.database)
    db.upgrade(engine)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as s:
        account = add_imap_account(
            s,
            config,
            ImapAccountRequest(USER, USER, PASSWORD, "127.0.0.1", args.port, "none", "127.0.0.1", 1, "none"),
        )
        account_id = account.id
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    (result,) = sync_all(config, sessions, account_id)
    wall = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1]
    assert result.ok, result.summary()
    bodies = sum(f.bodies for f in result.folders)
    print(
        json.dumps(
            {
                "peak_held_mb": traced_peak / 2**20,
                "peak_rss_mb": _vm_hwm_kb() / 1024,
                "wall_s": wall,
                "bodies": bodies,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=60)
    ap.add_argument("--size-mb", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--port", type=int)
    ap.add_argument("--chunk-bytes", type=int)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from tests.rig.corpus import Item
    from tests.rig.mailrig import MailRig
    from tests.rig.messages import make_message

    size = int(args.size_mb * 1024 * 1024)
    with MailRig(users={USER: PASSWORD}) as rig:
        items = []
        for i in range(args.messages):
            raw = make_message(message_id=f"<big{i}@x.test>", body="see attachment")
            attachment = os.urandom(size * 3 // 4).hex()[:size]  # hex: incompressible enough, 7-bit
            raw = raw.replace(b"see attachment", attachment.encode())
            items.append(Item(raw=raw, date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), flags=(), msgid="", thread=0))
        rig.seed_maildir(USER, items)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, chunk in VARIANTS.items():
                with tempfile.TemporaryDirectory() as data:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "--data", data, "--port", str(rig.ports["imap"]),
                         "--chunk-bytes", str(chunk)],
                        capture_output=True, text=True, check=True,
                        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
                    )  # fmt: skip
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    summary = {
        name: {
            "peak_held_mb_median": round(statistics.median(r["peak_held_mb"] for r in rs), 1),
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in rs), 1),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in rs), 2),
            "bodies": rs[0]["bodies"],
        }
        for name, rs in runs.items()
    }
    print(json.dumps({"messages": args.messages, "size_mb": args.size_mb, "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
