# ruff: noqa: E501
"""Tracked sends (issue 11): one message to 100 recipients, tracked, on each backend — the time
it takes, the requests and SMTP transactions it makes, and what ends up where.

    .venv/bin/python bench/tracked_send_bench.py                     # ~1 minute
    .venv/bin/python bench/tracked_send_bench.py --recipients 100 --rounds 3 --json bench/results/tracked-send.json

Backends, each against real servers or the stand-ins the tests drive (in this process):

  imap        Dovecot + an SMTP submission server that captures every transaction (tests/rig)
  imap-files  the same, with the submission port that files every message in Sent itself (as Gmail
              does); the copies it files are swept by the worker's passes until none is left
  gmail-api   the Gmail stand-in through google-api-python-client: one copy per recipient naming only them
  gmail-smtp  the same account submitting over the stand-in's SMTP with XOAUTH2
  graph-api   the Graph stand-in through requests + msal
  graph-smtp  Exchange Online's SMTP submission stand-in with an SMTP.Send token
  ews-api     the EWS stand-in through exchangelib

For each, --rounds sends (a fresh account each, backends alternating round by round) of one
message to --recipients recipients (To; the recipients are users of the stand-in, so every copy
is delivered into a mailbox). Reported per backend: the median wall time of ``services.sending
.send_message`` (queue, N copies, the clean copy in Sent, the sweep), per recipient; requests to
the service (API calls; batch parts counted as the service counts them) and SMTP transactions
per send; and the check that every recipient got one copy and Sent holds exactly one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, load_config
from postroom.db import make_engine, make_sessionmaker, upgrade
from postroom.states import SendMode
from services.sending import SendRequest, send_message
from sync.outbox import process_outbox
from tests.rig.cloud_senders import BACKENDS, TRACKING_BASE, Cloud
from tests.rig.faulty_smtp import faulty_smtp
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig
from tests.sync.helpers import connect

BODY = "Dear candidate,\n\nplease pick a slot: [calendar](https://cal.example.com/slots) or [call us](https://example.com/call).\n"


@contextmanager
def database() -> Iterator[tuple[Config, sessionmaker[Session]]]:
    with tempfile.TemporaryDirectory(prefix="tracked-bench-") as tmp:
        env = {"POSTROOM_DATA_DIR": tmp, "POSTROOM_SECRET_KEY": "bench-secret-key-0123456789", "HOME": tmp}
        config = load_config(env=env)
        config = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, base_url=TRACKING_BASE))
        engine = make_engine(config.database)
        upgrade(engine)
        yield config, make_sessionmaker(engine)
        engine.dispose()


def imap_cloud(
    stack: ExitStack,
    rig: MailRig,
    config: Config,
    sessions: sessionmaker[Session],
    people: tuple[str, ...],
    files: bool,
) -> Cloud:
    """An IMAP account on the rig whose recipients are users of the same Dovecot."""
    address = rig.free_users.pop()  # type: ignore[attr-defined]
    box = Mailbox(rig, address, rig.users[address], "")
    box.ensure_folders()
    if files:
        account = connect(config, sessions, box, smtp_port=rig.ports["smtp_files_sent"])
        transactions: Callable[[], int] = lambda: 0  # noqa: E731 - Postfix's own count is not kept
    else:
        smtp = stack.enter_context(faulty_smtp(rig))
        account = connect(config, sessions, box, smtp_port=smtp.port)
        transactions = lambda: len(smtp.transactions())  # noqa: E731
    return Cloud(
        account,
        config,
        lambda a: [],
        lambda: list(box.fetch_raw("Sent").values()),
        SendMode.SMTP,
        lambda: 0,
        transactions,
    )


def one_send(name: str, rig: MailRig, recipients: int) -> dict[str, Any]:
    if name == "imap-files":  # delivered for real: plus-addresses of one user of the same Dovecot
        peer = rig.free_users.pop()  # type: ignore[attr-defined]
        local, domain = peer.split("@")
        people = tuple(f"{local}+p{i:03d}@{domain}" for i in range(recipients))
    else:
        people = tuple(f"p{i:03d}-{uuid.uuid4().hex[:6]}@candidates.test" for i in range(recipients))
    with database() as (config, sessions), ExitStack() as stack:
        if name.startswith("imap"):
            cloud = imap_cloud(stack, rig, config, sessions, people, name == "imap-files")
        else:
            make, smtp = BACKENDS[name]
            cloud = make(stack, config, sessions, smtp, people)
        before_requests, before_smtp = cloud.requests(), cloud.smtp()
        started = time.perf_counter()
        outcome = send_message(
            cloud.config, sessions, SendRequest(cloud.account, list(people), "Open day", BODY, track=True)
        )
        seconds = time.perf_counter() - started
        requests_made, smtp_made = cloud.requests() - before_requests, cloud.smtp() - before_smtp
        sweep_seconds = 0.0
        if name == "imap-files":  # the server files its copies a moment later: the worker's passes sweep them
            started = time.perf_counter()
            deadline = time.monotonic() + 60
            while sum(1 for raw in cloud.sent() if b"/t/o/" in raw) or len(cloud.sent()) < 1:
                process_outbox(cloud.config, sessions, cloud.account, "bench-worker")
                assert time.monotonic() < deadline, "copies left in Sent"
                time.sleep(0.2)
            sweep_seconds = time.perf_counter() - started
        sent = cloud.sent()
        delivered = None if name.startswith("imap") else sum(len(cloud.inbox(p)) for p in people)
        return {
            "backend": name,
            "status": str(outcome.entry.status),
            "mode": outcome.mode,
            "seconds": seconds,
            "ms_per_recipient": 1000 * seconds / recipients,
            "requests": requests_made,
            "smtp_transactions": smtp_made,
            "sent_copies": len([raw for raw in sent if outcome.entry.message_id.encode() in raw]),
            "tracked_copies_left_in_sent": sum(1 for raw in sent if b"/t/o/" in raw),
            "delivered": delivered,
            "sweep_seconds": sweep_seconds,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="imap,imap-files,gmail-api,gmail-smtp,graph-api,graph-smtp,ews-api")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = args.backends.split(",")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    pool = {f"u{uuid.uuid4().hex[:6]}{i:03d}@example.test": f"pw-{i}" for i in range(2 * len(names) * args.rounds + 4)}
    with MailRig(users=pool, high_performance=True) as rig:
        rig.free_users = list(rig.users)  # type: ignore[attr-defined]
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                run = one_send(name, rig, args.recipients)
                runs[name].append(run)
                print(
                    f"round {r + 1} {name:<11} {run['seconds']:.2f} s  requests {run['requests']}  smtp {run['smtp_transactions']}  sent copies {run['sent_copies']}",
                    flush=True,
                )
    summary = []
    print(
        f"\n{'backend':<11} {'mode':<5} {'median s':>9} {'ms/rcpt':>8} {'requests':>9} {'SMTP':>5} {'in Sent':>8} {'delivered':>10}"
    )
    for name in names:
        rs = runs[name]
        med = statistics.median(r["seconds"] for r in rs)
        row = {
            "backend": name,
            "mode": rs[0]["mode"],
            "median_seconds": med,
            "seconds": [r["seconds"] for r in rs],
            "ms_per_recipient": 1000 * med / args.recipients,
            "requests": rs[0]["requests"],
            "smtp_transactions": rs[0]["smtp_transactions"],
            "sent_copies": [r["sent_copies"] for r in rs],
            "tracked_copies_left_in_sent": [r["tracked_copies_left_in_sent"] for r in rs],
            "delivered": [r["delivered"] for r in rs],
            "sweep_seconds": [r["sweep_seconds"] for r in rs],
        }
        summary.append(row)
        print(
            f"{name:<11} {row['mode']:<5} {med:>9.2f} {row['ms_per_recipient']:>8.1f} {row['requests']:>9} "
            f"{row['smtp_transactions']:>5} {max(row['sent_copies']):>8} {rs[0]['delivered']!s:>10}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"recipients": args.recipients, "rounds": args.rounds, "backends": summary}, indent=1)
        )


if __name__ == "__main__":
    main()
