# ruff: noqa: E501
"""Crash safety at scale (issue 3): kill -9 a 10,000-message initial sync at 20 random moments.

    .venv/bin/python bench/crash_bench.py                      # 10,000 messages, 20 kills
    .venv/bin/python bench/crash_bench.py --messages 2000 --kills 5 --batch-size 100

A throwaway Dovecot (tests/rig) gets N messages of the deterministic corpus (seed 1) in
one INBOX; the corpus's most frequent sender is an applicant, so bodies are fetched and
stored too. ``postroom sync --once`` is started as a subprocess and, once it has
committed progress (more message copies + stored bodies than before it started), it
is killed with SIGKILL after a further uniform random delay (0..--max-delay s). The dead
process still holds the account's lease (sync.lease_seconds, 600 s); the benchmark expires it
by hand in the database, which is what waiting would do (--no-expire-leases to see the
next runs skip the account and exit 0). This is
repeated --kills times; then one clean ``postroom sync --once`` finishes the sync.

Checks, against the server's UID list (IMAP UID SEARCH ALL) and against a reference
database filled by one uninterrupted sync of the same mailbox:
  * lost:        server UIDs without a message copy, Message-IDs without an email row
  * duplicated:  message copies per (folder, UID) > 1, emails per Message-ID > 1,
                 copies per Message-ID in INBOX > 1
  * equal:       copies (UID, Message-ID), emails, threads, history, bodies == reference

Results: bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.utils import parseaddr
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, update  # noqa: E402

from postroom import db  # noqa: E402
from postroom.config import load_config  # noqa: E402
from postroom.models import Email, MailAccount, MessageCopy  # noqa: E402
from tests.rig.corpus import generate  # noqa: E402
from tests.rig.mailrig import MailRig  # noqa: E402
from tests.sync.helpers import database_snapshot  # noqa: E402

POSTROOM = [sys.executable, "-m", "cli"]
SECRET = "bench-secret-key-0123456789abcdef"
USER, PW = "alice@example.test", "alicepw"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_env(base: str, name: str, rig: MailRig, cfg: Path) -> dict[str, str]:
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "POSTROOM_DATA_DIR": d,
        "POSTROOM_SECRET_KEY": SECRET,
        "POSTROOM_DATABASE_URL": f"sqlite:///{d}/postroom.db",
        "POSTROOM_CONFIG": str(cfg),
        "BOX_PW": PW,
    }


def setup(env: dict[str, str], rig: MailRig, applicant: str) -> None:
    port = str(rig.ports["imap"])
    for args in (
        ["accounts", "add-imap", "--email", USER, "--username", USER, "--password-env", "BOX_PW",
         "--imap-host", "127.0.0.1", "--imap-port", port, "--imap-security", "none",
         "--smtp-host", "127.0.0.1", "--smtp-port", str(rig.ports["smtp_submission"]), "--smtp-security", "none"],
        ["applicants", "add", "--name", "A", "--email", applicant],
    ):  # fmt: skip
        subprocess.run([*POSTROOM, *args], env=env, check=True, capture_output=True, cwd=ROOT)


def indexed(env: dict[str, str]) -> int:
    """Committed progress: message copies plus stored bodies."""
    engine = db.make_engine(load_config(env=env).database)
    try:
        with engine.connect() as conn:
            copies = conn.execute(select(func.count()).select_from(MessageCopy)).scalar_one()
            bodies = conn.execute(
                select(func.count()).select_from(Email).where(Email.body_id.is_not(None))
            ).scalar_one()
            return int(copies) + int(bodies)
    finally:
        engine.dispose()


def expire_leases(env: dict[str, str]) -> int:
    """What waiting sync.lease_seconds would do: the dead process's lease runs out now."""
    engine = db.make_engine(load_config(env=env).database)
    try:
        with engine.begin() as conn:
            past = datetime.now(UTC) - timedelta(seconds=1)
            res = conn.execute(
                update(MailAccount.__table__)
                .where(MailAccount.__table__.c.lease_owner.is_not(None))
                .values(lease_expires_at=past)
            )
            return int(res.rowcount)
    finally:
        engine.dispose()


def snapshot(env: dict[str, str]) -> dict[str, Any]:
    return database_snapshot(load_config(env=env))


