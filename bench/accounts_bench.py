# ruff: noqa: E501
"""Sync at scale (issue 3): N idle accounts kept in sync by one or two worker processes.

    .venv/bin/python bench/accounts_bench.py --accounts 1000 --interval 12 --concurrency 4,8,16
    .venv/bin/python bench/accounts_bench.py --accounts 10000 --interval 120 --window 1 --concurrency 8
    .venv/bin/python bench/accounts_bench.py --accounts 500 --interval 6 --postgres postgresql://postgres@127.0.0.1:5432/test

One run starts a throwaway Dovecot (tests/rig, with ``high_performance=True``: imap-login
``service_count = 0`` + ``process_min_avail``, larger process/client limits) with N users
written to its passwd file up front, seeds every user's INBOX Maildir directly with a few
small messages, creates a fresh Postroom database (SQLite, or a scratch PostgreSQL database
with ``--postgres``) with N IMAP accounts (``services.accounts.add_imap_account`` in bulk), and
runs one initial pass over all of them (two worker processes with a huge interval) so
that every account is idle: a pass finds nothing new.

Then, for every (workers, concurrency) configuration — alternating, in ``--rounds`` rounds,
so that 1 and 2 workers are measured side by side under the same machine noise — it
spreads ``next_sync_at`` uniformly over one interval (a steady state), starts
``python -m cli worker`` processes (POSTROOM_SYNC_INTERVAL, a config file for
``[sync] concurrency``), waits one interval of warm-up and measures for ``--window``
intervals:

  staleness   every second, now - last_success_at for every account (read from the
              database); p50 / p99 / max over all samples in the window
  syncs/s     last_success_at changes seen by that sampler (each account at most once a
              second, the interval is >= several seconds)
  CPU         utime+stime of the worker processes from /proc/<pid>/stat, and of Dovecot
              (master + cutime/cstime of reaped children + every live descendant),
              divided by the account-syncs completed in the window

Scaling: what matters for a worker is the sync *rate*, N / interval. 1,000 accounts at
12 s = 83.3 syncs/s = 10,000 accounts at 120 s. Staleness is reported in seconds and
as a multiple of the interval; the target (p99 <= 150 s at 120 s) is 1.25 intervals.

Results: bench/results/<name>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import namedtuple
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import bindparam, create_engine, text, update  # noqa: E402

from postroom.config import load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.models import MailAccount  # noqa: E402
from services.accounts import ImapAccountRequest, add_imap_account  # noqa: E402
from tests.rig.mailrig import MailRig  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
CLK = os.sysconf("SC_CLK_TCK")
BUCKET = 0.05  # staleness histogram resolution, seconds
Msg = namedtuple("Msg", "raw date flags")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ /proc
def proc_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (ppid, own cpu s, reaped-children cpu s)."""
    out: dict[int, tuple[int, float, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw.rsplit(")", 1)[1].split()
        # rest[0] = state (field 3); utime = field 14 -> rest[11]
        out[int(name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK, (int(rest[13]) + int(rest[14])) / CLK)
    return out


def tree_cpu(root: int, table: dict[int, tuple[int, float, float]] | None = None) -> float:
    """CPU seconds of a process, its reaped children, and every live descendant."""
    table = table or proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            total += table[pid][1] + table[pid][2]
        stack.extend(kids.get(pid, ()))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, in seconds."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / CLK, sum(vals) / CLK


# ------------------------------------------------------------------ setup
def tiny_messages(user: str, i: int, k: int) -> list[Msg]:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    out = []
    for j in range(k):
        raw = (
            f"From: Sender {j} <sender{j}@example.org>\r\nTo: {user}\r\n"
            f"Subject: Hello {i}.{j}\r\nDate: {(now + dt.timedelta(hours=j)).strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            f"Message-ID: <a{i}.m{j}@bench.example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
            f"Small message {j} of account {i}.\r\n"
        ).encode()
        out.append(Msg(raw, now + dt.timedelta(hours=j), ("\\Seen",) if j else ()))
    return out


def users_for(n: int) -> dict[str, str]:
    return {f"u{i:05d}@example.test": f"pw{i:05d}" for i in range(n)}


class Db:
    def __init__(self, base: str, pg_url: str | None) -> None:
        self.dir = tempfile.mkdtemp(prefix="accounts-bench-", dir=base)
        self.pg_admin = None
        self.pg_db = None
        self.url = f"sqlite:///{self.dir}/postroom.db"
        if pg_url:
            self.pg_admin = create_engine(
                pg_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
            )
            self.pg_db = f"bench_{uuid.uuid4().hex[:10]}"
            with self.pg_admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{self.pg_db}"'))
            self.url = pg_url.rsplit("/", 1)[0] + "/" + self.pg_db
        self.env = {"POSTROOM_DATA_DIR": self.dir, "POSTROOM_SECRET_KEY": SECRET, "POSTROOM_DATABASE_URL": self.url}
        self.config = load_config(env=self.env)
        self.engine = make_engine(self.config.database)
        upgrade(self.engine)
        self.sessions = make_sessionmaker(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        if self.pg_admin is not None:
            with self.pg_admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)'))
            self.pg_admin.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    def add_accounts(self, rig: MailRig) -> list[int]:
        ids = []
        with self.sessions.begin() as s:
            for user, pw in rig.users.items():
                a = add_imap_account(s, self.config, ImapAccountRequest(
                    email=user, username=user, password=pw, imap_host="127.0.0.1", imap_port=rig.ports["imap"],
                    imap_security="none", smtp_host="127.0.0.1", smtp_port=rig.ports["smtp_submission"], smtp_security="none"))  # fmt: skip
                ids.append(a.id)
        return ids

    def last_success(self) -> dict[int, Any]:
        with self.engine.connect() as c:
            return dict(c.execute(text("SELECT id, last_success_at FROM mail_accounts")).all())  # type: ignore[arg-type]

    def statuses(self) -> dict[str, int]:
        with self.engine.connect() as c:
            return dict(c.execute(text("SELECT status, count(*) FROM mail_accounts GROUP BY status")).all())  # type: ignore[arg-type]

    def spread(self, ids: list[int], start: float, interval: float, rng: random.Random) -> None:
        """Steady state: due times uniform over one interval from ``start``; no leases."""
        rows = [{"i": i, "t": dt.datetime.fromtimestamp(start + rng.uniform(0, interval), dt.UTC)} for i in ids]
        with self.sessions.begin() as s:
            s.connection().execute(
                update(MailAccount.__table__)
                .where(MailAccount.__table__.c.id == bindparam("i"))
                .values(next_sync_at=bindparam("t"), lease_owner=None, lease_expires_at=None, status="active"),
                rows,
            )


def to_epoch(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v)
    if v.tzinfo is None:
        v = v.replace(tzinfo=dt.UTC)
    return float(v.timestamp())


def start_workers(
    db: Db, count: int, concurrency: int, interval: float, tag: str
) -> list[tuple[subprocess.Popen[bytes], Any]]:
    cfg = Path(db.dir, f"worker-{tag}.toml")
    cfg.write_text(f"[sync]\nconcurrency = {concurrency}\n")
    env = {
        **os.environ,
        **db.env,
        "POSTROOM_SYNC_INTERVAL": str(interval),
        "POSTROOM_CONFIG": str(cfg),
        "PYTHONPATH": str(ROOT),
    }
    procs = []
    for k in range(count):
        logf = open(Path(db.dir, f"worker-{tag}-{k}.log"), "ab")  # noqa: SIM115 (closed in stop_workers)
        p = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        procs.append((p, logf))
    return procs


def stop_workers(procs: list[tuple[subprocess.Popen[bytes], Any]]) -> list[int | None]:
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p, f in procs:
        try:
            codes.append(p.wait(60))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
        f.close()
    return codes


def initial_pass(db: Db, n: int, concurrency: int) -> float:
    t0 = time.monotonic()
    procs = start_workers(db, 2, concurrency, 10**7, "initial")
    try:
        while True:
            done = sum(1 for v in db.last_success().values() if v is not None)
            if done >= n:
                break
            if any(p.poll() is not None for p, _ in procs):
                raise RuntimeError("a worker exited during the initial pass")
            log(f"initial pass: {done}/{n}")
            time.sleep(5)
    finally:
        stop_workers(procs)
    return time.monotonic() - t0


# ------------------------------------------------------------------ one measured run
def pct(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    want = q * total
    acc = 0
    for b in sorted(hist):
        acc += hist[b]
        if acc >= want:
            return (b + 1) * BUCKET
    return float("nan")


def measure(
    db: Db,
    rig: MailRig,
    ids: list[int],
    workers: int,
    concurrency: int,
    interval: float,
    window: float,
    rng: random.Random,
    py_spy: str | None = None,
) -> dict[str, Any]:
    n = len(ids)
    start = time.time() + 2.0  # a worker process needs ~1 s to import and start
    db.spread(ids, start, interval, rng)
    raw_prev = db.last_success()
    prev = {i: to_epoch(v) for i, v in raw_prev.items()}
    procs = start_workers(db, workers, concurrency, interval, f"w{workers}c{concurrency}")
    dovecot = rig.procs["dovecot"].pid
    warm_end = start + interval
    end = warm_end + window * interval
    hist: dict[int, int] = {}
    worst = 0.0
    syncs = 0
    per_sec: list[int] = []
    cpu0: dict[str, float] = {}
    self0 = 0.0
    samples = 0
    sampler_s = 0.0
    spy = None
    try:
        next_tick = time.time() + 1.0
        measuring = False
        while True:
            time.sleep(max(0.0, next_tick - time.time()))
            next_tick += 1.0
            now = time.time()
            if any(p.poll() is not None for p, _ in procs):
                raise RuntimeError("a worker process exited during the run")
            if not measuring and now >= warm_end:
                table = proc_table()
                busy, tot = machine_cpu()
                cpu0 = {
                    "worker": sum(tree_cpu(p.pid, table) for p, _ in procs),
                    "dovecot": tree_cpu(dovecot, table),
                    "busy": busy,
                    "total": tot,
                    "t": now,
                }
                self0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
                measuring = True
                if py_spy:  # sample every thread of the first worker during the window (adds ~5 % CPU)
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-p",
                            str(procs[0][0].pid),
                            "-d",
                            str(int(window * interval)),
                            "-r",
                            "50",
                            "-f",
                            "raw",
                            "-o",
                            f"{py_spy}-w{workers}c{concurrency}.txt",
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                    )
            if now >= end:
                break
            t_s = time.perf_counter()
            cur = db.last_success()
            changed = 0
            for i, v in cur.items():
                if v is not None and raw_prev.get(i) != v:
                    raw_prev[i] = v
                    changed += 1
                    prev[i] = to_epoch(v)
            if measuring:
                syncs += changed
                per_sec.append(changed)
                samples += 1
                for i in ids:
                    e = prev.get(i)
                    st = now - e if e is not None else now - start + interval
                    b = int(st / BUCKET)
                    hist[b] = hist.get(b, 0) + 1
                    if st > worst:
                        worst = st
            sampler_s += time.perf_counter() - t_s
        table = proc_table()
        busy, tot = machine_cpu()
        now = time.time()
        cpu1 = {
            "worker": sum(tree_cpu(p.pid, table) for p, _ in procs),
            "dovecot": tree_cpu(dovecot, table),
            "busy": busy,
            "total": tot,
            "t": now,
        }
        self1 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    finally:
        if spy is not None:
            spy.wait(30)
        codes = stop_workers(procs)
    secs = cpu1["t"] - cpu0["t"]
    wcpu = cpu1["worker"] - cpu0["worker"]
    dcpu = cpu1["dovecot"] - cpu0["dovecot"]
    statuses = db.statuses()
    log_errors = 0
    for k in range(workers):
        path = Path(db.dir, f"worker-w{workers}c{concurrency}-{k}.log")
        if path.exists():
            log_errors += sum(
                1 for line in path.read_text(errors="replace").splitlines() if "WARNING" in line or "ERROR" in line
            )
    res = {
        "accounts": n,
        "interval_s": interval,
        "required_syncs_per_s": n / interval,
        "workers": workers,
        "concurrency": concurrency,
        "window_s": round(secs, 1),
        "syncs": syncs,
        "syncs_per_s": syncs / secs,
        "kept_up": syncs / secs >= 0.97 * n / interval,
        "staleness_p50_s": pct(hist, 0.50),
        "staleness_p99_s": pct(hist, 0.99),
        "staleness_max_s": worst,
        "staleness_p99_intervals": pct(hist, 0.99) / interval,
        "staleness_max_intervals": worst / interval,
        "worker_cpu_s": wcpu,
        "worker_cpu_ms_per_sync": 1000 * wcpu / max(syncs, 1),
        "worker_cpu_cores": wcpu / secs,
        "dovecot_cpu_s": dcpu,
        "dovecot_cpu_ms_per_sync": 1000 * dcpu / max(syncs, 1),
        "machine_busy_cores": (cpu1["busy"] - cpu0["busy"]) / (cpu1["total"] - cpu0["total"]) * os.cpu_count(),  # type: ignore[operator]
        "bench_sampler_cpu_s": self1 - self0,
        "sampler_wall_s": sampler_s,
        "samples": samples,
        "syncs_per_s_series": per_sec,
        "statuses_after": statuses,
        "worker_log_warnings": log_errors,
        "exit_codes": codes,
    }
    return res


def table_md(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | conc. | accounts | interval | needed/s | syncs/s | kept up | staleness p50 | p99 | max | p99/interval | worker CPU ms/sync | worker cores | Dovecot CPU ms/sync | machine busy cores |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['workers']} | {r['concurrency']} | {r['accounts']} | {r['interval_s']:g} s | {r['required_syncs_per_s']:.1f} | {r['syncs_per_s']:.1f} | {'yes' if r['kept_up'] else 'no'} | "
            f"{r['staleness_p50_s']:.1f} s | {r['staleness_p99_s']:.1f} s | {r['staleness_max_s']:.1f} s | {r['staleness_p99_intervals']:.2f} | "
            f"{r['worker_cpu_ms_per_sync']:.1f} | {r['worker_cpu_cores']:.2f} | {r['dovecot_cpu_ms_per_sync']:.1f} | {r['machine_busy_cores']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument(
        "--interval",
        type=float,
        default=12.0,
        help="sync.interval, seconds (scale with --accounts: same N/interval = same rate)",
    )
    ap.add_argument("--window", type=float, default=3.0, help="measured intervals after one interval of warm-up")
    ap.add_argument("--concurrency", default="8", help="comma-separated sync.concurrency values to try")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker-process counts")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--messages", type=int, default=3, help="messages per account")
    ap.add_argument("--initial-concurrency", type=int, default=8)
    ap.add_argument("--postgres", default=None, help="admin URL; a scratch database is created and dropped")
    ap.add_argument("--no-tuning", action="store_true", help="Dovecot with the rig's default config")
    ap.add_argument(
        "--py-spy",
        action="store_true",
        help="py-spy record the first worker (raw stacks: bench/results/<name>-pyspy-*.txt)",
    )
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    n = args.accounts
    name = args.name or f"accounts-{n}-{args.interval:g}s" + ("-pg" if args.postgres else "")
    concs = [int(x) for x in args.concurrency.split(",")]
    workers = [int(x) for x in args.workers.split(",")]
    base = tempfile.mkdtemp(prefix="accounts-bench-")
    os.chmod(base, 0o755)  # Dovecot's auth process (user dovecot) reads rig/etc/passwd
    rng = random.Random(3)
    out: dict[str, Any] = {
        "name": name,
        "args": vars(args),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "sqlite": sqlite3.sqlite_version,
            "loadavg_start": os.getloadavg(),
        },
        "equivalence": f"{n} accounts at {args.interval:g} s = {n / args.interval:.1f} syncs/s = {round(n / args.interval * 120)} accounts at 120 s",
        "runs": [],
    }
    rig = MailRig(root=os.path.join(base, "rig"), users=users_for(n), smtp="none", high_performance=not args.no_tuning)
    db = None
    try:
        t = time.monotonic()
        rig.start()
        for i, user in enumerate(rig.users):
            rig.seed_maildir(user, tiny_messages(user, i, args.messages))
        out["setup_rig_s"] = time.monotonic() - t
        log(f"rig up, {n} users seeded in {out['setup_rig_s']:.1f}s")
        db = Db(base, args.postgres)
        t = time.monotonic()
        ids = db.add_accounts(rig)
        out["setup_accounts_s"] = time.monotonic() - t
        log(f"{len(ids)} accounts added in {out['setup_accounts_s']:.1f}s")
        out["initial_pass_s"] = initial_pass(db, n, args.initial_concurrency)
        log(f"initial pass done in {out['initial_pass_s']:.1f}s: {db.statuses()}")
        for rnd in range(args.rounds):
            order = [(w, c) for c in concs for w in workers]
            if rnd % 2:
                order.reverse()
            for w, c in order:
                log(
                    f"round {rnd + 1}: {w} worker(s), concurrency {c}, {n} accounts at {args.interval:g}s, window {args.window:g} intervals"
                )
                spy_out = str(ROOT / "bench" / "results" / f"{name}-pyspy") if args.py_spy and rnd == 0 else None
                r = measure(db, rig, ids, w, c, args.interval, args.window, rng, spy_out)
                r["round"] = rnd + 1
                out["runs"].append(r)
                log(
                    f"  -> {r['syncs_per_s']:.1f}/s (need {r['required_syncs_per_s']:.1f}), p50 {r['staleness_p50_s']:.1f}s p99 {r['staleness_p99_s']:.1f}s "
                    f"max {r['staleness_max_s']:.1f}s, worker {r['worker_cpu_ms_per_sync']:.2f} ms/sync ({r['worker_cpu_cores']:.2f} cores), "
                    f"dovecot {r['dovecot_cpu_ms_per_sync']:.2f} ms/sync, machine {r['machine_busy_cores']:.2f} cores busy, {r['statuses_after']}"
                )
        out["machine"]["loadavg_end"] = os.getloadavg()
    finally:
        if db is not None:
            db.close()
        rig.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    res_dir = ROOT / "bench" / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / f"{name}.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"\n## {out['equivalence']}\n")
    print(table_md(out["runs"]))
    # medians per configuration
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in out["runs"]:
        groups.setdefault((r["workers"], r["concurrency"]), []).append(r)
    if args.rounds > 1:
        print("\nmedians:")
        for (w, c), rs in sorted(groups.items()):
            med = {
                k: statistics.median(r[k] for r in rs)
                for k in (
                    "syncs_per_s",
                    "staleness_p50_s",
                    "staleness_p99_s",
                    "worker_cpu_ms_per_sync",
                    "dovecot_cpu_ms_per_sync",
                )
            }
            print(f"  {w} worker(s) c={c}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
