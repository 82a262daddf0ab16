# ruff: noqa: E501
"""Web app benchmark (issue 12): server time of an applicant's timeline of 1,000 messages and of a
thread of 200, on SQLite and PostgreSQL side by side (docs/benchmarks.md, "Web app").

    .venv/bin/python bench/timeline_bench.py                      # ~3 minutes
    .venv/bin/python bench/timeline_bench.py --requests 200 --json bench/results/timeline-1000.json
    .venv/bin/python bench/timeline_bench.py --backends sqlite --requests 40 --profile bench/results/timeline-1000-profile.txt

Seeding goes through the sync path, without a mail server: 1,000 RFC 5322 messages between one
applicant (two addresses) and two recruiters' mailboxes (drawn at random, seed 12) are indexed
by ``sync.indexer.Indexer`` (threads, participants, applicant history, replies to Postroom's
sends) in chronological batches of 100, folder by folder as a sync meets them, and their bodies
are stored by ``sync.bodies.BodyFetcher``'s own store step (blobs + snippet + attachment count),
except one in 40, left "not downloaded". One thread holds 200 of them (the application, answered
back and forth for a year); the other 800 are 200 threads of 4. One outbound message in four was
sent from Postroom (outbox rows written before the index meets them, as the send does): to the
applicant and a colleague, four in five tracked, with opens and clicks by people and opens by
machines; the applicant's answers name their own copy, so the indexer marks them replied.

Measured, through the real Flask app (``web.create_app``) and its test client (the whole WSGI
app in this process: server time without network), ``time.perf_counter`` around each request:

  page      GET /applicants/<id> and GET /threads/<id>, signed in (tests/web/signin.py)
  api       GET /api/v1/applicants/<id>/timeline (the default page of 50, and ?limit=200, the
            largest) and GET /api/v1/threads/<id>, with a bearer token
  service   services.timeline.applicant_timeline and services.threads.get_thread alone, in a
            session of the app's sessionmaker (SQL + Python, no rendering)

SQL statements per request are counted by a ``before_cursor_execute`` listener on the app's
engine, full garbage collections (generation 2) by a ``gc.callbacks`` hook. Each target is
measured in two GC modes (--gc): the collector as `postroom serve` leaves it, and after
``gc.freeze()`` (the objects alive after start-up moved out of the full collections' way).
After --warmup requests each, --requests requests per target are made in --rounds rounds; each
round runs every backend and mode (their order alternating round by round), so that the noise
of this shared 2-core machine falls on all alike; the load average is printed each round.

The PostgreSQL database (--postgres, default test_bench on the local server) is WIPED (schema
public dropped and migrated again) and ANALYZEd after seeding, as autovacuum would within a
minute of a sync (--no-analyze: without planner statistics); SQLite uses a temporary file.
Results: a Markdown table on stdout and, with --json, bench/results/<name>.json. --profile FILE
writes a cProfile summary (top functions by own and by cumulative time) of each page and API
target.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import create_engine, event, func, insert, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from postroom.config import Config, load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.models import Email, Folder, MailAccount, OutboxMessage, OutboxRecipient, TrackingEvent  # noqa: E402
from providers.base import RemoteMessage  # noqa: E402
from services.applicants import add_applicant  # noqa: E402
from services.orgs import add_org  # noqa: E402
from services.threads import get_thread  # noqa: E402
from services.timeline import applicant_timeline  # noqa: E402
from services.users import create_token  # noqa: E402
from sync.bodies import BodyFetcher  # noqa: E402
from sync.indexer import Indexer  # noqa: E402
from tests.web.signin import ensure_user, signed_in  # noqa: E402
from web import create_app  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ANN, ANN_WORK = "ann.applicant@mail.example", "ann@work.example"
RITA, SAM, LEAD = "rita@acme.example", "sam@acme.example", "lead@acme.example"
NAMES = {ANN: "Ann Applicant", ANN_WORK: "Ann Applicant", RITA: "Rita Recruiter", SAM: "Sam Sourcer"}
BIG_SUBJECT = "Application for the data engineer role"
PARAGRAPHS = [
    "Thank you for the update. I have looked at the schedule you sent and most of the slots work for me, although Thursday afternoon is difficult because of a course I teach.",
    "Could you tell me a little more about the team I would be joining, how many engineers it has, and how the on-call rotation is organised today?",
    "We would like to invite you to the next step: a ninety-minute conversation with two engineers from the platform team, followed by a short chat with the hiring manager.",
    "Please find the details of the take-home exercise below. There is no hard deadline; most people spend about three hours on it, and we care more about the reasoning than the polish.",
    "I have attached an updated version of my CV with the two projects we discussed, and the references you asked for are in the second section.",
    "Our offices are a ten-minute walk from the central station; the reception is on the ground floor and someone will meet you there and show you to the meeting room.",
]


# --------------------------------------------------------------------------------- the data


@dataclasses.dataclass
class Message:
    n: int
    message_id: str
    date: datetime
    outbound: bool
    sender: str
    text: str
    raw: bytes
    holders: list[tuple[str, str]]  # (mailbox address, folder name)
    sent_by_postroom: bool = False
    tracked: bool = False
    copy_ids: dict[str, str] = dataclasses.field(default_factory=dict)  # recipient -> their copy's Message-ID


def conversations(rng: random.Random) -> list[Message]:
    """One thread of 200 messages over a year and 200 threads of 4, applicant and recruiters in
    turn; one outbound message in four sent from Postroom (four in five of those tracked)."""
    threads: list[tuple[str, list[datetime]]] = [(BIG_SUBJECT, [T0 + timedelta(hours=44 * k) for k in range(200)])]
    for t in range(200):
        start = T0 + timedelta(hours=rng.randrange(0, 365 * 24))
        threads.append(
            (
                f"Interview step {t}: {rng.choice(['scheduling', 'exercise', 'feedback', 'references'])}",
                [start + timedelta(hours=5 * k) for k in range(4)],
            )
        )
    messages: list[Message] = []
    for t, (subject, dates) in enumerate(threads):
        chain: list[str] = []  # the ids a reply names: the applicant's answers name their own copy
        previous: Message | None = None
        for k, date in enumerate(dates):
            n = len(messages)
            outbound = k % 2 == 1
            if outbound:
                sender = SAM if t == 0 and k % 6 == 3 else RITA
                to, cc = [ANN], ([SAM] if sender == RITA and k % 4 == 1 else [])
            else:
                sender = ANN_WORK if n % 10 == 7 else ANN
                to, cc = [RITA], ([SAM] if k % 3 == 0 else [])
            msg = Message(n, f"<m{n}.{t}@{sender.split('@')[1]}>", date, outbound, sender, "", b"", [])
            if outbound:
                msg.sent_by_postroom = rng.random() < 0.25
                msg.tracked = msg.sent_by_postroom and rng.random() < 0.8
                if msg.sent_by_postroom:
                    cc = [LEAD]
                    if msg.tracked:
                        msg.copy_ids = {a: f"<copy.{n}.{i}@acme.example>" for i, a in enumerate([ANN, LEAD])}
            refs = chain[:1] + chain[-9:] if len(chain) > 10 else chain
            msg.raw = mime(msg, subject if k == 0 else f"Re: {subject}", to, cc, refs, previous, rng)
            msg.holders = [(sender, "Sent")] if outbound else [(RITA, "INBOX")]
            msg.holders += [(SAM, "INBOX")] if SAM in cc else []
            messages.append(msg)
            chain.append(msg.copy_ids.get(ANN, msg.message_id))
            previous = msg
    return sorted(messages, key=lambda m: m.date)


def mime(
    msg: Message,
    subject: str,
    to: list[str],
    cc: list[str],
    refs: list[str],
    previous: Message | None,
    rng: random.Random,
) -> bytes:
    """A realistic message: plain text (and HTML for Postroom's sends) with the quoted previous
    message under it; one inbound message in seven carries a PDF."""
    m = EmailMessage()
    m["From"] = f"{NAMES[msg.sender]} <{msg.sender}>"
    m["To"] = ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = subject
    m["Date"] = format_datetime(msg.date)
    m["Message-ID"] = msg.message_id
    if refs:
        m["In-Reply-To"] = refs[-1]
        m["References"] = " ".join(refs)
    greeting = "Hi Ann," if msg.outbound else "Dear Rita,"
    own = f"{rng.choice(PARAGRAPHS)}\n\n{rng.choice(PARAGRAPHS)}"
    msg.text = f"{greeting}\n\n{own}\n\nBest regards,\n{NAMES[msg.sender]}\n"
    body = msg.text
    if previous is not None:
        quoted = "\n".join("> " + line for line in previous.text.splitlines()[:12])
        body += f"\nOn {format_datetime(previous.date)}, {NAMES[previous.sender]} wrote:\n{quoted}\n"
    m.set_content(body)
    if msg.sent_by_postroom:
        m.add_alternative(f"<p>{greeting}</p>" + "".join(f"<p>{p}</p>" for p in own.split("\n\n")), subtype="html")
    if not msg.outbound and msg.n % 7 == 0:
        m.add_attachment(rng.randbytes(24_000), maintype="application", subtype="pdf", filename=f"Ann CV v{msg.n}.pdf")
    return m.as_bytes()


def headers_of(raw: bytes) -> bytes:
    end = raw.find(b"\n\n")
    return raw[: end + 1] if end >= 0 else raw


@dataclasses.dataclass
class Seeded:
    org_id: int
    applicant_id: int
    thread_id: int
    user_email: str


def seed(config: Config, sessions: sessionmaker[Session], messages: list[Message]) -> Seeded:
    with sessions.begin() as s:
        org = add_org(s, "Acme Hiring").id
        accounts = {a: MailAccount(org_id=org, email=a, provider="imap", secret=b"") for a in (RITA, SAM)}
        s.add_all(accounts.values())
        s.flush()
        folders = {
            (a, name): Folder(account_id=acc.id, name=name, role=name.lower(), state="incremental")
            for a, acc in accounts.items()
            for name in ("INBOX", "Sent")
        }
        s.add_all(folders.values())
        s.flush()
        account_ids = {a: acc.id for a, acc in accounts.items()}
        folder_ids = {key: f.id for key, f in folders.items()}
        applicant, _ = add_applicant(s, "Ann Applicant", [ANN, ANN_WORK], org)
        applicant_id = applicant.id
        sends = [m for m in messages if m.sent_by_postroom]
        s.execute(
            insert(OutboxMessage),
            [
                {
                    "account_id": account_ids[m.sender],
                    "message_id": m.message_id,
                    "raw": m.raw,
                    "recipients": [ANN, LEAD],
                    "status": "sent",
                    "sent_at": m.date,
                    "created_at": m.date,
                    "tracked": m.tracked,
                    "applicant_id": applicant_id,
                }
                for m in sends
            ],
        )
        outbox = dict(s.execute(select(OutboxMessage.message_id, OutboxMessage.id)).tuples().all())
        s.execute(
            insert(OutboxRecipient),
            [
                {
                    "outbox_id": outbox[m.message_id],
                    "address": a,
                    "kind": kind,
                    "message_id": m.copy_ids.get(a, m.message_id),
                    "status": "sent" if m.tracked else None,
                    "sent_at": m.date,
                }
                for m in sends
                for a, kind in ((ANN, "to"), (LEAD, "cc"))
            ],
        )
        rows = s.execute(
            select(OutboxRecipient.id, OutboxRecipient.address, OutboxMessage.message_id, OutboxMessage.tracked).join(
                OutboxMessage
            )
        ).all()
        when = {m.message_id: m.date for m in sends}
        events = []
        for i, (rid, address, mid, tracked) in enumerate(rows):
            if not tracked:
                continue
            at = when[mid]
            events.append(
                {
                    "recipient_id": rid,
                    "kind": "open",
                    "at": at + timedelta(seconds=2),
                    "seconds_after_send": 2.0,
                    "method": "GET",
                    "user_agent": "GoogleImageProxy",
                    "machine": True,
                    "reason": "image proxy",
                }
            )
            for k in range(i % 3):
                events.append(
                    {
                        "recipient_id": rid,
                        "kind": "open",
                        "at": at + timedelta(minutes=30 + k),
                        "seconds_after_send": 1800.0 + k,
                        "method": "GET",
                        "user_agent": "Mozilla/5.0",
                        "machine": False,
                    }
                )
            if address == ANN and i % 4 == 0:
                events.append(
                    {
                        "recipient_id": rid,
                        "kind": "click",
                        "at": at + timedelta(minutes=40),
                        "seconds_after_send": 2400.0,
                        "method": "GET",
                        "user_agent": "Mozilla/5.0",
                        "link": 0,
                        "url": "https://cal.example.com/slots",
                        "machine": False,
                    }
                )
        s.execute(insert(TrackingEvent), events)
    for start in range(0, len(messages), 100):  # what a sync meets, batch by batch, folder by folder
        batch = messages[start : start + 100]
        for (address, folder), fid in folder_ids.items():
            found = [
                RemoteMessage(f"{m.n}", headers_of(m.raw), size=len(m.raw), internal_date=m.date)
                for m in batch
                if (address, folder) in m.holders
            ]
            if found:
                Indexer(sessions, org, account_ids[address], use_thread_hints=False).index(fid, found)
    with sessions() as s:
        ids = dict(s.execute(select(Email.message_id, Email.id).where(Email.org_id == org)).tuples().all())
        thread_id = s.scalar(select(Email.thread_id).where(Email.message_id == messages[0].message_id))
    stored = [(ids[m.message_id], m.raw) for m in messages if m.n % 40 != 39]
    fetcher = BodyFetcher(sessions, config, account_ids[RITA])
    for start in range(0, len(stored), 200):
        fetcher._store(stored[start : start + 200])  # the body step of a sync, without the IMAP fetch
    user = "bench.recruiter@acme.example"
    assert thread_id is not None
    return Seeded(org, applicant_id, thread_id, user)


def check(sessions: sessionmaker[Session], seeded: Seeded) -> dict[str, Any]:
    """What was seeded is what the numbers are about: 1,000 items, a thread of 200, tracking."""
    with sessions() as s:
        items = applicant_timeline(s, seeded.org_id, seeded.applicant_id)
        thread = get_thread(s, seeded.org_id, seeded.thread_id)
        replied = s.scalar(
            select(func.count()).select_from(OutboxRecipient).where(OutboxRecipient.replied_at.is_not(None))
        )
    facts = {
        "timeline_items": len(items),
        "outbound": sum(i.direction == "out" for i in items),
        "sent_from_postroom": sum(i.tracking is not None for i in items),
        "tracked": sum(bool(i.tracking and i.tracking.tracked) for i in items),
        "in_two_mailboxes": sum(len(i.accounts) == 2 for i in items),
        "with_snippet": sum(bool(i.snippet) for i in items),
        "with_attachments": sum(bool(i.has_attachments) for i in items),
        "thread_messages": len(thread.messages),
        "recipients_replied": replied or 0,
    }
    assert facts["timeline_items"] == 1000 and facts["thread_messages"] == 200, facts
    assert facts["tracked"] > 0 and facts["recipients_replied"] > 0, facts
    return facts


# --------------------------------------------------------------------------------- a backend


@contextmanager
def backend(name: str, pg_url: str, messages: list[Message], analyze: bool = True) -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix=f"timeline-bench-{name}-") as tmp:
        env = {"POSTROOM_DATA_DIR": tmp, "POSTROOM_SECRET_KEY": SECRET, "HOME": tmp, "POSTROOM_LOG_LEVEL": "WARNING"}
        if name == "postgresql":
            env["POSTROOM_DATABASE_URL"] = pg_url
        config = load_config(env=env)
        if name == "postgresql":
            admin = create_engine(config.database.url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            admin.dispose()
        engine = make_engine(config.database)
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        started = time.perf_counter()
        seeded = seed(config, sessions, messages)
        seed_seconds = time.perf_counter() - started
        if name == "postgresql" and analyze:  # what autovacuum does a minute after a sync (this server runs without it)
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        facts = check(sessions, seeded)
        engine.dispose()
        app = create_app(config)
        app_sessions = app.extensions["postroom"]["sessions"]
        client = signed_in(app, seeded.user_email, org_id=seeded.org_id)
        with app_sessions.begin() as s:
            token = create_token(s, ensure_user(app, seeded.user_email, seeded.org_id))
        counter = Counter(app_sessions.kw["bind"])
        targets = make_targets(app, client, token, app_sessions, seeded)
        print(f"{name}: seeded in {seed_seconds:.1f} s: {facts}", flush=True)
        try:
            yield {
                "name": name,
                "targets": targets,
                "counter": counter,
                "facts": facts,
                "seed_seconds": seed_seconds,
                "app": app,
                "seeded": seeded,
                "token": token,
            }
        finally:
            counter.close()
            app_sessions.kw["bind"].dispose()


class Counter:
    """SQL statements executed on an engine."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.n = engine, 0
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.n += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def make_targets(
    app: Flask, client: Any, token: str, app_sessions: sessionmaker[Session], seeded: Seeded
) -> dict[str, Callable[[], int]]:
    """Target name -> one request (returns the bytes answered)."""
    bearer = {"Authorization": f"Bearer {token}"}

    def get(path: str, headers: dict[str, str] | None = None) -> Callable[[], int]:
        def call() -> int:
            resp = client.get(path, headers=headers)
            if resp.status_code != 200:
                raise RuntimeError(f"{path}: {resp.status_code}")
            return len(resp.get_data())

        return call

    def timeline() -> int:
        with app_sessions() as s:
            return len(applicant_timeline(s, seeded.org_id, seeded.applicant_id))

    def thread() -> int:
        with app_sessions() as s:
            return len(get_thread(s, seeded.org_id, seeded.thread_id).messages)

    a, t = seeded.applicant_id, seeded.thread_id
    return {
        "timeline page": get(f"/applicants/{a}"),
        "timeline api (50)": get(f"/api/v1/applicants/{a}/timeline", bearer),
        "timeline api (200)": get(f"/api/v1/applicants/{a}/timeline?limit=200", bearer),
        "timeline service": timeline,
        "thread page": get(f"/threads/{t}"),
        "thread api": get(f"/api/v1/threads/{t}", bearer),
        "thread service": thread,
    }


# --------------------------------------------------------------------------------- measuring


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class FullCollections:
    """Full (generation 2) garbage collections while counting, and the time they took."""

    def __init__(self) -> None:
        self.n, self.seconds, self._started = 0, 0.0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.n += 1
            self.seconds += time.perf_counter() - self._started

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def measure(runs: list[dict[str, Any]], requests: int, rounds: int, warmup: int, modes: list[str]) -> dict[str, Any]:
    """Each round: every backend (order alternating), each GC mode, every target. Mode "gc" is
    the interpreter as `postroom serve` leaves it; "frozen" is after ``gc.freeze()``, which
    moves every object alive then (the app, SQLAlchemy's metadata, the templates) out of the
    full collections' way."""
    times: dict[tuple[str, str, str], list[float]] = {}
    statements: dict[tuple[str, str, str], list[int]] = {}
    sizes: dict[tuple[str, str, str], int] = {}
    pauses: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for call in run["targets"].values():
            for _ in range(warmup):
                call()
    loads = [os.getloadavg()]
    per_round = max(1, requests // rounds)
    full = FullCollections()
    for r in range(rounds):
        for run in runs if r % 2 == 0 else list(reversed(runs)):
            counter = run["counter"]
            for mode in modes if r % 2 == 0 else list(reversed(modes)):
                if mode == "frozen":
                    gc.collect()
                    gc.freeze()
                for name, call in run["targets"].items():
                    key = (run["name"], name, mode)
                    n0, s0 = full.n, full.seconds
                    for _ in range(per_round):
                        before = counter.n
                        started = time.perf_counter()
                        size = call()
                        times.setdefault(key, []).append(time.perf_counter() - started)
                        statements.setdefault(key, []).append(counter.n - before)
                        sizes[key] = size
                    pauses.setdefault(key, [0, 0.0])
                    pauses[key][0] += full.n - n0
                    pauses[key][1] += full.seconds - s0
                if mode == "frozen":
                    gc.unfreeze()
        loads.append(os.getloadavg())
        print(
            f"round {r + 1}/{rounds}  load average {loads[-1][0]:.2f} {loads[-1][1]:.2f} {loads[-1][2]:.2f}", flush=True
        )
    full.close()
    rows = []
    for (backend_name, target, mode), ts in times.items():
        ms = [1000 * t for t in ts]
        key = (backend_name, target, mode)
        rows.append({
            "backend": backend_name, "target": target, "gc": mode, "requests": len(ms),
            "p50_ms": statistics.median(ms), "p95_ms": pct(ms, 0.95), "max_ms": max(ms), "mean_ms": statistics.fmean(ms),
            "statements": sorted(set(statements[key])), "answer": sizes[key],
            "full_collections": pauses[key][0], "full_collection_ms": 1000 * pauses[key][1],
        })  # fmt: skip
    return {"rows": rows, "load_average": loads}


def profile(runs: list[dict[str, Any]], n: int, out: Path) -> None:
    """cProfile of each request target (not the service alone), top functions by own time and
    by cumulative time; with the collector frozen, so that no full collection is charged to
    whichever line happened to trigger it."""
    report = io.StringIO()
    gc.collect()
    gc.freeze()
    for run in runs:
        for name, call in run["targets"].items():
            if "service" in name:
                continue
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                call()
            prof.disable()
            report.write(f"\n===== {run['name']}: {name} ({n} requests)\n")
            stats = pstats.Stats(prof, stream=report)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(30)
    gc.unfreeze()
    out.write_text(report.getvalue())
    print(f"profile written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="measured requests per target and backend")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test_bench", help="WIPED")
    ap.add_argument(
        "--no-analyze",
        action="store_true",
        help="leave PostgreSQL without planner statistics (a fresh sync before autovacuum)",
    )
    ap.add_argument("--gc", default="gc,frozen", help="GC modes to measure: gc (as served), frozen (after gc.freeze())")
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--profile", type=Path, metavar="FILE", help="also write a cProfile summary of each page and API target"
    )
    args = ap.parse_args()
    messages = conversations(random.Random(12))
    with ExitStack() as stack:
        runs = [
            stack.enter_context(backend(name, args.postgres, messages, not args.no_analyze))
            for name in args.backends.split(",")
        ]
        result = measure(runs, args.requests, args.rounds, args.warmup, args.gc.split(","))
        if args.profile:
            profile(runs, 20, args.profile)
    print(
        f"\n| backend | target | GC | p50 ms | p95 ms | max ms | full GCs (ms) | SQL statements | answer bytes | p95 ≤ {args.target_ms:g} ms |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in result["rows"]:
        ok = "yes" if row["p95_ms"] <= args.target_ms else "**no**"
        stmts = "/".join(str(n) for n in row["statements"])
        print(
            f"| {row['backend']} | {row['target']} | {row['gc']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['max_ms']:.1f} | "
            f"{row['full_collections']} ({row['full_collection_ms']:.0f}) | {stmts} | {row['answer']:,} | {ok} |"
        )
    loads = result["load_average"]
    print(
        f"\nload average (1 min) from {loads[0][0]:.2f} to {loads[-1][0]:.2f}, highest {max(la[0] for la in loads):.2f}; {os.cpu_count()} CPUs"
    )
    if args.json:
        args.json.write_text(json.dumps({
            "requests": args.requests, "rounds": args.rounds, "warmup": args.warmup,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "seeded": {r["name"]: {"facts": r["facts"], "seconds": r["seed_seconds"]} for r in runs},
            **result,
        }, indent=1, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
