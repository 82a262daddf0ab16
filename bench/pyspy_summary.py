"""Summarise a ``py-spy record -f raw`` file: where a worker's samples go.

    .venv/bin/python bench/pyspy_summary.py bench/results/accounts-300-12s-pyspy-w1c4.txt [--top 25]

Prints the share of all samples per leaf function ("self") and per function anywhere on
the stack ("inclusive", each counted once per stack), for the sync threads only
(idle threads waiting on a socket or a lock are listed separately).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

IDLE = re.compile(r"\b(wait|_wait_for_tstate_lock|select|poll|recv_into|readinto|sleep|accept)\b")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    selfc: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    with open(args.path) as fh:
        lines = fh.read().splitlines()
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        total += count
        leaf = frames[-1]
        if IDLE.search(leaf.split(" (")[0]):
            idle += count
        selfc[leaf] += count
        for f in set(frames):
            incl[f] += count
    print(f"{total} samples, {idle} ({100 * idle / max(total, 1):.0f} %) in a wait/recv/select leaf")
    print("\nself (leaf):")
    for f, c in selfc.most_common(args.top):
        print(f"  {100 * c / total:5.1f} %  {f}")
    print("\ninclusive:")
    for f, c in incl.most_common(args.top * 2):
        print(f"  {100 * c / total:5.1f} %  {f}")


if __name__ == "__main__":
    main()
