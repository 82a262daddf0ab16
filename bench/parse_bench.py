"""Header parsing cost of two trees side by side (issue 9: cleaning hostile values where they are parsed).

    .venv/bin/python bench/parse_bench.py --base /tmp/wt-base --messages 10000 --rounds 5

Parses the header blocks of ``--messages`` messages of the deterministic corpus (tests/rig/corpus.py,
seed 1) with ``postroom.mime.parse_headers`` of this tree and of ``--base`` (a checkout of an
earlier commit: ``git worktree add /tmp/wt-base <commit>``), each in a fresh child process, alternating
in ``--rounds`` rounds so both see the same machine noise. This tree also computes the fingerprint
that keys an email (``postroom.mime.fingerprint``), as the indexer does. Reports the median time per
message for each and the ratio per round; also the hostile set (tests/rig/poison.py) through this tree.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import pickle, sys, time
sys.path.insert(0, sys.argv[1])
from postroom import mime
from postroom.addresses import normalise_address
blocks = pickle.load(open(sys.argv[2], "rb"))
fingerprint = getattr(mime, "fingerprint", None)
best = None
for _ in range(3):
    t = time.perf_counter()
    for raw in blocks:
        h = mime.parse_headers(raw)
        if fingerprint is not None:
            fingerprint(normalise_address(h.from_[0].email) if h.from_ else None, h.date, h.subject)
    took = time.perf_counter() - t
    best = took if best is None else min(best, took)
print(best)
"""


def run(tree: Path, data: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(data)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.rig.corpus import generate
    from tests.rig.poison import poison_cases

    blocks = [item.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" for item in generate(args.messages, 1)]
    poison = [case.raw for case in poison_cases()]
    with tempfile.TemporaryDirectory() as tmp:
        corpus, hostile = Path(tmp, "corpus.pickle"), Path(tmp, "poison.pickle")
        corpus.write_bytes(pickle.dumps(blocks))
        hostile.write_bytes(pickle.dumps(poison))
        base, this, ratios = [], [], []
        for _ in range(args.rounds):
            b, t = run(args.base, corpus), run(ROOT, corpus)
            base.append(b)
            this.append(t)
            ratios.append(t / b)
            print(f"base {b * 1e6 / len(blocks):.2f} us/msg, this {t * 1e6 / len(blocks):.2f} us/msg", file=sys.stderr)
        poison_s = run(ROOT, hostile)
    print(
        json.dumps(
            {
                "messages": len(blocks),
                "base_us_per_message_median": round(statistics.median(base) * 1e6 / len(blocks), 2),
                "this_us_per_message_median": round(statistics.median(this) * 1e6 / len(blocks), 2),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratios": [round(r, 3) for r in ratios],
                "hostile_set": {"messages": len(poison), "ms": round(poison_s * 1e3, 1)},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
