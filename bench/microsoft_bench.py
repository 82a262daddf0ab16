# ruff: noqa: E501
"""Microsoft benchmark (issue 5): Postroom's engine syncing a 10,000-message Exchange mailbox
through the Microsoft Graph backend (requests + msal) and the EWS backend (exchangelib),
each against its local stand-in over HTTPS, with the requests it makes.

    .venv/bin/python bench/microsoft_bench.py --messages 10000                # both, ~7 minutes
    .venv/bin/python bench/microsoft_bench.py --backend graph --messages 10000
    .venv/bin/python bench/microsoft_bench.py --messages 1000 --rounds 1 --passes 20  # quick check

Graph: the stand-ins (:class:`standins.graph.GraphStandIn` and
:class:`standins.microsoft_identity.IdentityStandIn`, each behind
:class:`standins.graph_https.HttpsServerThread` with a throwaway trustme CA, as
``tests/standins/graph_rig.py`` runs them) live in a **child process** forked before any
measurement and driven over a pipe, so their CPU is measured apart from Postroom's (the
child's ``time.process_time()``). Postroom runs in this process as the worker runs it:
:meth:`sync.scheduler.Scheduler.sync` (claim, the real :class:`sync.engine.AccountSync`,
release) on a fresh SQLite database, the account added with
:func:`sync.accounts.add_graph_account` and ``[microsoft]`` pointed at the stand-ins
(``ca_file``, ``instance_discovery = false``), the provider opened by the engine
(:class:`providers.graph.GraphProvider`, msal refreshing the token at the identity
stand-in, the refreshed tokens persisted by the engine's token saver).

EWS: :class:`standins.ews.EwsStandIn` over HTTPS with the same CA, the account added with
:func:`sync.accounts.add_ews_account` (basic auth, ``ca_file``) and opened by the engine
(:class:`providers.ews.EwsProvider`, exchangelib with a pinned endpoint and build). Requests
are counted as SOAP operations (GetItem with MimeContent, i.e. bodies, apart). One
bench-side shim, see :func:`instrument_ews`: exchangelib's ``EWSDateTime`` in
``RemoteMessage.internal_date`` is passed on as a plain datetime, because the engine cannot
store it; the results record how often the shim fired.

The mailbox is N messages of the corpus the IMAP benchmark uses (``tests/rig/corpus.py``,
seed 1, owner alice@example.test, reply chains of 1-12), filed as a mailbox looks:

  * mailing-list mail (the corpus's List-Id messages): user folder "Newsletters";
  * the owner's own messages: Sent Items (read; created in the mailbox, so without
    transport headers, as Exchange keeps sent items);
  * one thread in five: user folder "Inbox/Hiring" (a child of Inbox);
  * the rest: Inbox. Read and flagged state come from the corpus's flags.

Measured (each with wall time, this process's CPU, the stand-ins' CPU, and the requests
the stand-ins saw -- Graph: delta pages, $batch envelopes and their parts by kind, $value,
token and OpenID-configuration calls; EWS: SOAP operations -- TLS connections, bytes each way):

  initial      a whole-account initial sync on a fresh database, body_policy "applicants"
               (applicants chosen as in bench/sync_bench.py: ~10 % of messages) and
               "none", alternating, --rounds each; the index is checked against the stand-in
  nochange     --passes passes with nothing changed (median); Graph: then 3 after the
               identity stand-in expired every access token (a refresh each)
  incremental  --new messages delivered (the corpus continued), one pass; --incr-rounds
  expired      --new more delivered, then every sync state expired (Graph: 410
               SyncStateNotFound; EWS: ErrorInvalidSyncStateData): one pass, which resyncs
               every folder; then a no-change pass

Inside this process the time in the provider's methods (list_folders, fetch_changes,
fetch_headers, fetch_bodies: the client libraries, TLS and waiting for the stand-in) is
measured by wrapping them (wall and thread CPU); the rest of the pass is the engine.
No product file is changed. The stand-ins' conversation lookup is replaced by an indexed
one while seeding (:func:`index_conversations`); that changes only their speed.

Results: bench/results/<name>.json (default microsoft-<N>) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address
from email.policy import compat32
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for p in (ROOT, BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from provider_bench_common import (  # noqa: E402
    CountingApp,
    ProviderTimers,
    SqlCounter,
    StandInProcess,
    addresses,
    log,
    machine,
    med,
    pick_applicants,
    sender,
    serve_commands,
    spread,
    uptime,
)
from sqlalchemy import func, select  # noqa: E402

import providers.graph as graph_provider  # noqa: E402
from postroom.config import MicrosoftConfig, load_config  # noqa: E402
from postroom.db import make_engine, make_sessionmaker, upgrade  # noqa: E402
from postroom.models import Email, Folder, MessageCopy  # noqa: E402
from providers import graph_codec  # noqa: E402
from services.accounts import add_graph_account  # noqa: E402
from services.applicants import add_applicant  # noqa: E402
from standins import httpserver  # noqa: E402
from standins.graph_store import GraphMailbox  # noqa: E402
from sync.scheduler import Scheduler  # noqa: E402
from tests.rig.corpus import Item, generate  # noqa: E402

OWNER = Address("Alice Test", "alice", "example.test")
ADDRESS = "alice@example.test"
SECRET = "bench-secret-key-0123456789abcdef"
TIMERS = ProviderTimers()
EWS_DATE_SHIM = [0]  # see instrument_ews


# ================================================================== the Graph stand-in process
def place(item: Item) -> str:
    """Which folder a corpus message sits in (see the module docstring)."""
    head = item.raw.split(b"\r\n\r\n", 1)[0]
    if b"\r\nList-Id:" in head:
        return "news"
    if sender(item.raw) == ADDRESS:
        return "sent"
    return "hiring" if item.thread % 5 == 0 else "inbox"


def index_conversations(box: GraphMailbox) -> None:
    """Give the stand-in mailbox an indexed conversationId lookup for seeding.

    ``GraphMailbox._conversation_for`` parses the headers of every stored item for each
    new one (quadratic: ~50 million header parses for 10,000 messages); this keeps the
    same rule (join the conversation of a message named in Message-ID, In-Reply-To or
    References, else start one) with a dict. Only the stand-in's speed changes."""
    known: dict[str, str] = {}

    def conversation_for(raw: bytes) -> str:
        msg = message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=compat32)
        own = str(msg.get("Message-ID", "")).strip()
        refs = [own, *" ".join(str(msg.get(h, "")) for h in ("In-Reply-To", "References")).split()]
        found = next((known[r] for r in refs if r in known), None)
        cid = found or "AAQkAGI2" + secrets.token_urlsafe(24) + "="
        if own:
            known.setdefault(own, cid)
        return cid

    box._conversation_for = conversation_for  # type: ignore[method-assign]


