"""Tracked sends on an IMAP/SMTP account against real servers (Dovecot for the mailboxes, an
aiosmtpd submission server that captures every transaction with its envelope, and one that
files a copy of every submitted message in Sent itself, as Gmail does), on SQLite and
PostgreSQL:

* one SMTP transaction per recipient — To, Cc and Bcc alike — every copy with the same
  visible headers, its own Message-ID and pixel, and a Bcc recipient in no header;
* exactly one clean copy in Sent (no pixel, all visible recipients, seen), whether or not the
  server files submitted mail itself;
* a crash between recipients resumes with those not yet sent: nobody gets two copies;
* a reply to one recipient's copy, indexed by the next sync, marks that recipient.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import MailAccount, OutboxMessage, OutboxRecipient
from postroom.states import OutboxStatus, SendMode
from services.sending import SendRequest, send_message
from services.tracking import tracking_report
from sync.outbox import process_outbox
from sync.scheduler import Scheduler
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox, make_message
from tests.rig.mailrig import MailRig
from tests.sync.helpers import connect, sync_ok

WORKER = "tracked-test-worker"
VISIBLE = ("From", "To", "Cc", "Subject", "Date", "Reply-To", "MIME-Version")
BODY = "Dear candidate,\n\nplease pick a slot: [calendar](https://cal.example.com/slots).\n"


@pytest.fixture
def account(tracking: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp) -> int:
    mailbox.ensure_folders()
    return connect(tracking, sessions, mailbox, smtp_port=smtp.port)


def rcpt(kind: str = "ann") -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.org"


def parsed(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=default_policy)


def html_of(raw: bytes) -> str:
    part = parsed(raw).get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def copies(smtp: FaultySmtp, recipients: dict[str, str]) -> dict[str, tuple[list[str], bytes]]:
    """recipient -> (envelope, raw) of the transaction that carried their copy (by its Message-ID)."""
    out = {}
    for address, copy_id in recipients.items():
        ((meta, raw),) = smtp.received(copy_id)
        out[address] = (meta["rcpt_tos"], raw)
    return out


def recipient_rows(sessions: sessionmaker[Session], outbox_id: int) -> dict[str, OutboxRecipient]:
    with sessions() as s:
        rows = s.scalars(select(OutboxRecipient).where(OutboxRecipient.outbox_id == outbox_id)).all()
        return {r.address: r for r in rows}


def sent_copies(mailbox: Mailbox, message_id: str) -> list[bytes]:
    return [raw for raw in mailbox.fetch_raw("Sent").values() if message_id.encode() in raw]


def test_one_transaction_per_recipient_with_identical_headers_and_one_clean_copy_in_sent(
    tracking: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    ann, bob, carl = rcpt("ann"), rcpt("bob"), rcpt("carl")
    req = SendRequest(account, [ann], "Your interview", BODY, cc=[bob], bcc=[carl], track=True)
    outcome = send_message(tracking, sessions, req)
    assert outcome.entry.status == OutboxStatus.SENT and outcome.mode == SendMode.SMTP
    rows = recipient_rows(sessions, outcome.entry.id)
    assert {a: r.status for a, r in rows.items()} == dict.fromkeys((ann, bob, carl), OutboxStatus.SENT)
    assert len({r.message_id for r in rows.values()} | {outcome.entry.message_id}) == 4  # each copy its own id

    got = copies(smtp, {a: r.message_id for a, r in rows.items()})
    assert {a: env for a, (env, _) in got.items()} == {ann: [ann], bob: [bob], carl: [carl]}
    headers = {a: {h: parsed(raw)[h] for h in VISIBLE} for a, (_, raw) in got.items()}
    assert headers[ann] == headers[bob] == headers[carl]  # everyone sees the same message
    assert headers[ann]["To"] == ann and headers[ann]["Cc"] == bob
    assert headers[ann]["Subject"] == f"[{outcome.short_id}] Your interview"
    assert headers[ann]["Reply-To"] == outcome.reply_to and "+" in outcome.reply_to
    for _, raw in got.values():
        assert carl.encode() not in raw.split(b"\r\n\r\n", 1)[0]  # a Bcc recipient in no header
        assert parsed(raw)["Bcc"] is None
    pixels = {a: re.findall(r'src="(https://t\.example\.com/t/o/[^"]+)"', html_of(raw)) for a, (_, raw) in got.items()}
    assert all(len(p) == 1 for p in pixels.values()) and len({p[0] for p in pixels.values()}) == 3
    links = {a: re.findall(r'href="([^"]+)"', html_of(raw)) for a, (_, raw) in got.items()}
    assert all(len(v) == 1 and v[0].startswith("https://t.example.com/t/c/") for v in links.values())
    assert len({v[0] for v in links.values()}) == 3 and "cal.example.com" in links[ann][0]

    (clean,) = sent_copies(mailbox, outcome.entry.message_id)  # exactly one, and it is the clean one
    assert b"/t/o/" not in clean and b"/t/c/" not in clean and "https://cal.example.com/slots" in html_of(clean)
    assert parsed(clean)["To"] == ann and parsed(clean)["Cc"] == bob and carl.encode() not in clean
    for r in rows.values():
        assert sent_copies(mailbox, r.message_id) == []  # no per-recipient copy in Sent
    assert smtp.received(outcome.entry.message_id) == []  # the clean copy itself went to nobody


def test_a_server_that_files_submitted_mail_ends_with_one_copy_in_sent(
    tracking: Config, sessions: sessionmaker[Session], mailbox: Mailbox, mail_rig: MailRig, account: int
) -> None:
    with sessions.begin() as s:  # the rig's submission port that files every message in Sent, as Gmail does
        acct = s.get_one(MailAccount, account)
        acct.settings = {**acct.settings, "smtp_port": mail_rig.ports["smtp_files_sent"]}
    local = mailbox.address.split("@")[1]
    to = [f"{name}-{uuid.uuid4().hex[:6]}@{local}" for name in ("ann", "bob")]
    outcome = send_message(tracking, sessions, SendRequest(account, to, "Your interview", BODY, track=True))
    assert outcome.entry.status == OutboxStatus.SENT
    rows = recipient_rows(sessions, outcome.entry.id)
    # the server files its copies a moment later (LMTP); the worker's passes sweep them out of Sent
    deadline = time.monotonic() + 30
    while True:
        process_outbox(tracking, sessions, account, WORKER)
        left = [r for r in rows.values() if sent_copies(mailbox, r.message_id)]
        with sessions() as s:
            sweeping = s.get_one(OutboxMessage, outcome.entry.id).cleanup_until is not None
        if not left and all(recipient_rows(sessions, outcome.entry.id)[a].copy_removed for a in to):
            break
        assert time.monotonic() < deadline, f"copies still in Sent: {left}, sweeping={sweeping}"
        time.sleep(0.3)
    assert len(sent_copies(mailbox, outcome.entry.message_id)) == 1
    assert all(b"/t/o/" not in raw for raw in mailbox.fetch_raw("Sent").values())


def test_a_crash_between_recipients_resumes_with_those_not_yet_sent(
    tracking: Config,
    sessions: sessionmaker[Session],
    env: dict[str, str],
    mailbox: Mailbox,
    smtp: FaultySmtp,
    account: int,
    tmp_path: Path,
) -> None:
    body = tmp_path / "body.md"
    body.write_text(BODY, encoding="utf-8")
    first, stalled, last = rcpt("ann"), rcpt("stall"), rcpt("carl")  # the server never answers the second
    cmd = [sys.executable, "-m", "cli", "send", "--account", str(account), "--track", "--subject", "Offer"]
    cmd += ["--body-file", str(body), "--to", first, "--to", stalled, "--to", last]
    run_env = {**os.environ, **env, "POSTROOM_TRACKING_BASE_URL": "https://t.example.com"}
    proc = subprocess.Popen(cmd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not [m for m, _ in smtp.transactions() if m["rcpt_tos"] == [stalled]]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with sessions() as s:
        (killed,) = s.scalars(select(OutboxMessage).where(OutboxMessage.account_id == account)).all()
    assert killed.status == OutboxStatus.SENDING and killed.tracked

    result = Scheduler(tracking, sessions).sync(account, force=True)  # the worker's next pass
    assert result.ok, result.error
    rows = recipient_rows(sessions, killed.id)
    assert {a: r.status for a, r in rows.items()} == {
        first: OutboxStatus.SENT,  # sent before the crash, not again
        stalled: OutboxStatus.UNCERTAIN,  # in flight at the crash: may have gone out, never resent by itself
        last: OutboxStatus.SENT,  # sent by the worker
    }
    for address, r in rows.items():
        assert len(smtp.received(r.message_id)) == 1, address
    with sessions() as s:
        after = s.get_one(OutboxMessage, killed.id)
    assert after.status == OutboxStatus.UNCERTAIN
    assert len(sent_copies(mailbox, killed.message_id)) == 1  # the clean copy, once


def test_a_reply_to_one_recipients_copy_marks_them_replied_after_the_next_sync(
    tracking: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp, account: int
) -> None:
    ann, bob = rcpt("ann"), rcpt("bob")
    outcome = send_message(tracking, sessions, SendRequest(account, [ann, bob], "Your interview", BODY, track=True))
    rows = recipient_rows(sessions, outcome.entry.id)
    mailbox.append(
        make_message(
            from_=bob,
            to=mailbox.address,
            subject=f"Re: [{outcome.short_id}] Your interview",
            in_reply_to=rows[bob].message_id,
        )
    )
    mailbox.append(
        make_message(
            from_=ann,
            to=outcome.reply_to,
            subject="Out of office",
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    sync_ok(tracking, sessions, account)
    with sessions() as s:
        report = tracking_report(s, outcome.entry.message_id)
    by = {r["address"]: r for r in report["recipients"]}
    assert (by[bob]["replied"], by[bob]["auto_replied"]) == (True, False)
    assert (by[ann]["replied"], by[ann]["auto_replied"]) == (False, True)
