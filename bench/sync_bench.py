# ruff: noqa: E501
"""Sync benchmark: Postroom's IMAP sync against the protocol floor, side by side.

    .venv/bin/python bench/sync_bench.py --messages 10000          # what `make bench` runs
    .venv/bin/python bench/sync_bench.py --messages 2000 --rounds 3 --no-cold
    .venv/bin/python bench/sync_bench.py --messages 10000 --postgres postgresql://postgres@127.0.0.1:5432/test

One run starts a throwaway Dovecot (tests/rig), seeds N messages of the deterministic
corpus (tests/rig/corpus.py) straight into a Maildir, registers applicants whose
addresses occur in ~10 % of the messages, then measures, alternating and repeated:

  floor     plain imaplib: connect + LOGIN + SELECT + one UID FETCH 1:* of flags, size,
            date and the header fields Postroom indexes (no parsing beyond imaplib's);
  initial   sync.scheduler.sync_all (one account) on a fresh database (end to end: LIST,
            headers, parse, index, threads, history, bodies of applicant mail);
  nochange  the same again with nothing changed on the server.

Each is measured "warm" (Dovecot's index cache and the page cache hot from the run
before) and, if possible, "cold" (every dovecot.index.cache deleted and
/proc/sys/vm/drop_caches written first). Medians are reported. The no-change pass
is also run through a counting TCP proxy (bench/imap_proxy.py, its own process) to
count IMAP commands and bytes, at N and at --small messages.

The time spent fetching and storing bodies is measured by wrapping
``sync.bodies.BodyFetcher.wanted_by_folder`` and ``.fetch`` with a timer inside this process (no product
file is changed); the proxied initial pass gives the wire time per command kind.

Results: bench/results/<name>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import email.utils
import glob
import imaplib
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.headerregistry import Address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from imap_proxy import CountingProxy  # noqa: E402
from provider_bench_common import pick_applicants  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

import sync.bodies as sync_bodies  # noqa: E402
from postroom.config import load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.models import HistoryEntry, MailAccount  # noqa: E402
from services.accounts import ImapAccountRequest, add_imap_account  # noqa: E402
from services.applicants import add_applicant  # noqa: E402
from sync.scheduler import sync_all  # noqa: E402
from tests.rig.corpus import Item, generate  # noqa: E402
from tests.rig.mailrig import MailRig  # noqa: E402

HEADER_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES FROM TO CC BCC REPLY-TO SENDER SUBJECT DATE"
FLOOR_ITEMS = f"(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
SECRET = "bench-secret-key-0123456789abcdef"
# same-length names and passwords, so the no-change passes at N and --small send the same bytes
BIG_USER, BIG_PW = "alice@example.test", "alicepw"
SMALL_USER, SMALL_PW = "carol@example.test", "carolpw"

# ------------------------------------------------------------------ body-time instrumentation
BODY_SECONDS = [0.0]


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            BODY_SECONDS[0] += time.perf_counter() - t0

    return timed


# finding the wanted bodies, then fetching and storing them, folder by folder
for _name in ("wanted_by_folder", "fetch"):
    setattr(sync_bodies.BodyFetcher, _name, _timed(getattr(sync_bodies.BodyFetcher, _name)))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ corpus + applicants
def _addresses(raw: bytes) -> set[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    msg = email.message_from_string(head + "\r\n\r\n")
    fields = msg.get_all("From", []) + msg.get_all("To", []) + msg.get_all("Cc", [])
    return {a.lower() for _, a in email.utils.getaddresses(fields) if "@" in a}


def seed(rig: MailRig, user: str, n: int, owner: Address) -> tuple[list[set[str]], int]:
    """Write n corpus messages into the user's INBOX; returns per-message address sets and bytes."""
    per_msg: list[set[str]] = []

    def items() -> Iterator[Item]:
        for it in generate(n, seed=1, owner=owner):
            per_msg.append(_addresses(it.raw))
            yield it

    count, size = rig.seed_maildir(user, items())
    assert count == n
    return per_msg, size


# ------------------------------------------------------------------ cache control
def drop_caches(rig: MailRig) -> bool:
    """Delete Dovecot's cache files and the kernel page cache; False if not permitted."""
    for path in glob.glob(os.path.join(rig.p("mail"), "**", "dovecot.index.cache"), recursive=True):
        os.unlink(path)
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ the floor
def floor_fetch(port: int, user: str, password: str, expect: int) -> float:
    t0 = time.perf_counter()
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    conn.login(user, password)
    typ, data = conn.select("INBOX")
    assert typ == "OK", data
    typ, data = conn.uid("FETCH", "1:*", FLOOR_ITEMS)
    assert typ == "OK", data
    got = sum(1 for x in data if isinstance(x, tuple))
    conn.logout()
    dt = time.perf_counter() - t0
    assert got == expect, (got, expect)
    return dt