def graph_standin(conn: Connection, items: list[Item], n: int, nagle: bool) -> None:
    """The child: build and seed the mailbox, serve both stand-ins over HTTPS, answer commands."""
    from standins.graph import GraphStandIn
    from standins.graph_https import HttpsServerThread
    from standins.microsoft_identity import IdentityStandIn
    from tests.standins.graph_rig import _ca, server_context

    # The keep-alive server writes a response's head and body in separate send()s; with
    # Nagle's algorithm on, the body waits for the client's delayed ACK (up to 40 ms).
    # Graph does not do that, so by default the stand-in's sockets get TCP_NODELAY
    # (as bench/gmail_bench.py does).
    httpserver._KeepAliveHandler.disable_nagle_algorithm = not nagle
    t0 = time.perf_counter()
    identity = IdentityStandIn()
    graph = GraphStandIn(identity)
    box = graph.add_user(ADDRESS, "Alice Test")
    index_conversations(box)
    folders = {
        "inbox": box.folder("inbox").id,
        "sent": box.folder("sentitems").id,
        "hiring": box.add_folder("Hiring", "inbox"),
        "news": box.add_folder("Newsletters"),
    }
    message_ids: dict[str, str] = {}

    def add(it: Item, received: Any) -> str:
        where = place(it)
        own = where == "sent"
        stored = box.add(
            it.raw,
            folders[where],
            is_read=own or "\\Seen" in it.flags,
            delivered=not own,
            received=received,
        )
        if "\\Flagged" in it.flags:
            stored.flag = "flagged"
        message_ids[stored.id] = it.msgid
        return stored.id

    for it in items[:n]:
        add(it, it.date)
    held: Iterator[Item] = iter(items[n:])
    seed_s = time.perf_counter() - t0
    refresh_token = identity.grant(ADDRESS)
    ctx = server_context()
    idp_app, graph_app = CountingApp(identity.wsgi), CountingApp(graph.wsgi)
    idp_server, graph_server = HttpsServerThread(idp_app, ctx), HttpsServerThread(graph_app, ctx)
    conns = [0]

    def connections() -> int:
        return idp_server._server.connections + graph_server._server.connections  # type: ignore[no-any-return]

    def reset(_: Any) -> None:
        graph.reset_calls()
        identity.requests.clear()
        identity.token_calls.clear()
        idp_app.reset()
        graph_app.reset()
        conns[0] = connections()

    def stats(_: Any) -> dict[str, Any]:
        calls = list(graph.calls)
        batch_sizes: list[int] = []
        for c in calls:
            if c.route == "batch" and not c.in_batch:
                batch_sizes.append(0)
            elif c.in_batch and batch_sizes:
                batch_sizes[-1] += 1  # one client thread: parts follow their envelope
        wire = Counter(c.route for c in calls if not c.in_batch)
        idp = Counter(
            "token" if r.endswith("/token") else "openid-configuration" if "openid-configuration" in r else r
            for r in identity.requests
        )
        kinds = Counter({{"batch": "$batch", "messages.value": "$value"}.get(k, k): v for k, v in wire.items()})
        kinds.update(idp)
        return {
            "by_kind": dict(sorted(kinds.items())),
            "graph_requests": dict(sorted(wire.items())),
            "batch_parts": dict(sorted(Counter(c.route for c in calls if c.in_batch).items())),
            "batches": len(batch_sizes),
            "batch_sizes": dict(sorted(Counter(batch_sizes).items())),
            "identity_requests": dict(sorted(idp.items())),
            "errors": dict(sorted(Counter(f"{c.route} {c.status}" for c in calls if c.status >= 400).items())),
            "http_requests": graph_app.requests + idp_app.requests,
            "request_bytes": graph_app.bytes_in + idp_app.bytes_in,
            "response_bytes": graph_app.bytes_out + idp_app.bytes_out,
            "tls_connections": connections() - conns[0],
        }

    def deliver(k: int) -> list[str]:
        now = None  # the stand-in stamps the arrival time
        return [add(next(held), now) for _ in range(k)]

    def expire_sync_state(_: Any) -> None:
        box.expire_sync_state()

    def expire_tokens(_: Any) -> None:
        identity.expire_access_tokens()

    def truth(_: Any) -> dict[str, Any]:
        with box.lock:
            outbox = box.folder("outbox").id
            by_folder: dict[str, list[str]] = {fid: [] for fid in box.folders if fid != outbox}
            for item in box.items.values():
                by_folder.setdefault(item.folder_id, []).append(item.id)
            ids = {i: message_ids.get(i) for i in box.items}
        violations = graph.schema_violations + identity.schema_violations
        return {"folders": by_folder, "message_ids": ids, "violations": violations}

    info = {
        "idp_url": idp_server.url,
        "graph_url": graph_server.url,
        "tenant": identity.tenant,
        "client_id": identity.client_id,
        "client_secret": identity.client_secret,
        "ca_file": _ca()[1],
        "refresh_token": refresh_token,
        "seed_s": seed_s,
        "folder_counts": {k: len(box.in_folder(fid)) for k, fid in folders.items()},
        "folders": len(box.folders) - 1,  # without Outbox, which Postroom skips
    }
    try:
        serve_commands(
            conn,
            info,
            {
                "reset": reset,
                "stats": stats,
                "deliver": deliver,
                "expire_sync_state": expire_sync_state,
                "expire_tokens": expire_tokens,
                "truth": truth,
            },
        )
    finally:
        idp_server.close()
        graph_server.close()


