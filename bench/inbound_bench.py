# ruff: noqa: E501
"""Processing-mailbox benchmark: ``services.inbound.run_once`` against the protocol floor, side by side.

    .venv/bin/python bench/inbound_bench.py                         # what `make bench-inbound` runs
    .venv/bin/python bench/inbound_bench.py --messages 1000 --rounds 3 --postgres postgresql://postgres@127.0.0.1:5432/test --profile
    .venv/bin/python bench/inbound_bench.py --messages 200 --rounds 1  # quick check

One run starts a throwaway Dovecot (tests/rig) with one user per measured run, seeds each
user's INBOX (straight into the Maildir) with the same N realistic inbound messages (drawn
from tests/data/inbound/*.eml and tests/data/dsn/*.eml, each with a unique Message-ID:
JSON parts, YAML bodies, HTML-only mail, attachments, quoted replies, forwards, DSNs,
auto-replies, and about 2 % malformed ones that go to failed/), then measures, rounds
alternating the order:

  floor       plain imaplib: LOGIN + SELECT + UID SEARCH ALL + one UID FETCH BODY.PEEK[]
              of all + one UID MOVE of all to processed/ (created beforehand, not timed);
  auto        a fresh Postroom database, the account designated as a processing mailbox
              (services.inbound.add_mailbox, move auto = UID MOVE), then
              services.inbound.run_once timed end to end (one webhook subscription, so the
              inbound.* deliveries are queued as in production);
  copy-delete the same with ``move="copy-delete"`` (UID COPY + STORE + UID EXPUNGE);

on SQLite and, with ``--postgres URL``, on a scratch PostgreSQL database per run. Each
configuration is also run once through bench/imap_proxy.py's counting proxy (its own
process) to count IMAP commands, the command mix and bytes, followed by an idle run
(nothing new in the folder). The parse-only cost (postroom.inbound.parse_inbound and
postroom.bounces.parse_bounce over the same N raw messages, in this process) shows where
the time goes; ``--profile`` runs cProfile over one more auto/SQLite run.

Results: bench/results/<name>.json, a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import imaplib
import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from imap_proxy import CountingProxy  # noqa: E402
from provider_bench_common import log, med, spread  # noqa: E402
from provider_bench_common import machine as common_machine  # noqa: E402
from sqlalchemy import create_engine, event, func, select, text  # noqa: E402

from postroom.bounces import parse_bounce  # noqa: E402
from postroom.config import load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.inbound import parse_inbound  # noqa: E402
from postroom.models import WebhookDelivery  # noqa: E402
from postroom.models_inbound import InboundItem  # noqa: E402
from services.accounts import ImapAccountRequest, add_imap_account  # noqa: E402
from services.inbound import add_mailbox, run_once  # noqa: E402
from services.orgs import resolve_org  # noqa: E402
from services.webhooks import add_subscription  # noqa: E402
from tests.rig.corpus import write_maildir  # noqa: E402
from tests.rig.mailrig import MailRig  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
PASSWORD = "benchpw"
DATA = [ROOT / "tests" / "data" / "inbound", ROOT / "tests" / "data" / "dsn"]
MALFORMED_SHARE = 0.02
_MSGID = re.compile(rb"^Message-ID:[^\r\n]*(\r?\n[ \t][^\r\n]*)*", re.I | re.M)


# ------------------------------------------------------------------ the messages
@dataclass(frozen=True)
class Msg:
    raw: bytes
    date: datetime
    flags: frozenset[str] = frozenset()


def _bad_json(mid: str) -> bytes:
    return (
        "From: ATS Bot <bot@ats.example>\r\nTo: jobs@example.test\r\nSubject: New application\r\n"
        f"Message-ID: {mid}\r\nDate: Mon, 02 Jun 2025 09:30:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n'
        'Data attached.\r\n--b1\r\nContent-Type: application/json\r\n\r\n{"name": "unterminated\r\n--b1--\r\n'
    ).encode()


def corpus(n: int) -> tuple[list[bytes], dict[str, int]]:
    """n raw messages: the sample files in turn, each with a unique Message-ID, and every
    1/MALFORMED_SHARE-th one malformed (alternately not mail at all and a broken JSON part)."""
    samples = sorted(p for d in DATA for p in d.glob("*.eml"))
    raws: list[bytes] = []
    kinds: Counter[str] = Counter()
    every = round(1 / MALFORMED_SHARE)
    for i in range(n):
        mid = f"<bench-{i:06d}@inbound.example>"
        if i % every == every - 1:
            bad = (i // every) % 2 == 0
            raws.append(b"\x00\x01 not a header line at all %d\r\n\r\nbody\r\n" % i if bad else _bad_json(mid))
            kinds["malformed:" + ("not-mail" if bad else "bad-json")] += 1
            continue
        path = samples[i % len(samples)]
        raw = path.read_bytes()
        raw, k = _MSGID.subn(f"Message-ID: {mid}".encode(), raw, count=1)
        if not k:
            raw = f"Message-ID: {mid}\r\n".encode() + raw
        raws.append(raw)
        kinds[f"{path.parent.name}/{path.stem}"] += 1
    return raws, dict(kinds)


def seed(rig: MailRig, user: str, raws: list[bytes]) -> int:
    c = imaplib.IMAP4("127.0.0.1", rig.ports["imap"])
    c.login(user, PASSWORD)  # Dovecot creates the Maildir
    c.logout()
    base = datetime(2025, 6, 1, tzinfo=UTC)
    items: Iterator[Msg] = (Msg(r, base + timedelta(minutes=i)) for i, r in enumerate(raws))
    count, size = write_maildir(items, rig.maildir(user))  # type: ignore[arg-type]
    rig.chown_mail(user)
    assert count == len(raws)
    return size


# ------------------------------------------------------------------ the floor
def floor_run(port: int, user: str, expect: int, setup_port: int | None = None) -> float:
    """LOGIN + SELECT + UID SEARCH ALL + UID FETCH BODY.PEEK[] of all + UID MOVE of all."""
    c = imaplib.IMAP4("127.0.0.1", setup_port or port, timeout=120)
    c.login(user, PASSWORD)
    c.create("processed")  # not timed: the folder exists, as it does from Postroom's second run on
    c.logout()
    t0 = time.perf_counter()
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    conn.login(user, PASSWORD)
    typ, data = conn.select("INBOX")
    assert typ == "OK", data
    typ, data = conn.uid("SEARCH", "ALL")
    uids = data[0].split()
    assert len(uids) == expect, (len(uids), expect)
    uid_set = f"{int(uids[0])}:{int(uids[-1])}"
    typ, data = conn.uid("FETCH", uid_set, "(UID BODY.PEEK[])")
    assert typ == "OK" and sum(1 for x in data if isinstance(x, tuple)) == expect, typ
    typ, data = conn.uid("MOVE", uid_set, "processed")
    assert typ == "OK", data
    conn.logout()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ Postroom instances
@dataclass
class Instance:
    workdir: str
    config: Any
    engine: Any
    sessions: Any
    pg_admin: Any = None
    pg_db: str | None = None
    statements: list[int] = field(default_factory=lambda: [0])

    def close(self) -> None:
        self.engine.dispose()
        if self.pg_admin is not None and self.pg_db:
            with self.pg_admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)'))
            self.pg_admin.dispose()
        shutil.rmtree(self.workdir, ignore_errors=True)


def new_instance(base: str, port: int, user: str, move: str, pg_url: str | None) -> Instance:
    """A fresh database with the user's account designated as a processing mailbox."""
    d = tempfile.mkdtemp(prefix="bench-inbound-", dir=base)
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
                email=user, username=user, password=PASSWORD, imap_host="127.0.0.1", imap_port=port,
                imap_security="none", smtp_host="127.0.0.1", smtp_port=25, smtp_security="none",
            ),
        )  # fmt: skip
        add_mailbox(s, config, None, acct.id, move=move)
        org = resolve_org(s, None)
        add_subscription(s, config, org, "https://hooks.example.com/in", ["inbound.processed", "inbound.failed"])
    inst = Instance(d, config, engine, sessions, pg_admin, pg_db)

    def count(*_: Any) -> None:  # SQL statements sent, for the counted runs
        inst.statements[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    return inst


def timed_run(inst: Instance, expect: int) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = run_once(inst.config, inst.sessions)
    dt = time.perf_counter() - t0
    if res.errors or res.processed + res.failed != expect or res.moved != expect:
        raise RuntimeError(f"run failed: {res.as_json()}")
    return dt, res


def stored(inst: Instance) -> dict[str, int]:
    with inst.sessions() as s:
        return {
            "items": s.scalar(select(func.count()).select_from(InboundItem)) or 0,
            "deliveries": s.scalar(select(func.count()).select_from(WebhookDelivery)) or 0,
        }


def counted(proxy: CountingProxy, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    proxy.drain()
    out = fn()
    conns = proxy.collect(expected=1)
    cmds = [c for conn in conns for c in conn["commands"]]
    return out, {
        "connections": len(conns),
        "commands": sum(conn["n_commands"] for conn in conns),
        "c2s_bytes": sum(conn["c2s_bytes"] for conn in conns),
        "s2c_bytes": sum(conn["s2c_bytes"] for conn in conns),
        "by_command": dict(Counter(_label(c["cmd"]) for c in cmds)),
        "wire_seconds_by_command": {
            k: round(sum(c["seconds"] for c in cmds if _label(c["cmd"]) == k), 4)
            for k in sorted({_label(c["cmd"]) for c in cmds})
        },
    }


def _label(cmd: str) -> str:
    """The proxy's label without the target folder ('UID MOVE processed' -> 'UID MOVE')."""
    for verb in ("UID MOVE", "UID COPY", "UID STORE", "UID EXPUNGE", "UID SEARCH"):
        if cmd.startswith(verb):
            return verb
    return cmd


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--postgres", metavar="URL", help="also run on a scratch PostgreSQL database per run")
    ap.add_argument("--profile", action="store_true", help="cProfile one more auto run on SQLite")
    ap.add_argument("--name", help="results file name (default inbound-<N>-<timestamp>)")
    args = ap.parse_args()
    n = args.messages
    name = args.name or f"inbound-{n}-{time.strftime('%Y%m%d-%H%M%S')}"
    t_all = time.perf_counter()
    dbs = ["sqlite"] + (["postgres"] if args.postgres else [])
    configs = [(db, move) for db in dbs for move in ("auto", "copy-delete")]
    kinds = ["floor"] + [f"{db}/{move}" for db, move in configs]
    # one mailbox per measured run: rounds x kinds, the counted runs, the profile
    n_users = args.rounds * len(kinds) + len(kinds) + 1
    users = [f"in{i:03d}@example.test" for i in range(n_users)]
    free = iter(users)
    base = tempfile.mkdtemp(prefix="bench-inbound-")
    rig = MailRig(users=dict.fromkeys(users, PASSWORD), smtp="none")
    proxy: CountingProxy | None = None
    instances: list[Instance] = []
    raws, mix = corpus(n)
    out: dict[str, Any] = {"name": name, "messages": n, "rounds": args.rounds, "mix": mix}
    out["corpus_bytes"] = sum(len(r) for r in raws)
    try:
        rig.start()
        port = rig.ports["imap"]
        proxy = CountingProxy("127.0.0.1", port).start()

        def one(kind: str, via: int) -> tuple[float, dict[str, Any], Instance | None]:
            user = next(free)
            seed(rig, user, raws)
            if kind == "floor":
                return floor_run(via, user, n), {}, None
            db, move = kind.split("/")
            inst = new_instance(base, via, user, move, args.postgres if db == "postgres" else None)
            instances.append(inst)
            dt, res = timed_run(inst, n)
            return dt, {**res.as_json(), **stored(inst)}, inst

        # ---- timed runs, straight to Dovecot, the order alternating by round
        runs: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                dt, extra, inst = one(kind, port)
                runs.append({"round": r, "kind": kind, "seconds": dt, **extra})
                log(f"round {r} {kind:22s} {dt:7.3f}s  {n / dt:7.0f} msg/s  {extra}")
                if inst is not None:
                    inst.close()
                    instances.remove(inst)
            # parse only, in this process, over the same raw messages
            t0 = time.perf_counter()
            for raw in raws:
                try:
                    parse_inbound(raw)
                except Exception:  # the malformed ones
                    pass
            tp = time.perf_counter() - t0
            t0 = time.perf_counter()
            for raw in raws:
                try:
                    parse_bounce(raw)
                except Exception:
                    pass
            tb = time.perf_counter() - t0
            runs.append({"round": r, "kind": "parse", "seconds": tp, "bounce_seconds": tb})
            log(f"round {r} parse_inbound {tp:.3f}s, parse_bounce {tb:.3f}s")
        out["runs"] = runs

        # ---- counted runs through the proxy: a full run, then an idle run (nothing new)
        counts: dict[str, Any] = {}
        for kind in kinds:
            if kind == "floor":
                user = next(free)
                seed(rig, user, raws)
                dt, c = counted(proxy, lambda u=user: floor_run(proxy.port, u, n, port))  # type: ignore[union-attr]
                counts[kind] = {"full": c, "full_seconds": dt}
                continue
            user = next(free)
            seed(rig, user, raws)
            db, move = kind.split("/")
            inst = new_instance(base, proxy.port, user, move, args.postgres if db == "postgres" else None)
            instances.append(inst)
            inst.statements[0] = 0
            (dt, _), full = counted(proxy, lambda i=inst: timed_run(i, n))  # type: ignore[misc]
            full["sql_statements"], inst.statements[0] = inst.statements[0], 0
            (dt_idle, _), idle = counted(proxy, lambda i=inst: timed_run(i, 0))  # type: ignore[misc]
            idle["sql_statements"] = inst.statements[0]
            counts[kind] = {"full": full, "idle": idle, "full_seconds": dt, "idle_seconds": dt_idle}
            log(f"counted {kind}: {full['commands']} commands {full['by_command']}; idle {idle['by_command']}")
            inst.close()
            instances.remove(inst)
        out["counted"] = counts

        if args.profile:
            user = next(free)
            seed(rig, user, raws)
            inst = new_instance(base, port, user, "auto", None)
            instances.append(inst)
            prof = cProfile.Profile()
            prof.enable()
            timed_run(inst, n)
            prof.disable()
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            st.sort_stats("tottime").print_stats(30)
            st.sort_stats("cumulative").print_stats(50)
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

    out["summary"] = summarise(out, kinds)
    out["machine"] = machine()
    out["total_seconds"] = time.perf_counter() - t_all
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(markdown(out, kinds))
    log(f"wrote {path.relative_to(ROOT)} in {out['total_seconds']:.0f}s total")
    return 0


def machine() -> dict[str, Any]:
    """The common machine facts, with the Dovecot version and the load at the end."""
    info = common_machine()
    info["loadavg_end"] = os.getloadavg()
    info["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    return info


def summarise(out: dict[str, Any], kinds: list[str]) -> dict[str, Any]:
    n, runs = out["messages"], out["runs"]
    summary: dict[str, Any] = {}
    for kind in kinds:
        xs = [x["seconds"] for x in runs if x["kind"] == kind]
        ratios = []
        for r in range(out["rounds"]):  # per round (measured side by side), then the median
            f = [x["seconds"] for x in runs if x["kind"] == "floor" and x["round"] == r]
            k = [x["seconds"] for x in runs if x["kind"] == kind and x["round"] == r]
            if f and k:
                ratios.append(k[0] / f[0])
        m = med(xs)
        c = out["counted"][kind]
        summary[kind] = {
            "seconds": m,
            "range_s": spread(xs),
            "msgs_per_s": n / m if m else None,
            "ratio_to_floor": med(ratios),
            "ratio_range": spread(ratios),
            "commands": c["full"]["commands"],
            "commands_per_message": c["full"]["commands"] / n,
            "by_command": c["full"]["by_command"],
            "c2s_bytes": c["full"]["c2s_bytes"],
            "s2c_bytes": c["full"]["s2c_bytes"],
            "idle_commands": c["idle"]["commands"] if "idle" in c else None,
            "sql_per_message": c["full"]["sql_statements"] / n if "idle" in c else None,
            "idle_seconds": c.get("idle_seconds"),
            "idle_by_command": c["idle"]["by_command"] if "idle" in c else None,
        }
    parse = [x for x in runs if x["kind"] == "parse"]
    summary["parse"] = {
        "parse_inbound_s": med(x["seconds"] for x in parse),
        "parse_bounce_s": med(x["bounce_seconds"] for x in parse),
    }
    return summary


def markdown(out: dict[str, Any], kinds: list[str]) -> str:
    n, s = out["messages"], out["summary"]
    lines = [
        f"### Processing mailbox: {n} messages ({out['corpus_bytes'] / 1e6:.1f} MB), {out['rounds']} rounds, medians (min–max)",
        "",
        "| measurement | time | messages/s | ratio to floor | IMAP commands (per message) | bytes sent / received |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        m = s[kind]
        label = (
            "floor: imaplib SELECT + UID SEARCH + UID FETCH BODY.PEEK[] + UID MOVE"
            if kind == "floor"
            else f"Postroom run_once, {kind.replace('/', ', ')}"
        )
        rr = m["ratio_range"]
        ratio = "1" if kind == "floor" else f"{m['ratio_to_floor']:.1f}× ({rr[0]:.1f}–{rr[1]:.1f})"
        lines.append(
            f"| {label} | {m['seconds']:.2f} s ({m['range_s'][0]:.2f}–{m['range_s'][1]:.2f}) | {m['msgs_per_s']:,.0f} "
            f"| {ratio} | {m['commands']} ({m['commands_per_message']:.3f}) | {m['c2s_bytes']:,} / {m['s2c_bytes']:,} |"
        )
    p = s["parse"]
    lines.append(
        f"| parse only, in-process: parse_inbound + parse_bounce | {p['parse_inbound_s']:.2f} s + {p['parse_bounce_s']:.2f} s "
        f"| {n / (p['parse_inbound_s'] + p['parse_bounce_s']):,.0f} | | | |"
    )
    lines += [
        "",
        "| run | command mix (full run) | SQL statements per message | idle run (nothing new): IMAP commands |",
        "|---|---|---:|---|",
    ]
    for kind in kinds:
        m = s[kind]
        idle = f"{m['idle_commands']}: {_mix(m['idle_by_command'])}" if m["idle_by_command"] is not None else ""
        sql = f"{m['sql_per_message']:.1f}" if m["sql_per_message"] is not None else ""
        lines.append(f"| {kind} | {_mix(m['by_command'])} | {sql} | {idle} |")
    lines += ["", f"Message mix: {', '.join(f'{k}×{v}' for k, v in sorted(out['mix'].items()))}."]
    return "\n".join(lines)


def _mix(by: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(by.items()))


if __name__ == "__main__":
    sys.exit(main())
