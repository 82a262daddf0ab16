"""The processing mailbox end to end, on SQLite and PostgreSQL, with nothing stood in: a
recruiter sends from a rig account (tracked and untracked; ``[sending] reply_address`` is the
processing mailbox, so every Reply-To is its plus-address), answers and notices arrive in the
processing mailbox (through the rig's SMTP server where the address is one it delivers to,
else by IMAP APPEND), one run of the real loop takes them, and a real HTTP receiver gets the
signed webhooks:

* a reply that lost In-Reply-To and References but is addressed to the token; one with only
  In-Reply-To to one recipient's tracked copy; one with only the subject's short id — each
  marks its recipient replied, is announced once (``message.replied``, ``inbound.processed``)
  and stays announced once when the same account is synced by the ordinary worker too;
* Postfix, Exchange and Gmail delivery status notifications about the real sent messages mark
  the recipient bounced with its RFC 3463 code and are announced (``message.bounced``, and the
  item names the recipients it marked);
* an automatic reply marks auto_replied, never replied, and yields no data;
* an applicant's résumé is linked to them and downloads from their page; an unknown sender's
  YAML is taken as data and routed nowhere; another organisation's token routes nowhere;
* ``postroom inbound list --json`` (a real subprocess) shows all of it in the contract shape.
"""

from __future__ import annotations

import dataclasses
import json
import os
import smtplib
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, WebhooksConfig
from postroom.models import OutboxRecipient
from postroom.states import OutboxStatus
from services.applicants import add_applicant
from services.inbound import InboundItemView, add_mailbox, applicant_documents, list_items, run_once
from services.orgs import add_org
from services.sending import SendOutcome, SendRequest, send_message
from services.webhooks import add_subscription, deliver_due
from sync.store import default_org
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig
from tests.rig.messages import make_message
from tests.rig.webhook_receiver import Receiver
from tests.sync.helpers import connect, history_ids, sync_ok
from tests.web.signin import signed_in
from web import create_app

ROOT = Path(__file__).resolve().parents[2]
DSN = ROOT / "tests" / "data" / "dsn"
EVENTS = ("inbound.processed", "inbound.failed", "message.replied", "message.bounced")


@dataclass
class World:
    config: Config
    sessions: sessionmaker[Session]
    org: int
    account: int  # the recruiter's
    inbox: Mailbox  # the processing mailbox
    inbox_account: int
    receiver: Receiver
    mail_rig: MailRig
    recruiter: Mailbox
    smtp: FaultySmtp

    def send(self, *to: str, track: bool = False, applicant: int | None = None, cc: Sequence[str] = ()) -> SendOutcome:
        req = SendRequest(self.account, list(to), "Your interview", "Hi", cc=cc, track=track, applicant_id=applicant)
        outcome = send_message(self.config, self.sessions, req)
        assert outcome.entry.status == OutboxStatus.SENT
        assert outcome.reply_to.startswith(self.inbox.address.split("@")[0] + "+")  # replies go to the mailbox
        return outcome

    def recipients(self, outcome: SendOutcome) -> dict[str, OutboxRecipient]:
        with self.sessions() as s:
            rows = s.scalars(select(OutboxRecipient).where(OutboxRecipient.outbox_id == outcome.entry.id)).all()
            return {r.address: r for r in rows}

    def deliver(self, raw: bytes, to: str) -> None:
        """Real SMTP delivery through the rig's MX (Postfix, LMTP into Dovecot; the plus tag lands in INBOX)."""
        before = len(self.inbox.uids())
        with smtplib.SMTP("127.0.0.1", self.mail_rig.ports["smtp"], timeout=15) as conn:
            conn.sendmail("someone@example.org", [to], raw)
        self.inbox.wait_for(lambda: len(self.inbox.uids()) > before, timeout=20)

    def run(self) -> dict[str, InboundItemView]:
        """One run of the processing loop; every item by Message-ID."""
        result = run_once(self.config, self.sessions)
        assert result.errors == [] and result.failed == 0, result
        with self.sessions() as s:
            return {i.message_id or "": i for i in list_items(s, self.org)}

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        while deliver_due(self.sessions, self.config):
            pass
        assert self.receiver.bad_signatures == []
        return self.receiver.events()