# ================================================================== the EWS stand-in process
EWS_PASSWORD = "Winter2026!"


def index_ews_conversations(box: Any) -> None:
    """The EWS stand-in's ConversationId rule (join the conversation of a message named in
    In-Reply-To or References) with a dict instead of a scan of every item; see
    :func:`index_conversations`."""
    from standins.ews_store import _new_id, message_ids

    known: dict[str, str] = {}

    def conversation_for(raw: bytes) -> str:
        msg = message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=compat32)
        parents = [*message_ids(msg.get("In-Reply-To")), *message_ids(msg.get("References"))]
        cid = next((known[p] for p in parents if p in known), None) or _new_id("AAQkA")
        own = " ".join(str(msg.get("Message-ID", "")).split())
        if own:
            known.setdefault(own, cid)
        return cid

    box._conversation_for = conversation_for


def ews_standin(conn: Connection, items: list[Item], n: int, nagle: bool) -> None:
    """The child: build and seed an Exchange mailbox, serve EWS over HTTPS, answer commands."""
    from standins.ews import EwsStandIn
    from standins.ews_store import FLAG_STATUS_FLAGGED
    from standins.graph_https import HttpsServerThread
    from tests.standins.graph_rig import _ca, server_context

    httpserver._KeepAliveHandler.disable_nagle_algorithm = not nagle  # see graph_standin
    t0 = time.perf_counter()
    ews = EwsStandIn()
    box = ews.add_user(ADDRESS, password=EWS_PASSWORD, name="Alice Test")
    index_ews_conversations(box)
    folders = {
        "inbox": box.folder("inbox").id,
        "sent": box.folder("sentitems").id,
        "hiring": box.add_folder("Hiring", "inbox"),
        "news": box.add_folder("Newsletters"),
    }
    message_ids: dict[str, str] = {}

    def add(it: Item, received: Any) -> str:
        where = place(it)
        own = where == "sent"
        stored = box.add(it.raw, folders[where], is_read=own or "\\Seen" in it.flags, delivered=not own)
        if received is not None:
            stored.received = received
        if "\\Flagged" in it.flags:
            stored.flag_status = FLAG_STATUS_FLAGGED
        message_ids[stored.id] = it.msgid
        return stored.id

    for it in items[:n]:
        add(it, it.date)
    held: Iterator[Item] = iter(items[n:])
    seed_s = time.perf_counter() - t0
    app = CountingApp(ews.wsgi)
    server = HttpsServerThread(app, server_context())
    conns = [0]

    def reset(_: Any) -> None:
        ews.reset_calls()
        app.reset()
        conns[0] = server._server.connections

    def stats(_: Any) -> dict[str, Any]:
        calls = list(ews.calls)

        def kind(c: Any) -> str:
            if c.operation == "GetItem" and "item:MimeContent" in c.fields:
                return "GetItem(MimeContent)"
            return c.operation or "(no auth)"

        return {
            "by_kind": dict(sorted(Counter(kind(c) for c in calls).items())),
            "errors": dict(sorted(Counter(f"{kind(c)} {c.status}" for c in calls if c.status >= 400).items())),
            "http_requests": app.requests,
            "request_bytes": app.bytes_in,
            "response_bytes": app.bytes_out,
            "tls_connections": server._server.connections - conns[0],
        }

    def deliver(k: int) -> list[str]:
        return [add(next(held), None) for _ in range(k)]

    def truth(_: Any) -> dict[str, Any]:
        with box.lock:
            outbox = box.folder("outbox").id
            mail = [
                f.id
                for f in box.subfolders("msgfolderroot")
                if f.id != outbox and (f.folder_class or "").startswith("IPF.Note")
            ]
            by_folder: dict[str, list[str]] = {fid: [] for fid in mail}
            for item in box.items.values():
                by_folder.setdefault(item.folder_id, []).append(item.id)
            ids = {i: message_ids.get(i) for i in box.items}
        return {"folders": by_folder, "message_ids": ids, "violations": list(ews.schema_violations)}

    info = {
        "url": server.url,
        "ca_file": _ca()[1],
        "seed_s": seed_s,
        "folder_counts": {k: len(box.in_folder(fid)) for k, fid in folders.items()},
        "folders": len(box.subfolders("msgfolderroot")) - 1,
    }
    try:
        serve_commands(
            conn,
            info,
            {
                "reset": reset,
                "stats": stats,
                "deliver": deliver,
                "expire_sync_state": lambda _: box.expire_sync_states(),
                "truth": truth,
            },
        )
    finally:
        server.close()