def server_uids(rig: MailRig) -> list[str]:
    conn = imaplib.IMAP4("127.0.0.1", rig.ports["imap"])
    conn.login(USER, PW)
    conn.select("INBOX", readonly=True)
    _typ, data = conn.uid("SEARCH", "ALL")
    conn.logout()
    return sorted((x.decode() for x in (data[0] or b"").split()), key=int)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument(
        "--batch-size", type=int, default=100, help="sync.batch_size: smaller = more commits to land between"
    )
    ap.add_argument("--max-delay", type=float, default=0.4, help="random delay after the first new commit, seconds")
    ap.add_argument(
        "--no-expire-leases",
        dest="expire_leases",
        action="store_false",
        help="do not expire the killed process's lease by hand (then the next runs skip the account for sync.lease_seconds)",
    )
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    name = args.name or f"crash-{args.messages}"
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="crash-bench-")
    os.chmod(base, 0o755)
    out: dict[str, Any] = {"name": name, "args": vars(args), "loadavg_start": os.getloadavg(), "kills": []}
    rig = MailRig(root=os.path.join(base, "rig"), users={USER: PW}, smtp="none")
    try:
        rig.start()
        t = time.monotonic()
        items = list(generate(args.messages, seed=1))
        rig.seed_maildir(USER, items)
        out["seed_s"] = time.monotonic() - t
        senders = Counter(parseaddr(message_from_bytes(i.raw)["From"])[1] for i in items)
        applicant = senders.most_common(1)[0][0]
        msgids = sorted(i.msgid for i in items)
        del items
        log(f"seeded {args.messages} messages in {out['seed_s']:.1f}s; applicant {applicant}")
        cfg = Path(base, "crash.toml")
        cfg.write_text(f"[sync]\nbatch_size = {args.batch_size}\n")
        env = make_env(base, "crashed", rig, cfg)
        setup(env, rig, applicant)

        t_all = time.monotonic()
        interrupted = 0
        for k in range(args.kills):
            before = indexed(env)
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [*POSTROOM, "sync", "--once"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 60
            while proc.poll() is None and indexed(env) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            delay = rng.uniform(0.0, args.max_delay)
            time.sleep(delay)
            landed = proc.poll() is None
            if landed:
                proc.send_signal(signal.SIGKILL)
                interrupted += 1
            code = proc.wait()
            after = indexed(env)
            expired = expire_leases(env) if args.expire_leases else 0
            out["kills"].append(
                {
                    "n": k + 1,
                    "progress_before": before,
                    "progress_after": after,
                    "delay_s": round(delay, 3),
                    "killed_mid_sync": landed,
                    "exit": code,
                    "leases_expired_by_hand": expired,
                    "run_s": round(time.monotonic() - t0, 2),
                }
            )
            log(
                f"kill {k + 1}: {before} -> {after} copies+bodies, {'SIGKILL mid-sync' if landed else f'finished first (exit {code})'}"
            )
        t0 = time.monotonic()
        final = subprocess.run([*POSTROOM, "sync", "--once"], env=env, cwd=ROOT, capture_output=True, text=True)
        out["final_run_s"] = time.monotonic() - t0
        out["final_exit"] = final.returncode
        out["crashed_total_s"] = time.monotonic() - t_all
        out["interrupted"] = interrupted
        log(
            f"final clean run: exit {final.returncode} in {out['final_run_s']:.1f}s; {interrupted} kills landed mid-sync"
        )

        ref_env = make_env(base, "reference", rig, cfg)
        setup(ref_env, rig, applicant)
        t0 = time.monotonic()
        ref = subprocess.run([*POSTROOM, "sync", "--once"], env=ref_env, cwd=ROOT, capture_output=True, text=True)
        out["reference_run_s"] = time.monotonic() - t0
        assert ref.returncode == 0, ref.stderr

        crashed, reference = snapshot(env), snapshot(ref_env)
        uids = server_uids(rig)
        inbox = [(u, m) for f, u, m in crashed["copies"] if f == "INBOX"]
        copy_uids = Counter(u for u, _ in inbox)
        copy_mids = Counter(m for _, m in inbox)
        email_mids = Counter(crashed["emails"])
        checks = {
            "server_uids": len(uids),
            "inbox_copies": len(inbox),
            "lost_uids": len(set(uids) - set(copy_uids)),
            "extra_uids": len(set(copy_uids) - set(uids)),
            "duplicated_uids": sum(c - 1 for c in copy_uids.values() if c > 1),
            "lost_message_ids": len(set(msgids) - set(email_mids)),
            "duplicated_emails_by_message_id": sum(c - 1 for c in email_mids.values() if c > 1),
            "duplicated_copies_by_message_id": sum(c - 1 for c in copy_mids.values() if c > 1),
            "corpus_message_ids": len(msgids),
            "corpus_duplicate_message_ids": len(msgids) - len(set(msgids)),
            "history_entries": len(crashed["history"]),
            "bodies": len(crashed["bodies"]),
        }
        for key in ("copies", "emails", "threads", "history", "bodies"):
            checks[f"equal_to_reference_{key}"] = crashed[key] == reference[key]
        out["checks"] = checks
        out["ok"] = (
            final.returncode == 0
            and checks["lost_uids"] == checks["extra_uids"] == checks["duplicated_uids"] == 0
            and checks["lost_message_ids"]
            == checks["duplicated_emails_by_message_id"]
            == checks["duplicated_copies_by_message_id"]
            == 0
            and all(v for k, v in checks.items() if k.startswith("equal_to_reference"))
        )
        out["loadavg_end"] = os.getloadavg()
    finally:
        rig.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    res = ROOT / "bench" / "results"
    res.mkdir(exist_ok=True)
    (res / f"{name}.json").write_text(json.dumps(out, indent=1))
    print(
        json.dumps(
            {
                k: out.get(k)
                for k in ("ok", "interrupted", "checks", "crashed_total_s", "final_run_s", "reference_run_s")
            },
            indent=1,
        )
    )
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
