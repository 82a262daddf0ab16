# ruff: noqa: E501
"""Gmail benchmark (issue 4): Postroom's engine syncing a 10,000-message Gmail mailbox
through google-api-python-client and the local Gmail stand-in, with API calls and quota.

    .venv/bin/python bench/gmail_bench.py --messages 10000            # ~3 minutes
    .venv/bin/python bench/gmail_bench.py --messages 2000 --rounds 1 --passes 20   # quick check
    .venv/bin/python bench/gmail_bench.py --messages 10000 --profile  # + cProfile of one initial sync

The stand-in (:class:`standins.gmail.GmailStandIn`, served over HTTP on 127.0.0.1 by
:class:`standins.httpserver.ServerThread`) runs in a **child process**, forked before any
measurement and driven over a pipe, so its CPU is measured apart from Postroom's: the
child reports its own ``time.process_time()`` on request. Postroom runs in this process
exactly as the worker runs it: :meth:`sync.scheduler.Scheduler.sync` (claim, the real
:class:`sync.engine.AccountSync`, release) on a fresh SQLite database, the account added
with :func:`sync.accounts.add_gmail_account`, the provider built by the engine
(:class:`providers.gmail.GmailProvider`: google-api-python-client over httplib2, google-auth
refreshing the token at the stand-in's token endpoint).

The mailbox is N messages of the deterministic corpus the IMAP benchmark uses
(``tests/rig/corpus.py``, seed 1, same owner alice@example.test, reply chains of 1-12),
stored directly in the stand-in's mailbox (``Mailbox.add``, so Gmail threads them) and
labelled the way a real mailbox looks:

  * the owner's own messages: SENT; everyone else's: INBOX (+UNREAD unless the corpus
    marks them seen, +STARRED when flagged);
  * one thread in five carries the user label "Hiring" on every message; half of those
    threads are archived (their received messages are not in INBOX);
  * mailing-list mail (the corpus's List-Id messages): user label "Newsletters", archived.

Measured (each with wall time, this process's CPU, the stand-in's CPU, and the stand-in's
log of API calls by method, batch envelopes and their sizes, token calls and quota units):

  initial    a whole-account initial sync on a fresh database, body_policy "applicants"
             (applicants chosen as in bench/sync_bench.py: ~10 % of messages) and "none",
             alternating, --rounds each; the index is checked against the stand-in
  nochange   --passes passes with nothing changed (median), then 3 passes after the
             stand-in expired every access token (a refresh each)
  incremental  --new messages delivered (the corpus continued), one pass; --incr-rounds
  expired    --new more delivered, then the history expired (history.list answers 404):
             one pass, which resyncs every folder; then one no-change pass

Inside this process, the time spent in the provider's methods (list_folders,
fetch_changes, fetch_headers, fetch_bodies: client library, HTTP and waiting for the
stand-in) is measured by wrapping them with timers (wall and thread CPU); the rest of
the pass is Postroom's engine. No product file is changed.

Results: bench/results/<name>.json (default gmail-<N>) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import email.utils
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.headerregistry import Address
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from provider_bench_common import Timer, log, med, pick_applicants, spread, uptime  # noqa: E402
from sqlalchemy import event, func, select  # noqa: E402

import providers.gmail as gmail_provider  # noqa: E402
from postroom.config import GoogleConfig, load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.models import Email, Folder, MessageCopy  # noqa: E402
from providers.gmail_calls import GmailCalls  # noqa: E402
from services.accounts import add_gmail_account  # noqa: E402
from services.applicants import add_applicant  # noqa: E402
from standins import httpserver  # noqa: E402
from standins.gmail import QUOTA_UNITS, GmailStandIn  # noqa: E402
from standins.httpserver import ServerThread  # noqa: E402
from sync.bodies import BodyFetcher  # noqa: E402
from sync.engine import AccountSync  # noqa: E402
from sync.scheduler import Scheduler  # noqa: E402
from tests.rig.corpus import Item, generate  # noqa: E402

OWNER = Address("Alice Test", "alice", "example.test")
ADDRESS = "alice@example.test"
SECRET = "bench-secret-key-0123456789abcdef"
SYNCED_LABELS = ("INBOX", "SENT", "TRASH", "SPAM", "DRAFT")  # + user labels: what list_folders keeps
HIDDEN = {"TRASH", "SPAM"}


# ================================================================== the stand-in process
def labels_for(item: Item, hiring: str, news: str) -> list[str]:
    """Where a corpus message sits in a realistic Gmail mailbox (see the module docstring)."""
    head = item.raw.split(b"\r\n\r\n", 1)[0]
    sender = email.utils.parseaddr(email.message_from_bytes(head + b"\r\n\r\n").get("From", ""))[1].lower()
    labels: set[str] = set()
    archived = False
    if b"\r\nList-Id:" in head or head.startswith(b"List-Id:"):
        labels.add(news)
        archived = True
    if item.thread % 5 == 0:
        labels.add(hiring)
        archived = archived or item.thread % 10 == 0
    if sender == ADDRESS:
        labels.add("SENT")
    elif not archived:
        labels.add("INBOX")
    if sender != ADDRESS:
        if "\\Seen" not in item.flags:
            labels.add("UNREAD")
        if "\\Flagged" in item.flags:
            labels.add("STARRED")
    if not labels & {"INBOX", "SENT", hiring, news}:  # never invisible to a label-based sync
        labels.add("INBOX")
    return sorted(labels)


def _addresses(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    msg = email.message_from_string(head + "\r\n\r\n")
    fields = msg.get_all("From", []) + msg.get_all("To", []) + msg.get_all("Cc", [])
    return sorted({a.lower() for _, a in email.utils.getaddresses(fields) if "@" in a})


class _CountingApp:
    """The stand-in's WSGI app, counting HTTP requests and body bytes each way."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app, self.requests, self.bytes_in, self.bytes_out = app, 0, 0, 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.requests += 1
        self.bytes_in += int(environ.get("CONTENT_LENGTH") or 0)
        out = list(self.app(environ, start_response))
        self.bytes_out += sum(len(b) for b in out)
        return out