def instrument_graph() -> None:
    cls = graph_provider.GraphProvider
    for name in ("list_folders", "fetch_changes", "fetch_bodies"):
        setattr(cls, name, TIMERS.wrap(name, getattr(cls, name)))
    cls.fetch_headers = TIMERS.wrap_gen("fetch_headers", cls.fetch_headers)  # type: ignore[method-assign]
    # the provider's own glue inside fetch_headers (Graph JSON -> RemoteMessage)
    graph_codec.remote_message = TIMERS.wrap("remote_message", graph_codec.remote_message)


def instrument_ews() -> None:
    import providers.ews as ews_provider
    from providers import ews_codec

    cls = ews_provider.EwsProvider
    for name in ("list_folders", "fetch_changes", "fetch_bodies"):
        setattr(cls, name, TIMERS.wrap(name, getattr(cls, name)))
    cls.fetch_headers = TIMERS.wrap_gen("fetch_headers", cls.fetch_headers)  # type: ignore[method-assign]
    original = ews_codec.remote_message

    def remote_message(item: Any) -> Any:
        # providers/ews_codec.py hands exchangelib's EWSDateTime on as internal_date, and
        # EWSDateTime.astimezone(datetime.timezone.utc) raises InvalidTypeError when the
        # engine stores it (postroom.models.UTCDateTime): no EWS account can sync. Until
        # that is fixed there, the benchmark passes the same instant as a plain datetime,
        # and counts how often it had to (0 once the backend is fixed).
        msg = original(item)
        when = msg.internal_date
        if when is not None and type(when) is not datetime:
            EWS_DATE_SHIM[0] += 1
            msg = dataclasses.replace(msg, internal_date=datetime.fromtimestamp(when.timestamp(), tz=UTC))
        return msg

    ews_codec.remote_message = TIMERS.wrap("remote_message", remote_message)


