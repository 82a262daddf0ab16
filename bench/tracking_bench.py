# ruff: noqa: E501
"""The tracking endpoints under load (issue 11, item 9): hits/s and latency of one server process.

    apt-get install -y wrk          # the load generator (Debian package; C, epoll, one thread)
    .venv/bin/python bench/tracking_bench.py                     # 3 rounds, SQLite, about 3 minutes
    .venv/bin/python bench/tracking_bench.py --rounds 1 --seconds 5 --variants wsgi
    .venv/bin/python bench/tracking_bench.py --postgres postgresql://postgres@127.0.0.1:5432/test

Setup: a scratch data directory and database (SQLite, or a scratch PostgreSQL database with
``--postgres``), migrated, with 10 tracked messages of 100 recipients each, sent a day ago (so
no click is near delivery). Paths: for each of the 1,000 recipients its pixel, and for every
fourth one also a click on its first link — 1,250 distinct URLs, requested round-robin.

Each measurement starts a fresh server process the way ``postroom serve`` builds it:
``web.create_app(config)`` served by ``waitress.server.create_server(app, threads=8)`` (the
same call as ``cli/running.py``; ``--threads`` tries others), without the sync worker. The
server counts database commits with an SQLAlchemy ``commit`` event listener on the app's
engine. wrk (``-t1``: one load thread, so the server keeps most of the second core) runs 2 s
of warm-up, then ``--seconds`` measured with ``--latency`` (p50/p99 from wrk's histogram).
Then SIGTERM: the server closes, flushes its recorder and reports what it wrote; the bench
counts ``tracking_events`` rows (they must equal the hits written) and the server's CPU time.

Variants, alternating within each round so they share the machine's noise:

  wsgi        the product: ``/t/o/...`` and ``/t/c/...`` answered by ``web.tracking``'s WSGI function in front of Flask
  flask       the same work as an ordinary Flask route (``/f/o/<token>.gif``, added by the bench), to measure what
              skipping Flask saves (pixels only)

Connection modes: ``keepalive`` (wrk's default, ``-c 32``: as fast as the server goes) and
``close`` (``Connection: close`` on every request, as many different mail clients fetching one
pixel each would behave; ``-c 16``) measure the ceiling, where latency is mostly time queued
behind the 8 threads; ``paced`` offers about ``--rate`` hits/s (2,000, the target; keep-alive,
16 connections each pausing about 7.3 ms between requests through wrk's ``delay()``) and
measures the latency at that load.

Results: bench/results/<name>.json and a Markdown table on stdout (median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
LUA = """
local paths = {}
for line in io.lines(os.getenv("TRACKING_BENCH_PATHS")) do paths[#paths + 1] = line end
local i = 0
local pause = tonumber(os.getenv("TRACKING_BENCH_DELAY_MS") or "0")
request = function()
  i = i % #paths + 1
  return wrk.format(nil, paths[i])
end
if pause > 0 then
  delay = function() return pause end
end
"""


# --------------------------------------------------------------------------- the server process


def serve(args: argparse.Namespace) -> int:
    """``--serve``: what ``postroom serve`` runs for the web app, plus a commit counter."""
    from flask import Response, abort, request
    from sqlalchemy import event
    from waitress.server import create_server

    from postroom.config import load_config
    from postroom.hits import Hit
    from postroom.states import HitKind
    from services.tracking import tracking_keys
    from web import create_app
    from web.tracking import PIXEL, PIXEL_HEADERS

    config = load_config(env=json.loads(os.environ["TRACKING_BENCH_ENV"]))
    app = create_app(config)
    ext = app.extensions["postroom"]
    commits = [0]
    event.listen(ext["sessions"].kw["bind"], "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    keys, recorder = tracking_keys(config), ext["hits"]

    @app.route("/f/o/<token>.gif", methods=["GET", "HEAD"])
    def flask_pixel(token: str) -> Response:  # the same work as web.tracking, as a Flask route
        rid = keys.verify_open(token)
        if rid is None:
            abort(404)
        hit = Hit(HitKind.OPEN, datetime.now(UTC), request.method, request.user_agent.string, request.remote_addr or "")
        recorder.record(rid, hit)
        return Response(PIXEL if request.method == "GET" else b"", headers=PIXEL_HEADERS)

    server = create_server(app, host="127.0.0.1", port=args.port, threads=args.threads)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N": expected under load
    sizes: list[int] = []
    write = recorder._write  # the batch sizes, for the report

    def counted(session: Any, items: list[Any]) -> tuple[int, int]:
        sizes.append(len(items))
        return write(session, items)

    recorder._write = counted
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    threading.Thread(target=server.run, name="postroom-web", daemon=True).start()  # as cli/running.py serve does
    print("ready", flush=True)
    stopped.wait()
    server.close()
    recorder.close()
    stats = {k: getattr(recorder, k) for k in ("written", "skipped", "dropped", "failed", "batches")}
    stats |= {
        "commits": commits[0],
        "batch_p50": statistics.median(sizes) if sizes else 0,
        "batch_max": max(sizes, default=0),
    }
    print(json.dumps(stats), flush=True)
    return 0


# --------------------------------------------------------------------------- the bench


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _setup(workdir: Path, postgres: str | None) -> tuple[dict[str, str], list[str], list[str], str | None]:
    """The environment of a scratch database with 1,000 tracked recipients, the product's
    paths and the Flask variant's paths."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from postroom import db
    from postroom.config import load_config
    from postroom.models import MailAccount, Organisation, OutboxMessage, OutboxRecipient
    from services.tracking import tracking_keys
    from tests.core.test_tracking_html import TARGETS, canonical

    env = {
        "HOME": str(workdir),
        "POSTROOM_DATA_DIR": str(workdir / "data"),
        "POSTROOM_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "POSTROOM_LOG_LEVEL": "WARNING",
    }
    scratch = None
    if postgres:
        base = postgres.replace("postgresql://", "postgresql+psycopg://", 1)
        scratch = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        admin.dispose()
        env["POSTROOM_DATABASE_URL"] = make_url(base).set(database=scratch).render_as_string(hide_password=False)
    config = load_config(env=env)
    engine = db.make_engine(config.database)
    db.upgrade(engine)
    sessions = db.make_sessionmaker(engine)
    sent = datetime.now(UTC) - timedelta(days=1)
    ids: list[int] = []
    with sessions.begin() as s:
        org = Organisation(name="Bench")
        s.add(org)
        s.flush()
        account = MailAccount(org_id=org.id, email="ann@example.com", provider="imap", settings={}, secret=b"-")
        s.add(account)
        s.flush()
        raw = canonical()
        for m in range(10):
            msg = OutboxMessage(
                account_id=account.id,
                message_id=f"<bench.{m}@example.com>",
                raw=raw,
                recipients=[],
                status="sent",
                tracked=True,
                mode="smtp",
                sent_at=sent,
            )
            s.add(msg)
            s.flush()
            rows = [
                OutboxRecipient(
                    outbox_id=msg.id,
                    address=f"r{m}.{n}@example.org",
                    kind="to",
                    message_id=f"<bench.{m}.{n}@example.com>",
                    status="sent",
                    sent_at=sent,
                )
                for n in range(100)
            ]
            s.add_all(rows)
            s.flush()
            ids += [r.id for r in rows]
    engine.dispose()
    keys = tracking_keys(config)
    product, flask = [], []
    for i, rid in enumerate(ids):
        token = keys.open_token(rid)
        product.append(f"/t/o/{token}.gif")
        flask.append(f"/f/o/{token}.gif")
        if i % 4 == 0:
            product.append(keys.click_url("", rid, 0, TARGETS[0]))
    return env, product, flask, scratch


def _count_events(env: dict[str, str]) -> int:
    from sqlalchemy import func, select

    from postroom import db
    from postroom.config import load_config
    from postroom.models import TrackingEvent

    engine = db.make_engine(load_config(env=env).database)
    try:
        with engine.begin() as conn:
            n = int(conn.execute(select(func.count()).select_from(TrackingEvent)).scalar_one())
            conn.execute(TrackingEvent.__table__.delete())
        return n
    finally:
        engine.dispose()


def _wrk(
    port: int, paths_file: Path, lua: Path, seconds: float, connections: int, close: bool, delay_ms: float = 0
) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{round(seconds)}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        "-H",
        f"User-Agent: {UA}",
    ]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TRACKING_BENCH_PATHS": str(paths_file), "TRACKING_BENCH_DELAY_MS": str(delay_ms)},
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    assert total, out
    return {
        "requests": int(total.group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "bad_status": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(map(int, sockets.groups())) if sockets else 0,
    }


def measure(
    env: dict[str, str], paths: list[str], workdir: Path, args: argparse.Namespace, mode: str
) -> dict[str, Any]:
    port = _free_port()
    paths_file = workdir / f"paths-{uuid.uuid4().hex[:6]}.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    lua = workdir / "round-robin.lua"
    lua.write_text(LUA)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--threads", str(args.threads)],
        env={**os.environ, "TRACKING_BENCH_ENV": json.dumps(env)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        close = mode == "close"
        connections = {"keepalive": 32, "close": 16, "paced": 16}[mode]
        # each connection waits between requests; 0.7 ms is about the response time at that load, so that
        # the rate achieved is close to --rate (the table shows the rate achieved)
        delay = max(connections / args.rate * 1000 - 0.7, 0) if mode == "paced" else 0
        warm = _wrk(
            port, paths_file, lua, 2, connections, close, delay
        )  # warm-up: imports, the Apple list, the first batches
        cpu = _cpu_seconds(proc.pid)
        result = _wrk(port, paths_file, lua, args.seconds, connections, close, delay)
        result["cpu_per_1000_hits_s"] = (_cpu_seconds(proc.pid) - cpu) / result["requests"] * 1000
        time.sleep(1)  # requests wrk gave up on at its deadline are still being answered
        proc.send_signal(signal.SIGTERM)
        stats = json.loads(proc.stdout.readline())
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    result |= stats
    result["rows"] = _count_events(env)  # every hit the server took is in the table (and the table is emptied)
    result["requests_both_runs"] = warm["requests"] + result["requests"]
    result["hits_per_transaction"] = stats["written"] / max(stats["commits"], 1)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=8, help="waitress threads (postroom serve: 8)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--variants", default="wsgi,flask")
    p.add_argument("--modes", default="keepalive,close,paced")
    p.add_argument("--rate", type=float, default=2000.0, help="hits/s offered in the paced mode")
    p.add_argument("--postgres", metavar="URL", help="use a scratch database on this PostgreSQL server")
    p.add_argument("--name", default="tracking")
    args = p.parse_args()
    if args.serve:
        return serve(args)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    env, product, flask, scratch = _setup(workdir, args.postgres)
    configs = [(v, m) for v in args.variants.split(",") for m in args.modes.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {f"{v}/{m}": [] for v, m in configs}
    try:
        for rnd in range(args.rounds):
            for variant, mode in configs:
                paths = product if variant == "wsgi" else flask
                r = measure(env, paths, workdir, args, mode)
                runs[f"{variant}/{mode}"].append(r)
                print(
                    f"round {rnd + 1} {variant}/{mode}: {r['rps']:.0f} hits/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                    f"{r['written']} written in {r['commits']} transactions, rows {r['rows']}, dropped {r['dropped']}",
                    flush=True,
                )
    finally:
        if scratch and args.postgres:
            from sqlalchemy import create_engine, text

            admin = create_engine(
                args.postgres.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    out.write_text(
        json.dumps(
            {"threads": args.threads, "seconds": args.seconds, "postgres": bool(args.postgres), "runs": runs}, indent=2
        )
    )
    print(f"\n{args.rounds} rounds, median ({out.relative_to(ROOT)}):\n")
    print(
        "| variant / connections | hits/s | p50 ms | p99 ms | hits per transaction | CPU ms per 1,000 hits | dropped |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, rs in runs.items():

        def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(r[k] for r in rs)

        each = " / ".join(f"{r['rps']:.0f}" for r in rs)
        print(
            f"| {key} | {med('rps'):.0f} ({each}) | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | {med('hits_per_transaction'):.0f} | {med('cpu_per_1000_hits_s') * 1000:.0f} | {med('dropped'):.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