def call_stats(standin: GmailStandIn, app: _CountingApp) -> dict[str, Any]:
    """The stand-in's call log since the last reset: by method, batches and their sizes, quota."""
    calls = list(standin.calls)
    by_method: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    batch_sizes: list[int] = []
    in_batch: Counter[str] = Counter()
    for c in calls:
        if c.method == "batch":
            batch_sizes.append(0)
        elif c.in_batch and batch_sizes:
            batch_sizes[-1] += 1  # one client, one thread: parts follow their envelope
        if c.in_batch:
            in_batch[c.method.removeprefix("users.")] += 1
        by_method[c.method.removeprefix("users.")] += 1
        if c.status != 200:
            by_status[f"{c.method.removeprefix('users.')} {c.status}"] += 1
    api = [c for c in calls if c.method not in ("token", "batch")]
    return {
        "by_method": dict(sorted(by_method.items())),
        "in_batch": dict(sorted(in_batch.items())),
        "errors": dict(sorted(by_status.items())),
        "api_calls": len(api),
        "quota_units": sum(QUOTA_UNITS.get(c.method, 0) for c in api),
        "quota_by_method": {
            m.removeprefix("users."): QUOTA_UNITS.get(m, 0) * n
            for m, n in sorted(Counter(c.method for c in api).items())
        },
        "batches": len(batch_sizes),
        "batch_sizes": dict(sorted(Counter(batch_sizes).items())),
        "http_requests": app.requests,
        "request_bytes": app.bytes_in,
        "response_bytes": app.bytes_out,
    }