@pytest.fixture
def world(
    config: Config,
    sessions: sessionmaker[Session],
    mailbox: Mailbox,
    new_mailbox: Callable[[], Mailbox],
    smtp: FaultySmtp,
    receiver: Receiver,
    mail_rig: MailRig,
) -> World:
    inbox = new_mailbox()
    cfg = dataclasses.replace(
        config,
        sending=dataclasses.replace(config.sending, reply_address=inbox.address),
        tracking=dataclasses.replace(config.tracking, base_url="https://t.example.com"),
        webhooks=WebhooksConfig(allow_private=True, timeout=5.0),  # the receiver is on 127.0.0.1
    )
    mailbox.ensure_folders()
    account = connect(cfg, sessions, mailbox, smtp_port=smtp.port)
    inbox_account = connect(cfg, sessions, inbox)
    with sessions.begin() as s:
        org = default_org(s).id
        add_mailbox(s, cfg, org, inbox_account)
        _, secret = add_subscription(s, cfg, org, receiver.url, list(EVENTS))
    receiver.secrets = [secret]
    return World(cfg, sessions, org, account, inbox, inbox_account, receiver, mail_rig, mailbox, smtp)


def rcpt(name: str, domain: str = "example.org") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@{domain}"


def applicant(w: World, name: str, address: str, org: int | None = None) -> int:
    with w.sessions.begin() as s:
        found, _ = add_applicant(s, name, [address], org_id=org or w.org)
        return found.id


def routed(item: InboundItemView) -> dict[str, Any] | None:
    return item.as_json()["routed_to"]


def test_replies_by_token_in_reply_to_and_short_id_mark_their_recipient_once(world: World) -> None:
    w = world
    ann, bob, carl, dan = rcpt("ann"), rcpt("bob"), rcpt("carl"), rcpt("dan")
    ann_id = applicant(w, "Ann Example", ann)
    dan_id = applicant(w, "Dan Example", dan)  # sent to without naming him: his address says who he is
    plain = w.send(ann, applicant=ann_id)
    tracked = w.send(bob, track=True, cc=(carl,))
    short = w.send(dan)
    copies = {a: r.message_id for a, r in w.recipients(tracked).items()}

    # (a) from Ann's phone, another address, no In-Reply-To/References: only the token names it
    by_token = make_message(
        message_id="<a-token@phone.example>",
        from_="Ann <ann.phone@example.net>",
        to=plain.reply_to,
        subject="Thursday",
        body="Thursday works for me.",
    )
    w.deliver(by_token, plain.reply_to)
    # (b) only In-Reply-To, to Carl's own copy, written by an assistant
    w.inbox.append(
        make_message(
            message_id="<b-copy@carl.example>",
            from_="assistant@example.net",
            to=w.inbox.address,
            subject="Re: Your interview",
            in_reply_to=copies[carl],
        )
    )
    # (c) only the short id in the subject
    w.inbox.append(
        make_message(
            message_id="<c-short@example.net>",
            from_="someone@example.net",
            to=w.inbox.address,
            subject=f"Fwd: [{short.short_id}] Your interview",
        )
    )

    items = w.run()
    assert routed(items["<a-token@phone.example>"]) == {"kind": "outbox", "id": plain.entry.id, "via": "reply_token"}
    assert items["<a-token@phone.example>"].applicant_id == ann_id
    assert routed(items["<b-copy@carl.example>"]) == {"kind": "outbox", "id": tracked.entry.id, "via": "in_reply_to"}
    assert routed(items["<c-short@example.net>"]) == {"kind": "outbox", "id": short.entry.id, "via": "short_id"}
    assert items["<c-short@example.net>"].applicant_id == dan_id
    replied = {a for o in (plain, tracked, short) for a, r in w.recipients(o).items() if r.replied_at}
    assert replied == {ann, carl, dan}  # Bob, whose message Carl answered, did not reply
    assert w.inbox.uids("INBOX") == [] and len(w.inbox.uids("processed")) == 3

    events = w.events()
    answers = sorted(d["recipient"] for e, d in events if e == "message.replied")
    assert answers == sorted([ann, carl, dan])
    taken = {d["message_id"]: d for e, d in events if e == "inbound.processed"}
    assert set(taken) == {"<a-token@phone.example>", "<b-copy@carl.example>", "<c-short@example.net>"}
    assert taken["<a-token@phone.example>"]["routed_to"] == routed(items["<a-token@phone.example>"])
    assert taken["<a-token@phone.example>"]["applicant_id"] == ann_id

    # the processing mailbox's account is an account like any other: the ordinary sync worker
    # reads the same replies (now in processed/) and records nothing twice, announces nothing twice
    sync_ok(w.config, w.sessions, w.inbox_account)
    assert {a for o in (plain, tracked, short) for a, r in w.recipients(o).items() if r.replied_at} == replied
    again = w.events()
    assert sorted(d["recipient"] for e, d in again if e == "message.replied") == answers
    assert len(again) == len(events)
    # and Ann's answer joins her timeline (the token names the message sent for her)
    assert "<a-token@phone.example>" in history_ids(w.sessions, ann_id)