# ================================================================== Postroom instances
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


def _config(d: str, policy: str) -> Any:
    env = {"POSTROOM_DATA_DIR": d, "POSTROOM_SECRET_KEY": SECRET, "POSTROOM_DATABASE_URL": f"sqlite:///{d}/postroom.db"}
    config = load_config(env=env)
    return dataclasses.replace(config, sync=dataclasses.replace(config.sync, body_policy=policy))


def _instance(d: str, config: Any, add: Any, applicants: list[str]) -> Instance:
    engine = make_engine(config.database)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        account_id = add(s).id
    with sessions.begin() as s:
        for i, addr in enumerate(applicants):
            add_applicant(s, f"Applicant {i}", [addr])
    scheduler = Scheduler(config, sessions, owner=f"bench:{os.getpid()}:microsoft")
    return Instance(d, config, engine, sessions, account_id, scheduler, SqlCounter(engine))


def new_graph_instance(base: str, info: dict[str, Any], policy: str, applicants: list[str]) -> Instance:
    d = tempfile.mkdtemp(prefix="bench-ms-", dir=base)
    config = _config(d, policy)
    microsoft = MicrosoftConfig(
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        tenant=info["tenant"],
        authority=f"{info['idp_url']}/{info['tenant']}",
        graph_root=f"{info['graph_url']}/v1.0",
        ca_file=info["ca_file"],
        instance_discovery=False,
    )
    config = dataclasses.replace(config, microsoft=microsoft)
    return _instance(d, config, lambda s: add_graph_account(s, config, ADDRESS, info["refresh_token"]), applicants)


def new_ews_instance(base: str, info: dict[str, Any], policy: str, applicants: list[str]) -> Instance:
    """An EWS account as ``postroom accounts add-ews --auth basic`` stores it (HTTPS, the test CA)."""
    from services.accounts import EwsAccountRequest, add_ews_account

    d = tempfile.mkdtemp(prefix="bench-ms-", dir=base)
    config = _config(d, policy)
    req = EwsAccountRequest(
        email=ADDRESS,
        ews_url=info["url"] + "/EWS/Exchange.asmx",
        auth="basic",
        username=ADDRESS,
        password=EWS_PASSWORD,
        ca_file=info["ca_file"],
    )
    return _instance(d, config, lambda s: add_ews_account(s, config, req), applicants)