def standin_main(conn: Connection, n: int, extra: int, nagle: bool) -> None:
    """The child: build and seed the mailbox, serve it, answer commands until "stop"."""
    # The stand-in's keep-alive server writes a response's head and body in separate
    # send()s; with Nagle's algorithm on, the body waits for the client's delayed ACK
    # (up to 40 ms on Linux). Gmail does not do that, so by default the benchmark sets
    # TCP_NODELAY on the stand-in's sockets (the standard StreamRequestHandler switch).
    httpserver._KeepAliveHandler.disable_nagle_algorithm = not nagle
    t0 = time.perf_counter()
    standin = GmailStandIn()
    token = standin.grant(ADDRESS)
    box = standin.add_user(ADDRESS)
    hiring, news = box.add_label("Hiring"), box.add_label("Newsletters")
    items = list(generate(n + extra, seed=1, owner=OWNER))
    t_gen = time.perf_counter() - t0
    per_msg: list[list[str]] = []
    size = 0
    for it in items[:n]:
        box.add(it.raw, labels_for(it, hiring, news), internal_date_ms=int(it.date.timestamp() * 1000))
        per_msg.append(_addresses(it.raw))
        size += len(it.raw)
    held: Iterator[Item] = iter(items[n:])
    app = _CountingApp(standin.wsgi)
    server = ServerThread(app)
    label_counts = Counter(label for m in box.messages.values() for label in m.labels)
    conn.send(
        {
            "url": server.url,
            "refresh_token": token,
            "client_id": standin.client_id,
            "client_secret": standin.client_secret,
            "per_msg": per_msg,
            "bytes": size,
            "labels": {"hiring": hiring, "news": news},
            "label_counts": dict(sorted(label_counts.items())),
            "threads": len(box.threads),
            "generate_s": t_gen,
            "seed_s": time.perf_counter() - t0 - t_gen,
        }
    )
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "stop":
                break
            if cmd == "cpu":
                conn.send(time.process_time())
            elif cmd == "reset":
                standin.reset_calls()
                app.requests = app.bytes_in = app.bytes_out = 0
                conn.send(None)
            elif cmd == "stats":
                conn.send(call_stats(standin, app))
            elif cmd == "deliver":
                ids = []
                for it in (next(held) for _ in range(arg)):
                    ids.append(
                        box.add(it.raw, labels_for(it, hiring, news), internal_date_ms=int(time.time() * 1000)).id
                    )
                conn.send(ids)
            elif cmd == "expire_history":
                box.expire_history()
                conn.send(box.history_floor)
            elif cmd == "expire_tokens":
                standin.expire_access_tokens()
                conn.send(None)
            elif cmd == "truth":
                with box.lock:
                    folders: dict[str, list[str]] = {}
                    for m in box.messages.values():
                        for label in m.labels:
                            synced = label in SYNCED_LABELS or label.startswith("Label_")
                            if synced and (label in HIDDEN or not m.labels & HIDDEN):
                                folders.setdefault(label, []).append(m.id)
                        if not m.labels & HIDDEN:  # the virtual All Mail folder: all but trash and spam
                            folders.setdefault("ALL", []).append(m.id)
                    msgids = {m.id: m.message_id for m in box.messages.values()}
                conn.send({"folders": folders, "message_ids": msgids, "violations": list(standin.schema_violations)})
            else:
                conn.send(ValueError(f"unknown command {cmd}"))
    finally:
        server.close()


class StandInProcess:
    def __init__(self, n: int, extra: int, nagle: bool = False) -> None:
        ctx = mp.get_context("fork")  # no threads exist yet in this process
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=standin_main, args=(child, n, extra, nagle), daemon=True)
        self.proc.start()
        self.info: dict[str, Any] = self.conn.recv()

    def ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        out = self.conn.recv()
        if isinstance(out, Exception):
            raise out
        return out

    def stop(self) -> None:
        try:
            self.conn.send(("stop", None))
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


# ================================================================== provider instrumentation


PROVIDER_TIME: dict[str, Timer] = {}  # provider methods, nested provider parts, engine parts
PROVIDER_METHODS = ("list_folders", "fetch_changes", "fetch_headers", "fetch_bodies")
CLIENT_BATCHES: list[tuple[str, int]] = []


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = PROVIDER_TIME.setdefault(name, Timer())
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            t.wall += time.perf_counter() - w0
            t.cpu += time.thread_time() - c0
            t.calls += 1

    return wrapper