def _dsn(name: str, replace: dict[str, str]) -> bytes:
    raw = (DSN / name).read_bytes()
    for old, new in replace.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw


def test_postfix_exchange_and_gmail_bounces_mark_the_recipient_and_are_announced(world: World) -> None:
    w = world
    ghost, ok = rcpt("ghost"), rcpt("ok")
    smith, lena = rcpt("j.smith", "contoso.example"), rcpt("lena", "contoso.example")
    nobody = rcpt("no.such.candidate", "gmail.example")
    ghost_id = applicant(w, "Gus Ghost", ghost)
    to_ghost = w.send(ghost, ok, applicant=ghost_id)
    to_smith = w.send(smith, cc=(lena,), track=True)
    to_nobody = w.send(nobody)
    smith_copy = w.recipients(to_smith)[smith].message_id
    postfix_id = "<174107955012.4711.interview@postroom.example>"
    w.inbox.append(_dsn("postfix.eml", {postfix_id: to_ghost.entry.message_id, "ghost@example.org": ghost}))
    w.inbox.append(
        _dsn(
            "exchange_o365.eml",
            {
                "<174107955013.4712.offer@postroom.example>": smith_copy,
                "j.smith@contoso.com": smith,
                "lena.berg@contoso.com": lena,
            },
        )
    )
    w.inbox.append(
        _dsn(
            "gmail.eml",
            {
                "<174107955014.4713.welcome@postroom.example>": to_nobody.entry.message_id,
                "no.such.candidate.4471@gmail.com": nobody,
            },
        )
    )

    items = w.run()
    assert len(items) == 3 and {i.status for i in items.values()} == {"processed"}
    marks = {a: r for o in (to_ghost, to_smith, to_nobody) for a, r in w.recipients(o).items()}
    assert {a: r.bounce_status for a, r in marks.items() if r.bounced_at} == {
        ghost: "5.1.1",
        smith: "5.1.10",
        nobody: "5.1.1",
    }
    assert not any(r.replied_at or r.auto_replied_at for r in marks.values())  # a notice is no answer
    by_outbox = {(routed(i) or {}).get("id"): i.as_json() for i in items.values()}
    assert set(by_outbox) == {to_ghost.entry.id, to_smith.entry.id, to_nobody.entry.id}
    ghost_item = by_outbox[to_ghost.entry.id]
    assert ghost_item["routed_to"] == {"kind": "outbox", "id": to_ghost.entry.id, "via": "bounce"}
    assert ghost_item["bounces"] == [
        {"recipient_id": marks[ghost].id, "recipient": ghost, "status": "5.1.1", "reason": marks[ghost].bounce_reason}
    ]
    assert ghost_item["bounced_recipients"] == 1 and ghost_item["applicant_id"] == ghost_id
    assert ghost_item["data"] == {}
    assert [b["recipient"] for b in by_outbox[to_smith.entry.id]["bounces"]] == [smith]

    events = w.events()
    bounced = {d["recipient"]: d for e, d in events if e == "message.bounced"}
    assert set(bounced) == {ghost, smith, nobody}
    assert bounced[ghost]["status"] == "5.1.1" and bounced[ghost]["outbox_id"] == to_ghost.entry.id
    assert bounced[ghost]["applicant_id"] == ghost_id and bounced[smith]["status"] == "5.1.10"
    announced = {d["id"]: d for e, d in events if e == "inbound.processed"}
    assert announced[ghost_item["id"]]["bounces"] == ghost_item["bounces"]