# ------------------------------------------------------------------ Postroom instances
@dataclass
class Instance:
    workdir: str
    config: Any
    engine: Any
    sessions: Any
    account_id: int
    pg_admin: Any = None
    pg_db: str | None = None
    results: list[Any] = field(default_factory=list)

    def point_at(self, port: int) -> None:
        with self.sessions.begin() as s:
            acct = s.get(MailAccount, self.account_id)
            acct.settings = {**acct.settings, "imap_port": port}

    def close(self) -> None:
        self.engine.dispose()
        if self.pg_admin is not None and self.pg_db:
            with self.pg_admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)'))
        shutil.rmtree(self.workdir, ignore_errors=True)


def new_instance(
    base: str, rig: MailRig, user: str, password: str, applicants: list[str], pg_url: str | None = None
) -> Instance:
    d = tempfile.mkdtemp(prefix="bench-postroom-", dir=base)
    pg_admin = pg_db = None
    url = f"sqlite:///{d}/postroom.db"
    if pg_url:
        pg_admin = create_engine(
            pg_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        pg_db = f"bench_{uuid.uuid4().hex[:10]}"
        with pg_admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_db}"'))
        url = pg_url.rsplit("/", 1)[0] + "/" + pg_db
    env = {"POSTROOM_DATA_DIR": d, "POSTROOM_SECRET_KEY": SECRET, "POSTROOM_DATABASE_URL": url}
    config = load_config(env=env)
    engine = make_engine(config.database)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        acct = add_imap_account(
            s,
            config,
            ImapAccountRequest(
                email=user,
                username=user,
                password=password,
                imap_host="127.0.0.1",
                imap_port=rig.ports["imap"],
                imap_security="none",
                smtp_host="127.0.0.1",
                smtp_port=rig.ports["smtp_submission"],
                smtp_security="none",
            ),
        )
        account_id = acct.id
    with sessions.begin() as s:
        for i, addr in enumerate(applicants):
            add_applicant(s, f"Applicant {i}", [addr])
    return Instance(d, config, engine, sessions, account_id, pg_admin, pg_db)


def run_sync(inst: Instance) -> tuple[float, float, Any]:
    BODY_SECONDS[0] = 0.0
    t0 = time.perf_counter()
    (res,) = sync_all(inst.config, inst.sessions, inst.account_id)
    dt = time.perf_counter() - t0
    if not res.ok or any(f.error for f in res.folders):
        raise RuntimeError(f"sync failed: {res.summary()}")
    return dt, BODY_SECONDS[0], res


def counted(proxy: CountingProxy, fn: Callable[[], Any], transcript: bool = False) -> tuple[Any, dict[str, Any]]:
    proxy.drain()
    out = fn()
    conns = proxy.collect(expected=1)
    cmds = [c for conn in conns for c in conn["commands"]]
    extra = {"transcripts": [conn["transcript"] for conn in conns]} if transcript else {}
    return out, {
        **extra,
        "connections": len(conns),
        "commands": sum(conn["n_commands"] for conn in conns),
        "c2s_bytes": sum(conn["c2s_bytes"] for conn in conns),
        "s2c_bytes": sum(conn["s2c_bytes"] for conn in conns),
        "by_command": dict(Counter(c["cmd"] for c in cmds)),
        "wire_seconds_by_command": {
            k: round(sum(c["seconds"] for c in cmds if c["cmd"] == k), 4) for k in sorted({c["cmd"] for c in cmds})
        },
    }