def measured_pass(inst: Instance, standin: StandInProcess, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """One Scheduler.sync of the account, with everything around it measured."""
    standin.ask("reset")
    p0 = TIMERS.snapshot()
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
    prov = TIMERS.since(p0)
    top = [k for k in prov if k != "remote_message"]
    prov_wall = sum(prov[k]["wall_s"] for k in top)
    prov_cpu = sum(prov[k]["cpu_s"] for k in top)
    return {
        "wall_s": w1 - w0,
        "cpu_s": c1 - c0,
        "standin_cpu_s": sc1 - sc0,
        "provider": prov,
        "provider_wall_s": prov_wall,
        "provider_cpu_s": prov_cpu,
        "waiting_s": prov_wall - prov_cpu,  # in the provider, not on this thread's CPU: stand-in, wire, TLS
        "engine_cpu_s": (c1 - c0) - prov_cpu,
        "requests": standin.ask("stats"),
        "sql_statements": inst.sql.statements - s0,
        "sql_commits": inst.sql.commits - k0,
        "folders": len(res.folders),
        "new": res.new,
        "bodies": sum(f.bodies for f in res.folders),
        "removed": sum(f.removed for f in res.folders),
        "resynced": sum(1 for f in res.folders if f.resynced),
        "summary": res.summary(),
    }


def verify(inst: Instance, standin: StandInProcess) -> dict[str, Any]:
    """The index against the stand-in: every message of every folder exactly once."""
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
    for name in set(index) | set(truth["folders"]):
        have, want = index.get(name, []), set(truth["folders"].get(name, []))
        lost += len(want - set(have))
        extra += len(set(have) - want)
        dupes += len(have) - len(set(have))
    distinct = len(set(truth["message_ids"].values()))
    out = {
        "copies": len(rows),
        "server_items": len(truth["message_ids"]),
        "lost": lost,
        "extra": extra,
        "duplicate_copies": dupes,
        "copies_with_wrong_message_id": wrong_message_id,
        "emails": emails,
        "server_distinct_message_ids": distinct,
        "duplicate_emails": email_dupes,
        "schema_violations": len(truth["violations"]),
        "unsynced_folders": sorted(set(truth["folders"]) - set(folders.values())),
    }
    out["ok"] = not (
        lost or extra or dupes or wrong_message_id or email_dupes or out["schema_violations"] or out["unsynced_folders"]
    ) and (emails == distinct)
    return out


# ================================================================== backends
@dataclass(frozen=True)
class Backend:
    name: str
    standin: Any  # the child's target
    new_instance: Any
    instrument: Any
    packages: tuple[str, ...]
    tokens: bool  # OAuth: measure a pass after the access tokens expired


BACKENDS: dict[str, Backend] = {
    "graph": Backend(
        "graph", graph_standin, new_graph_instance, instrument_graph, ("requests", "msal", "urllib3"), True
    ),
    "ews": Backend(
        "ews", ews_standin, new_ews_instance, instrument_ews, ("exchangelib", "requests", "urllib3", "lxml"), False
    ),
}


# ================================================================== one backend's run
def run_backend(backend: Backend, args: argparse.Namespace, items: list[Item], applicants: list[str]) -> dict[str, Any]:
    n = args.messages
    out: dict[str, Any] = {"backend": backend.name}
    base = tempfile.mkdtemp(prefix=f"bench-{backend.name}-")
    standin = StandInProcess(backend.standin, items, n, args.stand_in_nagle)
    instances: list[Instance] = []
    try:
        info = standin.info
        out["mailbox"] = {k: info[k] for k in ("folder_counts", "folders", "seed_s")}
        log(
            f"{backend.name}: stand-in pid {standin.proc.pid}, seeded in {info['seed_s']:.1f}s: {info['folder_counts']}"
        )
        backend.instrument()

        initial: list[dict[str, Any]] = []
        keep: Instance | None = None
        for r in range(args.rounds):
            order = ["applicants", "none"] if r % 2 == 0 else ["none", "applicants"]
            for policy in order:
                inst = backend.new_instance(base, info, policy, applicants)
                instances.append(inst)
                m = measured_pass(inst, standin)
                m["verify"] = verify(inst, standin)
                m.update(round=r, policy=policy)
                initial.append(m)
                rq = m["requests"]
                log(
                    f"round {r} initial {policy:10s} {m['wall_s']:6.2f}s wall, {m['cpu_s']:5.2f}s cpu, stand-in "
                    f"{m['standin_cpu_s']:5.2f}s cpu; {m['new']} new, {m['bodies']} bodies; {rq['http_requests']} requests "
                    f"{rq['by_kind']}; verify ok={m['verify']['ok']}"
                )
                if policy == "applicants" and keep is None and r == args.rounds - 1:
                    keep = inst
                else:
                    inst.close()
                    instances.remove(inst)
        out["initial"] = initial
        if keep is None:  # --rounds 0
            keep = backend.new_instance(base, info, "applicants", applicants)
            instances.append(keep)
            measured_pass(keep, standin)

        nochange = [measured_pass(keep, standin) for _ in range(args.passes)]
        for m in nochange:
            assert m["new"] == 0, m["summary"]
        out["nochange"] = nochange
        log(
            f"nochange x{len(nochange)}: median {med(m['wall_s'] for m in nochange) * 1000:.1f} ms wall, "
            f"{med(m['cpu_s'] for m in nochange) * 1000:.1f} ms cpu; {nochange[-1]['requests']['by_kind']}"
        )
        if backend.tokens:
            expired_token = []
            for _ in range(3):
                standin.ask("expire_tokens")
                expired_token.append(measured_pass(keep, standin))
            out["nochange_token_expired"] = expired_token
            log(f"nochange after token expiry: {expired_token[-1]['requests']['by_kind']}")

        incremental = []
        for _ in range(args.incr_rounds):
            standin.ask("deliver", args.new)
            m = measured_pass(keep, standin)
            m["verify"] = verify(keep, standin)
            incremental.append(m)
            log(
                f"incremental +{args.new}: {m['wall_s'] * 1000:.0f} ms, {m['new']} new, {m['bodies']} bodies, "
                f"{m['requests']['by_kind']} parts {m['requests'].get('batch_parts')}; verify ok={m['verify']['ok']}"
            )
        out["incremental"] = incremental

        standin.ask("deliver", args.new)
        standin.ask("expire_sync_state")
        m = measured_pass(keep, standin)
        m["verify"] = verify(keep, standin)
        out["expired_sync_state"] = m
        log(
            f"sync state expired: {m['wall_s']:.2f}s, {m['resynced']} folders resynced, {m['new']} new copies, "
            f"{m['requests']['by_kind']} errors {m['requests']['errors']}; verify ok={m['verify']['ok']}"
        )
        after = measured_pass(keep, standin)
        after["verify"] = verify(keep, standin)
        out["nochange_after_expired"] = after
        log(f"nochange after the resync: {after['requests']['by_kind']}; verify ok={after['verify']['ok']}")

        if args.profile:
            prof_inst = backend.new_instance(base, info, "applicants", applicants)
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
    if backend.name == "ews":
        out["internal_date_shim_applied"] = EWS_DATE_SHIM[0]
    out["summary"] = summarise(out, n)
    out["machine"] = machine(backend.packages)
    return out


# ================================================================== main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2, help="initial syncs per body policy")
    ap.add_argument("--passes", type=int, default=25, help="no-change passes (median reported)")
    ap.add_argument("--new", type=int, default=100, help="messages arriving before an incremental pass")
    ap.add_argument("--incr-rounds", type=int, default=3)
    ap.add_argument("--applicant-share", type=float, default=0.10)
    ap.add_argument(
        "--profile", action="store_true", help="cProfile one extra initial sync (top functions into the JSON)"
    )
    ap.add_argument("--name", help="results file name (default microsoft-<N>)")
    ap.add_argument(
        "--stand-in-nagle", action="store_true", help="leave Nagle's algorithm on in the stand-ins' servers"
    )
    args = ap.parse_args()
    chosen = list(BACKENDS) if args.backend == "all" else [args.backend]
    n = args.messages
    name = args.name or f"microsoft-{n}"
    out: dict[str, Any] = {
        "name": name,
        "messages": n,
        "rounds": args.rounds,
        "passes": args.passes,
        "new": args.new,
        "standin": "child process (fork), HTTPS on 127.0.0.1 (trustme CA), keep-alive; CPU = the child's process_time()",
        "standin_tcp_nodelay": not args.stand_in_nagle,
        "uptime_before": uptime(),
    }
    log(f"load before: {out['uptime_before']}")
    t_all = time.perf_counter()
    t = time.perf_counter()
    items = list(generate(n + args.new * (args.incr_rounds + 1), seed=1, owner=OWNER))
    per_msg = [addresses(it.raw) for it in items[:n]]
    applicants, covered = pick_applicants(per_msg, ADDRESS, args.applicant_share)
    out["corpus"] = {
        "bytes": sum(len(it.raw) for it in items[:n]),
        "threads": len({it.thread for it in items[:n]}),
        "applicants": applicants,
        "applicant_messages": covered,
        "generate_s": time.perf_counter() - t,
    }
    log(
        f"corpus: {n} msgs generated in {out['corpus']['generate_s']:.0f}s; {len(applicants)} applicants cover {covered}"
    )
    out["backends"] = {b: run_backend(BACKENDS[b], args, items, applicants) for b in chosen}
    out["uptime_after"] = uptime()
    out["total_seconds"] = time.perf_counter() - t_all
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"{name}.json"
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(markdown(out))
    log(f"load after: {out['uptime_after']}")
    log(f"wrote {path.relative_to(ROOT)} in {out['total_seconds']:.0f}s total")
    return 0


# ================================================================== summary
def _phase(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of a list of measured passes (requests from the last one; checked equal)."""
    keys = ("wall_s", "cpu_s", "standin_cpu_s", "provider_wall_s", "provider_cpu_s", "waiting_s", "engine_cpu_s")
    out: dict[str, Any] = {k: med(r[k] for r in runs) for k in keys}
    out["wall_range_s"] = spread(r["wall_s"] for r in runs)
    out["requests"] = runs[-1]["requests"]
    shape = ("by_kind", "batch_parts")
    out["requests_identical"] = (
        len({json.dumps([r["requests"].get(k) for k in shape], sort_keys=True) for r in runs}) == 1
    )
    out["sql_statements"] = med(r["sql_statements"] for r in runs)
    out["sql_commits"] = med(r["sql_commits"] for r in runs)
    out["folders"] = runs[-1]["folders"]
    out["n"] = len(runs)
    verified = [r["verify"]["ok"] for r in runs if "verify" in r]
    if verified:
        out["verified"] = all(verified)
    return out


def summarise(out: dict[str, Any], n: int) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for policy in ("applicants", "none"):
        runs = [r for r in out["initial"] if r["policy"] == policy]
        if runs:
            p = _phase(runs)
            p["msgs_per_s"] = n / p["wall_s"]
            p["bodies"] = runs[-1]["bodies"]
            p["copies"] = runs[-1]["new"]
            for k in ("list_folders", "fetch_changes", "fetch_headers", "fetch_bodies", "remote_message"):
                p[f"{k}_wall_s"] = med(r["provider"].get(k, {}).get("wall_s", 0.0) for r in runs)
                p[f"{k}_cpu_s"] = med(r["provider"].get(k, {}).get("cpu_s", 0.0) for r in runs)
            s[f"initial_{policy}"] = p
    for key in ("nochange", "nochange_token_expired", "incremental"):
        if key in out:
            s[key] = _phase(out[key])
    for key in ("expired_sync_state", "nochange_after_expired"):
        s[key] = _phase([out[key]])
    s["expired_sync_state"]["resynced_folders"] = out["expired_sync_state"]["resynced"]
    return s


def _mix(by: dict[str, int]) -> str:
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(by.items()))


def markdown(out: dict[str, Any]) -> str:
    n = out["messages"]
    lines = []
    for name, b in out["backends"].items():
        s = b["summary"]
        rows = [
            ("initial sync, body_policy applicants", "initial_applicants"),
            ("initial sync, body_policy none", "initial_none"),
            ("no-change pass", "nochange"),
            ("no-change pass, access token expired", "nochange_token_expired"),
            (f"incremental pass, {out['new']} new messages", "incremental"),
            (f"sync state expired + {out['new']} new: resync", "expired_sync_state"),
            ("no-change pass after the resync", "nochange_after_expired"),
        ]
        lines += [
            f"### {name}: {n} messages ({out['corpus']['bytes'] / 1e6:.0f} MB), {b['mailbox']['folders']} folders, medians (min–max)",
            "",
            "| pass | runs | wall | Postroom CPU | of which provider CPU | stand-in CPU | HTTP requests | requests | $batch parts |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for label, key in rows:
            if key not in s:
                continue
            p = s[key]
            rq, wr = p["requests"], p["wall_range_s"]
            big = p["wall_s"] >= 1

            def unit(x: float, big: bool = big) -> str:
                return f"{x:.2f} s" if big else f"{x * 1000:.1f} ms"

            lines.append(
                f"| {label} | {p['n']} | {unit(p['wall_s'])} ({unit(wr[0])}–{unit(wr[1])}) | {unit(p['cpu_s'])} "
                f"| {unit(p['provider_cpu_s'])} | {unit(p['standin_cpu_s'])} | {rq['http_requests']:,} "
                f"| {_mix(rq['by_kind'])} | {_mix(rq.get('batch_parts') or {})} |"
            )
        lines.append("")
        for key in ("initial_applicants", "initial_none"):
            p = s[key]
            lines.append(
                f"{key}: {p['msgs_per_s']:,.0f} msg/s; {p['copies']} copies, {p['bodies']} bodies; provider wall: "
                f"folders {p['list_folders_wall_s']:.2f} s, delta {p['fetch_changes_wall_s']:.2f} s, headers "
                f"{p['fetch_headers_wall_s']:.2f} s, bodies {p['fetch_bodies_wall_s']:.2f} s; verified {p['verified']}"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
