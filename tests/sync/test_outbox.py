"""The outbox against real servers (Dovecot for IMAP and Sent, an aiosmtpd server with fault
modes for SMTP), on SQLite and PostgreSQL: a message is never sent twice and never forgotten.

* a connection dropped (or never answered) after the whole DATA body is ``uncertain``, never
  retried by itself, and sent again only when a person forces it;
* a recipient refused while others were accepted is stored per recipient;
* two deliveries racing on one row make one SMTP transaction;
* a ``postroom send`` killed with SIGKILL mid-send leaves a row the worker's next pass turns
  ``uncertain``; one that died before sending leaves a row the worker sends;
* an uncertain message whose copy is in Sent is marked ``sent`` without being sent again;
* the worker's idle pass is one indexed query and opens no provider;
* nothing a user types can add a header line (``Bcc:``) to the mail that reaches the server.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from cli.common import flag
from postroom.config import Config
from postroom.errors import OutboxError
from postroom.models import Email, MailAccount, OutboxMessage
from services.outbox import SendRequest, list_outbox, queue_message, retry_message, send_message
from sync.outbox import deliver, process_outbox
from sync.outbox_rows import OutboxStatus, open_rows
from sync.scheduler import Scheduler
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, sync_ok

WORKER = f"{socket.gethostname()}:{os.getpid()}:test-worker"


@pytest.fixture
def account(config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp) -> int:
    mailbox.ensure_folders()
    return connect(config, sessions, mailbox, smtp_port=smtp.port)


@pytest.fixture
def quick(config: Config) -> Config:
    """Two-second network timeouts, for servers that never answer."""
    return dataclasses.replace(config, sync=dataclasses.replace(config.sync, connect_timeout=2.0))


def rcpt(kind: str = "ann") -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.org"


def queue(
    config: Config, sessions: sessionmaker[Session], account_id: int, *to: str, owner: str | None = None
) -> tuple[int, str]:
    with sessions.begin() as s:
        row = queue_message(s, config, SendRequest(account_id, list(to), "Your application", "Hello.\n"), owner=owner)
        return row.id, row.message_id


def row(sessions: sessionmaker[Session], outbox_id: int) -> OutboxMessage:
    with sessions() as s:
        return s.get_one(OutboxMessage, outbox_id)


def in_sent(mailbox: Mailbox, message_id: str) -> list[bytes]:
    return [raw for raw in mailbox.fetch_raw("Sent").values() if f"Message-ID: {message_id}".encode() in raw]


# ---------------------------------------------------------------- uncertain, never twice
def test_connection_dropped_after_data_is_uncertain_and_not_sent_again(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    to = rcpt("dropdata")
    entry = send_message(config, sessions, SendRequest(account, [to], "Your interview", "Tuesday at 10.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN
    assert entry.error and "no answer after the message was handed over" in entry.error
    assert len(smtp.received(entry.message_id)) == 1  # the server did get it
    assert in_sent(mailbox, entry.message_id) == []  # no copy: it is not known to have gone out

    done = process_outbox(config, sessions, account, WORKER)  # looks in Sent, finds nothing, sends nothing
    assert (done.confirmed, done.sent) == (0, 0)
    assert row(sessions, entry.id).status == OutboxStatus.UNCERTAIN and row(sessions, entry.id).checked_at
    with pytest.raises(OutboxError) as refused:
        retry_message(config, sessions, entry.id)
    assert "may already have gone out" in str(refused.value) and mailbox.address in str(refused.value)
    assert to in str(refused.value) and "--force" in refused.value.sentence(flag)  # as the CLI words it
    assert str(refused.value).count(". ") == 0  # one sentence
    assert len(smtp.received(entry.message_id)) == 1
    with sessions() as s:
        (listed,) = [e for e in list_outbox(s, "uncertain") if e.id == entry.id]
    assert listed.recipients == (to,)


def test_a_server_that_never_answers_after_data_is_uncertain(
    quick: Config, sessions: sessionmaker[Session], smtp: FaultySmtp, account: int
) -> None:
    started = time.monotonic()
    entry = send_message(quick, sessions, SendRequest(account, [rcpt("stall")], "Offer", "Welcome.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN and "timed out" in (entry.error or "")
    assert time.monotonic() - started < 15
    assert len(smtp.received(entry.message_id)) == 1


def test_a_forced_retry_sends_an_uncertain_message_once_more(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    entry = send_message(config, sessions, SendRequest(account, [rcpt("dropfirst")], "Offer", "Welcome.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN
    with pytest.raises(OutboxError):
        retry_message(config, sessions, entry.id)
    outcome = retry_message(config, sessions, entry.id, force=True)
    assert outcome.entry.status == OutboxStatus.SENT and not outcome.found_in_sent
    assert len(smtp.received(entry.message_id)) == 2  # a person chose to send it again
    assert len(in_sent(mailbox, entry.message_id)) == 1
    assert retry_message(config, sessions, entry.id).already_sent
    assert len(smtp.received(entry.message_id)) == 2


def test_an_uncertain_message_found_in_sent_is_marked_sent_and_not_sent_again(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    first = send_message(config, sessions, SendRequest(account, [rcpt("dropdata")], "One", "1\n"))
    second = send_message(config, sessions, SendRequest(account, [rcpt("dropdata")], "Two", "2\n"))
    assert first.status == second.status == OutboxStatus.UNCERTAIN
    # the server filed its copies in Sent, as many submission servers do
    uids = {e.id: mailbox.append(row(sessions, e.id).raw, "Sent") for e in (first, second)}

    done = process_outbox(config, sessions, account, WORKER)
    assert (done.confirmed, done.sent, done.uncertain) == (2, 0, 0)
    for e in (first, second):
        settled = row(sessions, e.id)
        assert settled.status == OutboxStatus.SENT and settled.sent_copy_id == str(uids[e.id])
        assert len(smtp.received(e.message_id)) == 1
    assert process_outbox(config, sessions, account, WORKER).idle


def test_retry_looks_in_sent_first(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    entry = send_message(config, sessions, SendRequest(account, [rcpt("dropdata")], "Offer", "Welcome.\n"))
    mailbox.append(row(sessions, entry.id).raw, "Sent")
    outcome = retry_message(config, sessions, entry.id, force=True)  # even forced: Sent first
    assert outcome.found_in_sent and outcome.entry.status == OutboxStatus.SENT
    assert len(smtp.received(entry.message_id)) == 1


# ---------------------------------------------------------------- refused recipients
def test_a_partial_refusal_is_stored_per_recipient(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    ok, refused = rcpt("ann"), rcpt("permfail")
    entry = send_message(config, sessions, SendRequest(account, [ok, refused], "Interview", "Tuesday.\n"))
    assert entry.status == OutboxStatus.SENT
    assert dict(entry.refused) == {refused: "550 5.1.1 Simulated permanent failure: no such user"}
    ((meta, _),) = smtp.received(entry.message_id)
    assert meta["rcpt_tos"] == [ok]
    assert len(in_sent(mailbox, entry.message_id)) == 1
    with sessions() as s:
        assert s.get_one(OutboxMessage, entry.id).refused == {refused: entry.refused[refused]}
        (listed,) = [e for e in list_outbox(s) if e.id == entry.id]
    assert listed.as_json()["refused"] == {refused: entry.refused[refused]}


def test_every_recipient_refused_is_failed_with_the_reasons(
    config: Config, sessions: sessionmaker[Session], smtp: FaultySmtp, account: int
) -> None:
    a, b = rcpt("permfail"), rcpt("permfail")
    entry = send_message(config, sessions, SendRequest(account, [a, b], "Interview", "Tuesday.\n"))
    assert entry.status == OutboxStatus.FAILED and set(entry.refused) == {a, b}
    assert smtp.received(entry.message_id) == []


# ---------------------------------------------------------------- one row, one transaction
def test_deliveries_racing_on_one_row_make_one_smtp_transaction(
    config: Config, sessions: sessionmaker[Session], smtp: FaultySmtp, account: int
) -> None:
    rows = [queue(config, sessions, account, rcpt("slow")) for _ in range(4)]  # the server answers each a second late
    start = threading.Barrier(4 * len(rows))
    outcomes: dict[int, list[object]] = {outbox_id: [] for outbox_id, _ in rows}

    def race(outbox_id: int) -> None:
        start.wait()
        try:
            outcomes[outbox_id].append(deliver(config, sessions, outbox_id).status)
        except OutboxError as exc:
            outcomes[outbox_id].append(str(exc))

    threads = [threading.Thread(target=race, args=(outbox_id,)) for outbox_id, _ in rows for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [len(smtp.received(message_id)) for _, message_id in rows] == [1] * len(rows)
    for outbox_id, _ in rows:
        assert OutboxStatus.SENT in outcomes[outbox_id], outcomes[outbox_id]
        assert row(sessions, outbox_id).status == OutboxStatus.SENT and row(sessions, outbox_id).attempts == 1


# ---------------------------------------------------------------- crashes
def test_a_send_killed_mid_transaction_becomes_uncertain_on_the_next_worker_pass(
    config: Config,
    sessions: sessionmaker[Session],
    env: dict[str, str],
    smtp: FaultySmtp,
    account: int,
    tmp_path: Path,
) -> None:
    body = tmp_path / "body.txt"
    body.write_text("We would like to invite you.\n", encoding="utf-8")
    to = rcpt("stall")  # the server takes the message and never answers
    cmd = [sys.executable, "-m", "cli", "send", "--account", str(account), "--to", to]
    cmd += ["--subject", "Invitation", "--body-file", str(body)]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (smtp.transactions() and [m for m, _ in smtp.transactions() if m["rcpt_tos"] == [to]]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with sessions() as s:
        (killed,) = s.scalars(select(OutboxMessage).where(OutboxMessage.account_id == account)).all()
    assert killed.status == OutboxStatus.SENDING and killed.owner and f":{proc.pid}:" in killed.owner

    result = Scheduler(config, sessions).sync(account, force=True)  # the worker's next pass
    assert result.ok, result.error
    after = row(sessions, killed.id)
    assert after.status == OutboxStatus.UNCERTAIN and "died" in (after.error or "")
    with pytest.raises(OutboxError, match="may already have gone out"):
        retry_message(config, sessions, killed.id)
    assert len(smtp.received(killed.message_id)) == 1


def test_a_row_queued_by_a_process_that_died_before_sending_is_sent_by_the_worker(
    config: Config, sessions: sessionmaker[Session], smtp: FaultySmtp, account: int
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:queued-then-killed"
    live = f"{socket.gethostname()}:{os.getpid()}:still-sending"
    orphan, orphan_mid = queue(config, sessions, account, rcpt("ann"), owner=dead)
    held, held_mid = queue(config, sessions, account, rcpt("ann"), owner=live)

    done = Scheduler(config, sessions, owner=WORKER)
    assert done.sync(account, force=True).ok
    assert row(sessions, orphan).status == OutboxStatus.SENT and len(smtp.received(orphan_mid)) == 1
    assert row(sessions, held).status == OutboxStatus.QUEUED and smtp.received(held_mid) == []  # not its to take
    with sessions.begin() as s:  # its holder's claim runs out
        s.execute(update(OutboxMessage).where(OutboxMessage.id == held).values(claimed_until=datetime.now(UTC)))
    assert process_outbox(config, sessions, account, WORKER).sent == 1
    assert len(smtp.received(held_mid)) == 1


def test_a_sending_row_past_its_claim_becomes_uncertain(
    config: Config, sessions: sessionmaker[Session], account: int
) -> None:
    overdue, _ = queue(config, sessions, account, rcpt("ann"))
    working, _ = queue(config, sessions, account, rcpt("ann"))
    now = datetime.now(UTC)
    with sessions.begin() as s:
        for outbox_id, until in ((overdue, now - timedelta(seconds=1)), (working, now + timedelta(minutes=5))):
            values = {"status": "sending", "owner": "elsewhere:4242:worker", "claimed_until": until}
            s.execute(update(OutboxMessage).where(OutboxMessage.id == outbox_id).values(**values))
    done = process_outbox(config, sessions, account, WORKER)
    assert done.stale == 1
    assert row(sessions, overdue).status == OutboxStatus.UNCERTAIN
    assert row(sessions, working).status == OutboxStatus.SENDING  # another machine, still within its claim


# ---------------------------------------------------------------- the idle pass
def test_the_idle_pass_is_one_indexed_query_and_opens_no_provider(
    config: Config, sessions: sessionmaker[Session], smtp: FaultySmtp, account: int
) -> None:
    engine = sessions.kw["bind"]
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    sent = send_message(config, sessions, SendRequest(account, [rcpt("ann")], "Done", "ok\n"))
    uncertain = send_message(config, sessions, SendRequest(account, [rcpt("dropdata")], "Maybe", "?\n"))
    queue(config, sessions, account, rcpt("ann"), owner=f"{socket.gethostname()}:{os.getpid()}:sending-now")
    assert (sent.status, uncertain.status) == (OutboxStatus.SENT, OutboxStatus.UNCERTAIN)
    process_outbox(config, sessions, account, WORKER)  # checks Sent for the uncertain one once
    with sessions.begin() as s:  # from now on the account cannot be opened at all
        s.execute(update(MailAccount).where(MailAccount.id == account).values(provider="no-such-backend"))

    event.listen(engine, "before_cursor_execute", count)
    try:
        done = process_outbox(config, sessions, account, WORKER)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert done.idle and done.errors == []  # nothing due: the provider was never opened
    assert len(statements) == 1, statements

    with sessions.begin() as s:  # the uncertain row is due for another look: now it must open it
        s.execute(update(OutboxMessage).where(OutboxMessage.id == uncertain.id).values(checked_at=None))
    done = process_outbox(config, sessions, account, WORKER)
    assert done.errors and "no-such-backend" in done.errors[0]
    assert row(sessions, uncertain.id).status == OutboxStatus.UNCERTAIN

    with sessions() as s:
        query = open_rows(account).compile(engine, compile_kwargs={"literal_binds": True})
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in s.execute(text(f"EXPLAIN QUERY PLAN {query}")))
        else:
            s.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(r[0]) for r in s.execute(text(f"EXPLAIN {query}")))
    assert "ix_outbox_open" in plan, plan


# ---------------------------------------------------------------- headers we write
def test_header_injection_is_refused_in_one_sentence_and_nothing_is_sent(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    before = len(smtp.transactions())
    bad = [
        (SendRequest(account, [rcpt()], "Hi\r\nBcc: evil@example.net", "x"), "The subject contains a line break"),
        (SendRequest(account, [f"{rcpt()}\r\nBcc: evil@example.net"], "Hi", "x"), "contains a line break"),
        (SendRequest(account, [f"{rcpt()}\nBcc:evil@example.net"], "Hi", "x"), "contains a line break"),
        (SendRequest(account, [rcpt()], "Hi\u2028Bcc: evil@example.net", "x"), "The subject contains a line break"),
        (SendRequest(account, [rcpt()], "Hi", "x", in_reply_to="<a\r\nBcc: someone@else>"), "In-Reply-To must be"),
        (SendRequest(account, [rcpt()], "Hi", "x", in_reply_to="<a b@example.org>"), "In-Reply-To must be"),
        (SendRequest(account, [rcpt()], "Hi", "x", in_reply_to="<caf\u00e9@example.org>"), "In-Reply-To must be"),
    ]
    for req, message in bad:
        with pytest.raises(OutboxError) as refused:
            send_message(config, sessions, req)
        assert message in str(refused.value) and str(refused.value).endswith(".")
        assert "\n" not in str(refused.value)
    assert len(smtp.transactions()) == before
    with sessions() as s:
        assert s.scalars(select(OutboxMessage.id).where(OutboxMessage.account_id == account)).all() == []


def test_a_reply_carries_only_well_formed_ids_from_stored_references(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    mailbox.append(make_message(message_id="<question@x.test>", subject="Question", references=["<root@x.test>"]))
    sync_ok(config, sessions, account)
    with sessions.begin() as s:  # references stored before ids were checked where they are parsed
        s.execute(
            update(Email)
            .where(Email.message_id == "<question@x.test>")
            .values(references=["<root@x.test>", "<a\r\nBcc: someone@else>", "<b@x.test> <c@x.test>", "<ok@x.test>"])
        )
    to = rcpt("ann")
    entry = send_message(
        config, sessions, SendRequest(account, [to], "Re: Question", "Answer.\n", in_reply_to="question@x.test")
    )
    assert entry.status == OutboxStatus.SENT
    ((meta, raw),) = smtp.received(entry.message_id)
    assert meta["rcpt_tos"] == [to]
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in head and b"\nbcc" not in head.lower()
    msg = message_from_bytes(raw, policy=default_policy)
    assert msg["In-Reply-To"] == "<question@x.test>"
    assert str(msg["References"]).split() == ["<root@x.test>", "<ok@x.test>", "<question@x.test>"]
    assert [str(a) for a in msg["To"].addresses] == [to]