def med(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return statistics.median(xs) if xs else None


def spread(xs: Iterable[float]) -> list[float]:
    xs = sorted(xs)
    return [round(xs[0], 4), round(xs[-1], 4)] if xs else []


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--small", type=int, default=1000, help="second mailbox size for the no-change comparison")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--applicant-share", type=float, default=0.10)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs")
    ap.add_argument("--postgres", metavar="URL", help="also run initial + no-change on a scratch PostgreSQL database")
    ap.add_argument("--pg-rounds", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="cProfile one extra warm initial sync")
    ap.add_argument("--name", help="results file name (default sync-<N>-<timestamp>)")
    args = ap.parse_args()
    n = args.messages
    name = args.name or f"sync-{n}-{time.strftime('%Y%m%d-%H%M%S')}"
    t_all = time.perf_counter()
    base = tempfile.mkdtemp(prefix="bench-sync-")
    rig = MailRig(users={BIG_USER: BIG_PW, SMALL_USER: SMALL_PW}, smtp="none")
    proxy: CountingProxy | None = None
    instances: list[Instance] = []
    out: dict[str, Any] = {"name": name, "messages": n, "small": args.small, "rounds": args.rounds}
    try:
        rig.start()
        port = rig.ports["imap"]
        for user, pw in ((BIG_USER, BIG_PW), (SMALL_USER, SMALL_PW)):
            c = imaplib.IMAP4("127.0.0.1", port)
            c.login(user, pw)  # Dovecot creates the Maildir and special-use folders
            c.logout()
        t = time.perf_counter()
        per_msg, size = seed(rig, BIG_USER, n, Address("Alice Test", "alice", "example.test"))
        small_msgs, _small_size = seed(rig, SMALL_USER, args.small, Address("Carol Test", "carol", "example.test"))
        applicants, covered = pick_applicants(per_msg, BIG_USER, args.applicant_share)
        small_covered = sum(1 for m in small_msgs if m & set(applicants))
        log(
            f"seeded {n} msgs ({size / 1e6:.1f} MB) + {args.small} in {time.perf_counter() - t:.1f}s; "
            f"{len(applicants)} applicants cover {covered} msgs ({covered / n:.1%})"
        )
        out["corpus"] = {
            "bytes": size,
            "applicants": applicants,
            "applicant_messages": covered,
            "applicant_share": covered / n,
            "small_applicant_messages": small_covered,
        }
        proxy = CountingProxy("127.0.0.1", port).start()

        can_cold = not args.no_cold and drop_caches(rig)
        modes = ["cold", "warm"] if can_cold else ["warm"]
        runs: list[dict[str, Any]] = []
        last: Instance | None = None
        for r in range(args.rounds):
            for mode in modes:
                order = ["floor", "initial"] if (r + (mode == "warm")) % 2 == 0 else ["initial", "floor"]
                for what in order:
                    if mode == "cold":
                        drop_caches(rig)
                    if what == "floor":
                        dt = floor_fetch(port, BIG_USER, BIG_PW, n)
                        runs.append({"round": r, "cache": mode, "kind": "floor", "seconds": dt})
                        log(f"round {r} {mode} floor   {dt:7.3f}s  {n / dt:8.0f} msg/s")
                    else:
                        if last is not None:
                            last.close()
                            instances.remove(last)
                        inst = new_instance(base, rig, BIG_USER, BIG_PW, applicants)
                        instances.append(inst)
                        last = inst
                        dt, body_s, res = run_sync(inst)
                        assert res.new == n, res.summary()
                        bodies = sum(f.bodies for f in res.folders)
                        runs.append(
                            {
                                "round": r, "cache": mode, "kind": "initial", "seconds": dt,
                                "body_seconds": body_s, "bodies": bodies, "summary": res.summary(),
                            }
                        )  # fmt: skip
                        log(
                            f"round {r} {mode} initial {dt:7.3f}s  {n / dt:8.0f} msg/s  (bodies {bodies} in {body_s:.2f}s)"
                        )
            assert last is not None
            dt, _, res = run_sync(last)
            assert res.new == 0 and res.ok, res.summary()
            runs.append({"round": r, "cache": "warm", "kind": "nochange", "seconds": dt})
            log(f"round {r} nochange {dt * 1000:7.1f} ms")
        out["runs"] = runs

        # ---- counted passes through the proxy (command mix, bytes, wire time per command)
        assert last is not None
        with last.sessions() as s:
            history = s.scalar(select(func.count()).select_from(HistoryEntry))
        out["history_entries"] = history
        last.point_at(proxy.port)
        nochange_counts = []
        for _ in range(3):
            (dt, _, res), counts = counted(proxy, lambda: run_sync(last), transcript=True)
            nochange_counts.append(counts)
        out["nochange_counted_big"] = nochange_counts
        counted_initial = new_instance(base, rig, BIG_USER, BIG_PW, applicants)
        instances.append(counted_initial)
        counted_initial.point_at(proxy.port)
        (dt, body_s, res), counts = counted(proxy, lambda: run_sync(counted_initial))
        out["initial_counted_big"] = dict(counts, seconds=dt, body_seconds=body_s, note="through the proxy")
        log(f"initial via proxy {dt:.2f}s: {counts['commands']} commands, {counts['by_command']}")
        counted_initial.close()
        instances.remove(counted_initial)

        small = new_instance(base, rig, SMALL_USER, SMALL_PW, applicants)
        instances.append(small)
        small.point_at(proxy.port)
        (dt, _, res), small_initial = counted(proxy, lambda: run_sync(small))
        assert res.new == args.small, res.summary()
        small_runs = []
        for _ in range(3):
            (dt, _, res), counts = counted(proxy, lambda: run_sync(small), transcript=True)
            small_runs.append(dict(counts, seconds=dt))
        out["nochange_counted_small"] = small_runs
        out["initial_counted_small"] = dict(small_initial, seconds=dt)
        log(f"nochange {n}: {nochange_counts[-1]['commands']} cmds, {nochange_counts[-1]['c2s_bytes']}/{nochange_counts[-1]['s2c_bytes']} B; "
            f"{args.small}: {small_runs[-1]['commands']} cmds, {small_runs[-1]['c2s_bytes']}/{small_runs[-1]['s2c_bytes']} B")  # fmt: skip

        # ---- PostgreSQL
        if args.postgres:
            pg_runs = []
            for r in range(args.pg_rounds):
                pg = new_instance(base, rig, BIG_USER, BIG_PW, applicants, pg_url=args.postgres)
                instances.append(pg)
                dt, body_s, res = run_sync(pg)
                assert res.new == n, res.summary()
                fdt = floor_fetch(port, BIG_USER, BIG_PW, n)
                ndt, _, _ = run_sync(pg)
                pg_runs.append({"round": r, "initial": dt, "body_seconds": body_s, "floor": fdt, "nochange": ndt})
                log(
                    f"pg round {r}: initial {dt:.2f}s ({n / dt:.0f} msg/s), floor {fdt:.2f}s, nochange {ndt * 1000:.0f} ms"
                )
                pg.close()
                instances.remove(pg)
            out["postgres"] = pg_runs

        if args.profile:
            prof_inst = new_instance(base, rig, BIG_USER, BIG_PW, applicants)
            instances.append(prof_inst)
            prof = cProfile.Profile()
            prof.enable()
            run_sync(prof_inst)
            prof.disable()
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            st.sort_stats("tottime").print_stats(30)
            st.sort_stats("cumulative").print_stats(40)
            (BENCH / "results").mkdir(exist_ok=True)
            (BENCH / "results" / f"{name}-profile.txt").write_text(buf.getvalue())
            log(f"profile written to bench/results/{name}-profile.txt")
    finally:
        for inst in instances:
            try:
                inst.close()
            except Exception as exc:
                log(f"cleanup: {exc}")
        if proxy is not None:
            proxy.stop()
        rig.cleanup()
        shutil.rmtree(base, ignore_errors=True)

    out["summary"] = summarise(out, modes)
    out["machine"] = machine()
    out["total_seconds"] = time.perf_counter() - t_all
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(markdown(out))
    log(f"wrote {path.relative_to(ROOT)} in {out['total_seconds']:.0f}s total")
    return 0


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
        info["loadavg_end"] = os.getloadavg()
        info["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    except OSError:
        pass
    return info


def summarise(out: dict[str, Any], modes: list[str]) -> dict[str, Any]:
    n = out["messages"]
    runs = out["runs"]
    summary: dict[str, Any] = {}
    for mode in modes:
        fl = [x["seconds"] for x in runs if x["kind"] == "floor" and x["cache"] == mode]
        ini = [x for x in runs if x["kind"] == "initial" and x["cache"] == mode]
        # ratio per round (floor and initial measured back to back), then the median
        ratios = []
        for r in range(out["rounds"]):
            f = [x["seconds"] for x in runs if x["kind"] == "floor" and x["cache"] == mode and x["round"] == r]
            i = [x["seconds"] for x in ini if x["round"] == r]
            if f and i:
                ratios.append(i[0] / f[0])
        mi = med(x["seconds"] for x in ini)
        summary[mode] = {
            "floor_s": med(fl),
            "floor_range_s": spread(fl),
            "initial_s": mi,
            "initial_range_s": spread(x["seconds"] for x in ini),
            "initial_msgs_per_s": n / mi if mi else None,
            "floor_msgs_per_s": n / med(fl) if fl else None,
            "ratio_initial_to_floor": med(ratios),
            "ratio_range": spread(ratios),
            "body_s": med(x["body_seconds"] for x in ini),
            "bodies": ini[0]["bodies"] if ini else None,
        }
    nc = [x["seconds"] for x in runs if x["kind"] == "nochange"]
    big, small = out["nochange_counted_big"][-1], out["nochange_counted_small"][-1]
    summary["nochange"] = {
        "seconds": med(nc),
        "range_s": spread(nc),
        "big": {k: big[k] for k in ("commands", "c2s_bytes", "s2c_bytes", "by_command")},
        "small": {k: small[k] for k in ("commands", "c2s_bytes", "s2c_bytes", "by_command")},
        "small_seconds": med(x["seconds"] for x in out["nochange_counted_small"]),
        "same_commands": big["commands"] == small["commands"],
        "same_bytes": (big["c2s_bytes"], big["s2c_bytes"]) == (small["c2s_bytes"], small["s2c_bytes"]),
        "stable_across_repeats": len({(c["commands"], c["c2s_bytes"], c["s2c_bytes"]) for c in out["nochange_counted_big"]}) == 1,
    }  # fmt: skip
    if out.get("postgres"):
        pg = out["postgres"]
        mi = med(x["initial"] for x in pg)
        summary["postgres"] = {
            "initial_s": mi,
            "initial_msgs_per_s": n / mi,
            "ratio_initial_to_floor": med(x["initial"] / x["floor"] for x in pg),
            "body_s": med(x["body_seconds"] for x in pg),
            "nochange_s": med(x["nochange"] for x in pg),
        }
    return summary


def markdown(out: dict[str, Any]) -> str:
    n, s = out["messages"], out["summary"]
    lines = [
        f"### Sync benchmark: {n} messages ({out['corpus']['bytes'] / 1e6:.0f} MB), "
        f"{out['rounds']} rounds, medians (min–max)",
        "",
        "| measurement | cache | time | messages/s | ratio to floor |",
        "|---|---|---:|---:|---:|",
    ]
    for mode in ("cold", "warm"):
        if mode not in s:
            continue
        m = s[mode]
        fr, ir, rr = m["floor_range_s"], m["initial_range_s"], m["ratio_range"]
        lines.append(
            f"| (a) floor: imaplib LOGIN+SELECT+UID FETCH 1:* headers | {mode} | {m['floor_s']:.2f} s "
            f"({fr[0]:.2f}–{fr[1]:.2f}) | {m['floor_msgs_per_s']:,.0f} | 1 |"
        )
        lines.append(
            f"| (b) Postroom initial sync, SQLite | {mode} | {m['initial_s']:.2f} s ({ir[0]:.2f}–{ir[1]:.2f}) "
            f"| {m['initial_msgs_per_s']:,.0f} | {m['ratio_initial_to_floor']:.1f}× ({rr[0]:.1f}–{rr[1]:.1f}) |"
        )
        lines.append(f"| &nbsp;&nbsp;of which bodies ({m['bodies']} messages) | {mode} | {m['body_s']:.2f} s | | |")
    if "postgres" in s:
        p = s["postgres"]
        lines.append(
            f"| (b) Postroom initial sync, PostgreSQL | warm | {p['initial_s']:.2f} s | {p['initial_msgs_per_s']:,.0f} "
            f"| {p['ratio_initial_to_floor']:.1f}× |"
        )
        lines.append(f"| &nbsp;&nbsp;of which bodies | warm | {p['body_s']:.2f} s | | |")
    nc = s["nochange"]
    lines += [
        "",
        "| no-change pass | time | IMAP commands | bytes sent | bytes received | commands |",
        "|---|---:|---:|---:|---:|---|",
        f"| {n} messages | {nc['seconds'] * 1000:.0f} ms | {nc['big']['commands']} | {nc['big']['c2s_bytes']} | "
        f"{nc['big']['s2c_bytes']} | {_mix(nc['big']['by_command'])} |",
        f"| {out['small']} messages | {nc['small_seconds'] * 1000:.0f} ms | {nc['small']['commands']} | "
        f"{nc['small']['c2s_bytes']} | {nc['small']['s2c_bytes']} | {_mix(nc['small']['by_command'])} |",
        "",
        f"Same command count: {nc['same_commands']}; same bytes: {nc['same_bytes']}; "
        f"identical over repeats: {nc['stable_across_repeats']}.",
    ]
    ic = out["initial_counted_big"]
    lines += [
        "",
        f"Initial sync through the counting proxy: {ic['commands']} commands "
        f"({_mix(ic['by_command'])}), {ic['c2s_bytes']:,} B sent, {ic['s2c_bytes']:,} B received; "
        f"wire time by command: {ic['wire_seconds_by_command']}.",
    ]
    return "\n".join(lines)


def _mix(by: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(by.items()))


if __name__ == "__main__":
    sys.exit(main())