def _timed_gen(name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        it = fn(*args, **kwargs)
        t = PROVIDER_TIME.setdefault(name, Timer())
        t.calls += 1
        while True:
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                t.wall += time.perf_counter() - w0
                t.cpu += time.thread_time() - c0
            yield item

    return wrapper


def instrument() -> None:
    cls = gmail_provider.GmailProvider
    for name in ("list_folders", "fetch_changes", "fetch_bodies"):
        setattr(cls, name, _timed(name, getattr(cls, name)))
    cls.fetch_headers = _timed_gen("fetch_headers", cls.fetch_headers)  # type: ignore[method-assign]
    # the provider's own glue inside fetch_headers (metadata JSON -> RemoteMessage)
    gmail_provider.message_from_metadata = _timed("message_from_metadata", gmail_provider.message_from_metadata)
    # the engine's fixed per-pass work, and the provider's setup (discovery document,
    # service, credentials) that list_folders' timer includes
    cls._api = _timed("provider_setup", cls._api)
    Scheduler.claim = _timed("engine.claim", Scheduler.claim)
    Scheduler.release = _timed("engine.release", Scheduler.release)
    BodyFetcher.wanted_by_folder = _timed("engine.wanted_by_folder", BodyFetcher.wanted_by_folder)
    AccountSync._reconcile_folders = _timed("engine.reconcile_folders", AccountSync._reconcile_folders)
    original_batch = GmailCalls.batch

    def batch(self: GmailCalls, requests: Any, what: str) -> Any:
        CLIENT_BATCHES.append((what, len(requests)))
        return original_batch(self, requests, what)

    GmailCalls.batch = batch  # type: ignore[method-assign]


def provider_snapshot() -> dict[str, tuple[float, float, int]]:
    return {k: (t.wall, t.cpu, t.calls) for k, t in PROVIDER_TIME.items()}


def provider_delta(before: dict[str, tuple[float, float, int]]) -> dict[str, dict[str, float]]:
    out = {}
    for k, t in PROVIDER_TIME.items():
        w, c, n = before.get(k, (0.0, 0.0, 0))
        if t.calls - n:
            out[k] = {"wall_s": round(t.wall - w, 4), "cpu_s": round(t.cpu - c, 4), "calls": t.calls - n}
    return out


# ================================================================== Postroom instances
class SqlCounter:
    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0


@dataclass
class Instance:
    workdir: str
    config: Any
    engine: Any
    sessions: Any
    account_id: int
    scheduler: Scheduler
    sql: SqlCounter

    def close(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.workdir, ignore_errors=True)


def new_instance(base: str, info: dict[str, Any], policy: str, applicants: list[str]) -> Instance:
    d = tempfile.mkdtemp(prefix="bench-gmail-", dir=base)
    env = {"POSTROOM_DATA_DIR": d, "POSTROOM_SECRET_KEY": SECRET, "POSTROOM_DATABASE_URL": f"sqlite:///{d}/postroom.db"}
    config = load_config(env=env)
    google = GoogleConfig(
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        token_uri=info["url"] + "/token",
        api_root=info["url"] + "/",
    )
    config = dataclasses.replace(config, google=google, sync=dataclasses.replace(config.sync, body_policy=policy))
    engine = make_engine(config.database)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        account_id = add_gmail_account(s, config, ADDRESS, info["refresh_token"]).id
    with sessions.begin() as s:
        for i, addr in enumerate(applicants):
            add_applicant(s, f"Applicant {i}", [addr])
    sql = SqlCounter()

    @event.listens_for(engine, "before_cursor_execute")
    def _stmt(*_: Any) -> None:
        sql.statements += 1

    @event.listens_for(engine, "commit")
    def _commit(*_: Any) -> None:
        sql.commits += 1

    scheduler = Scheduler(config, sessions, owner=f"bench:{os.getpid()}:gmail")
    return Instance(d, config, engine, sessions, account_id, scheduler, sql)


def measured_pass(inst: Instance, standin: StandInProcess, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """One Scheduler.sync of the account, with everything around it measured."""
    standin.ask("reset")
    CLIENT_BATCHES.clear()
    p0 = provider_snapshot()
    s0, k0 = inst.sql.statements, inst.sql.commits
    sc0 = standin.ask("cpu")
    c0, w0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    res = inst.scheduler.sync(inst.account_id, force=True)
    if profiler is not None:
        profiler.disable()
    w1, c1 = time.perf_counter(), time.process_time()
    sc1 = standin.ask("cpu")
    if not res.ok or any(f.error for f in res.folders):
        raise RuntimeError(f"sync failed: {res.summary()}")
    prov = provider_delta(p0)
    outer = [v for k, v in prov.items() if k in PROVIDER_METHODS]
    prov_wall = sum(v["wall_s"] for v in outer)
    prov_cpu = sum(v["cpu_s"] for v in outer)
    return {
        "wall_s": w1 - w0,
        "cpu_s": c1 - c0,
        "standin_cpu_s": sc1 - sc0,
        "provider": prov,
        "provider_wall_s": prov_wall,
        "provider_cpu_s": prov_cpu,
        "waiting_s": prov_wall - prov_cpu,  # in the provider but not on this thread's CPU: the stand-in, the wire
        "engine_cpu_s": (c1 - c0) - prov_cpu,
        "calls": standin.ask("stats"),
        "client_batches": dict(Counter(f"{what}×{size}" for what, size in CLIENT_BATCHES)),
        "sql_statements": inst.sql.statements - s0,
        "sql_commits": inst.sql.commits - k0,
        "new": res.new,
        "bodies": sum(f.bodies for f in res.folders),
        "removed": sum(f.removed for f in res.folders),
        "resynced": [f.name for f in res.folders if f.resynced],
        "summary": res.summary(),
    }


def verify(inst: Instance, standin: StandInProcess) -> dict[str, Any]:
    """The index against the stand-in: every message of every synced label exactly once."""
    truth = standin.ask("truth")
    with inst.sessions() as s:
        folders = dict(
            s.execute(select(Folder.id, Folder.name).where(Folder.account_id == inst.account_id)).tuples().all()
        )
        rows = s.execute(
            select(MessageCopy.folder_id, MessageCopy.remote_id, Email.message_id)
            .join(Email, Email.id == MessageCopy.email_id, isouter=True)
            .where(MessageCopy.account_id == inst.account_id)
        ).all()
        emails = s.scalar(select(func.count()).select_from(Email)) or 0
        email_dupes = s.scalar(
            select(func.count()).select_from(
                select(Email.message_id).group_by(Email.org_id, Email.message_id).having(func.count() > 1).subquery()
            )
        )
    index: dict[str, list[str]] = {}
    wrong_message_id = 0
    for folder_id, remote_id, message_id in rows:
        index.setdefault(folders[folder_id], []).append(remote_id)
        if message_id != truth["message_ids"].get(remote_id):
            wrong_message_id += 1
    lost = extra = dupes = 0
    per_folder = {}
    for name in sorted(set(index) | set(truth["folders"])):
        have, want = index.get(name, []), set(truth["folders"].get(name, []))
        lost += len(want - set(have))
        extra += len(set(have) - want)
        dupes += len(have) - len(set(have))
        per_folder[name] = {"server": len(want), "indexed": len(have)}
    distinct = len(set(truth["message_ids"].values()))
    out = {
        "folders": per_folder,
        "copies": len(rows),
        "lost": lost,
        "extra": extra,
        "duplicate_copies": dupes,
        "copies_with_wrong_message_id": wrong_message_id,
        "emails": emails,
        "server_distinct_message_ids": distinct,
        "duplicate_emails": email_dupes,
        "schema_violations": len(truth["violations"]),
    }
    out["ok"] = not (lost or extra or dupes or wrong_message_id or email_dupes or out["schema_violations"]) and (
        emails == distinct
    )
    return out


# ================================================================== main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3, help="initial syncs per body policy")
    ap.add_argument("--passes", type=int, default=25, help="no-change passes (median reported)")
    ap.add_argument("--new", type=int, default=100, help="messages arriving before an incremental pass")
    ap.add_argument("--incr-rounds", type=int, default=3)
    ap.add_argument("--applicant-share", type=float, default=0.10)
    ap.add_argument(
        "--profile", action="store_true", help="cProfile one extra initial sync (top functions into the JSON)"
    )
    ap.add_argument("--name", help="results file name (default gmail-<N>)")
    ap.add_argument(
        "--stand-in-nagle",
        action="store_true",
        help="leave Nagle's algorithm on in the stand-in's server (its default)",
    )
    args = ap.parse_args()
    n = args.messages
    name = args.name or f"gmail-{n}"
    extra = args.new * (args.incr_rounds + 1)
    out: dict[str, Any] = {
        "name": name,
        "messages": n,
        "rounds": args.rounds,
        "passes": args.passes,
        "new": args.new,
        "standin": "child process (fork), HTTP on 127.0.0.1, keep-alive; CPU = the child's process_time()",
        "standin_tcp_nodelay": not args.stand_in_nagle,
        "uptime_before": uptime(),
        "loadavg_before": os.getloadavg(),
    }
    log(f"load before: {out['uptime_before']}")
    t_all = time.perf_counter()
    base = tempfile.mkdtemp(prefix="bench-gmail-")
    standin = StandInProcess(n, extra, nagle=args.stand_in_nagle)
    instances: list[Instance] = []
    try:
        info = standin.info
        per_msg = [set(a) for a in info["per_msg"]]
        applicants, covered = pick_applicants(per_msg, ADDRESS, args.applicant_share)
        out["mailbox"] = {
            "bytes": info["bytes"],
            "label_counts": info["label_counts"],
            "user_labels": info["labels"],
            "gmail_threads": info["threads"],
            "applicants": applicants,
            "applicant_messages": covered,
            "generate_s": info["generate_s"],
            "seed_s": info["seed_s"],
        }
        log(
            f"stand-in pid {standin.proc.pid} at {info['url']}: {n} msgs ({info['bytes'] / 1e6:.0f} MB, "
            f"{info['threads']} threads) generated in {info['generate_s']:.0f}s, stored in {info['seed_s']:.0f}s; "
            f"labels {info['label_counts']}; {len(applicants)} applicants cover {covered} msgs"
        )
        instrument()

        # ---- initial syncs, alternating policies
        initial: list[dict[str, Any]] = []
        keep: Instance | None = None
        for r in range(args.rounds):
            order = ["applicants", "none"] if r % 2 == 0 else ["none", "applicants"]
            for policy in order:
                inst = new_instance(base, info, policy, applicants)
                instances.append(inst)
                m = measured_pass(inst, standin)
                m["verify"] = verify(inst, standin)
                m.update(round=r, policy=policy)
                initial.append(m)
                log(
                    f"round {r} initial {policy:10s} {m['wall_s']:6.2f}s wall, {m['cpu_s']:5.2f}s cpu, stand-in "
                    f"{m['standin_cpu_s']:5.2f}s cpu; {m['new']} new, {m['bodies']} bodies; "
                    f"{m['calls']['api_calls']} calls, {m['calls']['quota_units']} units; verify ok={m['verify']['ok']}"
                )
                if policy == "applicants" and keep is None and r == args.rounds - 1:
                    keep = inst
                else:
                    inst.close()
                    instances.remove(inst)
        out["initial"] = initial
        if keep is None:  # rounds == 0
            keep = new_instance(base, info, "applicants", applicants)
            instances.append(keep)
            measured_pass(keep, standin)

        # ---- no-change passes
        nochange = [measured_pass(keep, standin) for _ in range(args.passes)]
        for m in nochange:
            assert m["new"] == 0, m["summary"]
        out["nochange"] = nochange
        log(
            f"nochange x{len(nochange)}: median {med(m['wall_s'] for m in nochange) * 1000:.1f} ms wall, "
            f"{med(m['cpu_s'] for m in nochange) * 1000:.1f} ms cpu; calls {nochange[-1]['calls']['by_method']}"
        )
        expired_token = []
        for _ in range(3):
            standin.ask("expire_tokens")
            expired_token.append(measured_pass(keep, standin))
        out["nochange_token_expired"] = expired_token
        log(f"nochange after token expiry: calls {expired_token[-1]['calls']['by_method']}")

        # ---- incremental passes
        incremental = []
        for _ in range(args.incr_rounds):
            standin.ask("deliver", args.new)
            m = measured_pass(keep, standin)
            m["verify"] = verify(keep, standin)
            incremental.append(m)
            log(
                f"incremental +{args.new}: {m['wall_s'] * 1000:.0f} ms, {m['new']} new copies, {m['bodies']} bodies, "
                f"calls {m['calls']['by_method']}, {m['calls']['quota_units']} units; verify ok={m['verify']['ok']}"
            )
        out["incremental"] = incremental

        # ---- history expired
        standin.ask("deliver", args.new)
        standin.ask("expire_history")
        m = measured_pass(keep, standin)
        m["verify"] = verify(keep, standin)
        out["expired_history"] = m
        log(
            f"expired history: {m['wall_s']:.2f}s, resynced {m['resynced']}, {m['new']} new copies, "
            f"calls {m['calls']['by_method']}, {m['calls']['quota_units']} units; verify ok={m['verify']['ok']}"
        )
        after = measured_pass(keep, standin)
        out["nochange_after_expired"] = after
        log(f"nochange after the resync: calls {after['calls']['by_method']}")

        if args.profile:
            prof_inst = new_instance(base, info, "applicants", applicants)
            instances.append(prof_inst)
            prof = cProfile.Profile()
            m = measured_pass(prof_inst, standin, profiler=prof)
            buf = io.StringIO()
            st = pstats.Stats(prof, stream=buf)
            st.sort_stats("tottime").print_stats(35)
            st.sort_stats("cumulative").print_stats(50)
            out["profile"] = {"wall_s_under_profiler": m["wall_s"], "text": buf.getvalue().splitlines()}
            log(f"profiled initial sync: {m['wall_s']:.1f}s under cProfile")
    finally:
        for inst in instances:
            try:
                inst.close()
            except Exception as exc:  # cleanup must not hide the real error
                log(f"cleanup: {exc}")
        standin.stop()
        shutil.rmtree(base, ignore_errors=True)

    out["uptime_after"] = uptime()
    out["loadavg_after"] = os.getloadavg()
    out["summary"] = summarise(out)
    out["machine"] = machine()
    out["total_seconds"] = time.perf_counter() - t_all
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    path = ROOT / "bench" / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(markdown(out))
    log(f"load after: {out['uptime_after']}")
    log(f"wrote {path.relative_to(ROOT)} in {out['total_seconds']:.0f}s total")
    return 0


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        **{
            pkg: version(pkg) for pkg in ("google-api-python-client", "google-auth", "google-auth-httplib2", "httplib2")
        },
    }
    try:
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        pass
    return info


def _phase(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of a list of measured passes (calls from the last one; they are checked equal)."""
    keys = ("wall_s", "cpu_s", "standin_cpu_s", "provider_wall_s", "provider_cpu_s", "waiting_s", "engine_cpu_s")
    out: dict[str, Any] = {k: med(r[k] for r in runs) for k in keys}
    out["wall_range_s"] = spread(r["wall_s"] for r in runs)
    out["calls"] = runs[-1]["calls"]
    out["calls_identical"] = len({json.dumps(r["calls"]["by_method"], sort_keys=True) for r in runs}) == 1
    out["sql_statements"] = med(r["sql_statements"] for r in runs)
    out["sql_commits"] = med(r["sql_commits"] for r in runs)
    out["n"] = len(runs)
    return out


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    n = out["messages"]
    s: dict[str, Any] = {}
    for policy in ("applicants", "none"):
        runs = [r for r in out["initial"] if r["policy"] == policy]
        if runs:
            p = _phase(runs)
            p["msgs_per_s"] = n / p["wall_s"]
            p["bodies"] = runs[-1]["bodies"]
            p["copies"] = runs[-1]["new"]
            p["verified"] = all(r["verify"]["ok"] for r in runs)
            p["body_fetch_wall_s"] = med(r["provider"].get("fetch_bodies", {}).get("wall_s", 0.0) for r in runs)
            p["header_fetch_wall_s"] = med(r["provider"].get("fetch_headers", {}).get("wall_s", 0.0) for r in runs)
            p["listing_wall_s"] = med(r["provider"].get("fetch_changes", {}).get("wall_s", 0.0) for r in runs)
            s[f"initial_{policy}"] = p
    s["nochange"] = _phase(out["nochange"])
    s["nochange_token_expired"] = _phase(out["nochange_token_expired"])
    s["incremental"] = _phase(out["incremental"])
    s["incremental"]["verified"] = all(r["verify"]["ok"] for r in out["incremental"])
    s["expired_history"] = _phase([out["expired_history"]])
    s["expired_history"]["verified"] = out["expired_history"]["verify"]["ok"]
    s["nochange_after_expired"] = _phase([out["nochange_after_expired"]])
    return s


def _mix(by: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(by.items()))


def markdown(out: dict[str, Any]) -> str:
    n, s = out["messages"], out["summary"]
    rows = [
        ("initial sync, body_policy applicants", "initial_applicants"),
        ("initial sync, body_policy none", "initial_none"),
        ("no-change pass", "nochange"),
        ("no-change pass, access token expired", "nochange_token_expired"),
        (f"incremental pass, {out['new']} new messages", "incremental"),
        (f"history expired (404) + {out['new']} new: resync", "expired_history"),
        ("no-change pass after the resync", "nochange_after_expired"),
    ]
    lines = [
        f"### Gmail benchmark: {n} messages ({out['mailbox']['bytes'] / 1e6:.0f} MB), medians (min–max)",
        "",
        "| pass | runs | wall | Postroom CPU | of which provider+client CPU | stand-in CPU | API calls | quota units | HTTP requests | calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, key in rows:
        if key not in s:
            continue
        p = s[key]
        c = p["calls"]
        wr = p["wall_range_s"]
        wall = (
            f"{p['wall_s']:.2f} s ({wr[0]:.2f}–{wr[1]:.2f})"
            if p["wall_s"] >= 1
            else f"{p['wall_s'] * 1000:.1f} ms ({wr[0] * 1000:.1f}–{wr[1] * 1000:.1f})"
        )
        unit = (lambda x: f"{x:.2f} s") if p["wall_s"] >= 1 else (lambda x: f"{x * 1000:.1f} ms")
        lines.append(
            f"| {label} | {p['n']} | {wall} | {unit(p['cpu_s'])} | {unit(p['provider_cpu_s'])} | {unit(p['standin_cpu_s'])} "
            f"| {c['api_calls']:,} | {c['quota_units']:,} | {c['http_requests']:,} | {_mix(c['by_method'])} |"
        )
    lines.append("")
    for key in ("initial_applicants", "initial_none"):
        if key in s:
            p = s[key]
            lines.append(
                f"{key}: {p['msgs_per_s']:,.0f} msg/s; {p['copies']} copies, {p['bodies']} bodies; batches "
                f"{p['calls']['batch_sizes']}; listing {p['listing_wall_s']:.2f} s, headers {p['header_fetch_wall_s']:.2f} s, "
                f"bodies {p['body_fetch_wall_s']:.2f} s (provider wall); verified {p['verified']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