def _resume(sender: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Eve Applicant <{sender}>"
    msg["To"] = "jobs@example.test"
    msg["Subject"] = "My application"
    msg["Message-ID"] = "<resume@eve.example>"
    msg.set_content("Hello, my CV is attached.")
    msg.add_attachment(b"%PDF-1.4 Eve's resume", maintype="application", subtype="pdf", filename="Eve CV.pdf")
    return msg.as_bytes()


def test_auto_reply_resume_unknown_sender_and_another_organisation(world: World, env: dict[str, str]) -> None:
    w = world
    ann, eve = rcpt("ann"), rcpt("Eve.Applicant")
    sent = w.send(ann, track=True)
    eve_id = applicant(w, "Eve Applicant", eve)
    with w.sessions.begin() as s:
        other = add_org(s, "Bravo").id
    stranger = applicant(w, "Bravo's Ann", rcpt("bravo-ann"), org=other)
    assert stranger
    # (h) a message of another organisation, sent through its own account, with a Reply-To of the same mailbox
    bravo_id = connect(w.config, w.sessions, w.recruiter, other, smtp_port=w.smtp.port)
    bravo = send_message(w.config, w.sessions, SendRequest(bravo_id, [rcpt("zed")], "Bravo's interview", "Hi"))
    assert bravo.entry.status == OutboxStatus.SENT

    # (e) an automatic reply to the token, with a body a careless reader would take as data
    w.inbox.append(
        make_message(
            message_id="<ooo@example.org>",
            from_=ann,
            to=sent.reply_to,
            subject="Automatic reply: Your interview",
            headers={"Auto-Submitted": "auto-replied"},
            body="Back on: 12 March\nUrgent matters: bruno@example.org\n",
        )
    )
    # (f) an applicant writes from their known address (spelled otherwise), no identifiers, a résumé attached
    w.inbox.append(_resume(eve.upper()))
    # (g) an unknown sender's form answer in YAML with sloppy keys
    w.inbox.append(
        make_message(
            message_id="<yaml@stranger.example>",
            from_="stranger@example.net",
            to=w.inbox.address,
            subject="Candidate",
            body="  Full Name : Grace Hopper\nE-Mail: grace@example.net\n\nRegards",
        )
    )
    # (h) the other organisation's token, its short id too
    w.inbox.append(
        make_message(
            message_id="<bravo@example.org>",
            from_="zed@example.org",
            to=bravo.reply_to,
            subject=f"Re: [{bravo.short_id}] Bravo's interview",
        )
    )

    items = w.run()
    ooo = items["<ooo@example.org>"]
    assert ooo.auto_reply and ooo.as_json()["auto_reply"]
    assert routed(ooo) == {"kind": "outbox", "id": sent.entry.id, "via": "reply_token"}
    assert ooo.data == {} and ooo.data_source is None
    (ann_row,) = w.recipients(sent).values()
    assert ann_row.auto_replied_at is not None and ann_row.replied_at is None

    resume = items["<resume@eve.example>"]
    assert routed(resume) == {"kind": "applicant", "id": eve_id, "via": "sender"}
    (pdf,) = resume.attachments
    with w.sessions() as s:
        assert [(d.id, d.filename) for d in applicant_documents(s, w.org, eve_id)] == [(pdf.id, "Eve CV.pdf")]
    app = create_app(w.config)
    try:
        client = signed_in(app, "rita@alpha.test", w.org)
        page = client.get(f"/applicants/{eve_id}").get_data(as_text=True)
        assert f"/inbound/attachments/{pdf.id}" in page and "Eve CV.pdf" in page
        resp = client.get(f"/inbound/attachments/{pdf.id}")
        assert resp.status_code == 200 and resp.data == b"%PDF-1.4 Eve's resume"
        assert resp.headers["Content-Type"] == "application/pdf"
    finally:
        app.extensions["postroom"]["hits"].close()

    yaml = items["<yaml@stranger.example>"]
    assert yaml.status == "processed" and routed(yaml) is None
    assert yaml.data == {"full_name": "Grace Hopper", "e_mail": "grace@example.net"} and yaml.data_source == "yaml"

    assert routed(items["<bravo@example.org>"]) is None  # another organisation's identifiers are none here
    with w.sessions() as s:
        bravo_rows = s.scalars(select(OutboxRecipient).where(OutboxRecipient.outbox_id == bravo.entry.id)).all()
    assert [r.replied_at for r in bravo_rows] == [None]

    events = w.events()
    assert [e for e, _ in events if e == "message.replied"] == []  # the auto-reply is announced as no reply
    assert sorted(d["message_id"] for e, d in events if e == "inbound.processed") == sorted(items)

    # the CLI, as an operator runs it
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "inbound", "list", "--json"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    listed = {i["message_id"]: i for i in json.loads(proc.stdout)}
    assert set(listed) == set(items)
    for mid, item in items.items():
        shape = listed[mid]
        assert {"id", "message_id", "status", "reason", "data", "text", "attachments", "routed_to"} <= set(shape)
        assert (shape["id"], shape["status"], shape["routed_to"]) == (item.id, "processed", routed(item))
    assert listed["<resume@eve.example>"]["attachments"] == [
        {"id": pdf.id, "filename": "Eve CV.pdf", "content_type": "application/pdf", "size": pdf.size}
    ]
    assert listed["<yaml@stranger.example>"]["data"] == {"full_name": "Grace Hopper", "e_mail": "grace@example.net"}


def test_a_reply_the_sync_met_first_is_not_recorded_again_by_the_processing_mailbox(world: World) -> None:
    w = world
    ann = rcpt("ann")
    ann_id = applicant(w, "Ann Example", ann)
    sent = w.send(ann, applicant=ann_id)
    w.deliver(make_message(message_id="<first@example.org>", from_=ann, to=sent.reply_to, subject="Yes"), sent.reply_to)

    sync_ok(w.config, w.sessions, w.inbox_account)  # the ordinary worker reads the mailbox before the loop does
    (row,) = w.recipients(sent).values()
    assert row.replied_at is not None and row.reply_email_id is not None
    assert "<first@example.org>" in history_ids(w.sessions, ann_id)

    items = w.run()
    assert routed(items["<first@example.org>"]) == {"kind": "outbox", "id": sent.entry.id, "via": "reply_token"}
    (after,) = w.recipients(sent).values()
    assert (after.replied_at, after.reply_email_id) == (row.replied_at, row.reply_email_id)  # the first kept
    events = w.events()
    assert [d["recipient"] for e, d in events if e == "message.replied"] == [ann]  # announced once
    assert [d["message_id"] for e, d in events if e == "inbound.processed"] == ["<first@example.org>"]
