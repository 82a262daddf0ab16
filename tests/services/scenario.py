"""A small recruiting scenario, synced by the real engine from two recruiters' Dovecot mailboxes,
for the timeline, thread and message tests (services and pages).

Ann applies to Rita with Sam in Cc (one message in both mailboxes) and her CV attached; Rita
answers from her Sent folder — a message Postroom sent, tracked, to Ann, Carol, Dave and Bob
(Bob's address refused); Ann answers in HTML with a script and a remote image; Ann also writes
to Sam from a work address that is not hers in Postroom yet; someone else writes to Rita.
The outbox row of Rita's answer is recorded before the sync, as :mod:`services.sending` records
it, so indexing Ann's answer marks her ``replied`` the way it does in production; the tracking
hits are recorded as :mod:`services.tracking`'s writer stores them (its verdict included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import OutboxMessage, OutboxRecipient, TrackingEvent
from services.applicants import add_applicant
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, sync_ok

ANN = "ann@example.org"
ANN_WORK = "ann.w@work.example"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PDF = b"%PDF-1.4\n% a CV\n" + bytes(range(256)) * 4
HTML_REPLY = (
    '<p onclick="steal()">Tuesday <b>works</b> for me.</p><script>alert("x")</script>'
    '<img src="https://tracker.example/pixel.gif?ann" alt="logo">'
    '<a href="javascript:alert(1)">click</a>'
)


@dataclass
class Scenario:
    rita: Mailbox
    sam: Mailbox
    rita_id: int
    sam_id: int
    applicant_id: int
    outbox_id: int
    ids: dict[str, str]  # name → Message-ID


def _application(rita: Mailbox, sam: Mailbox, mid: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Ann Applicant <{ANN}>"
    msg["To"] = f"Rita Recruiter <{rita.address}>"
    msg["Cc"] = f"Sam Sourcer <{sam.address}>"
    msg["Subject"] = "Application for the data engineer role"
    msg["Date"] = format_datetime(T0)
    msg["Message-ID"] = mid
    msg.set_content("Dear Rita,\n\nplease find my CV attached. I would love to join the team.\n\nAnn\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="Ann CV 2026.pdf")
    return msg.as_bytes(policy=SMTP)


def build(config: Config, sessions: sessionmaker[Session], new_mailbox: Callable[[], Mailbox]) -> Scenario:
    rita, sam = new_mailbox(), new_mailbox()
    for box in (rita, sam):
        box.ensure_folders()
    ids = {
        name: f"<{name}.{rita.address.split('@')[0]}@example.test>"
        for name in ("apply", "answer", "reply", "work", "other")
    }
    rita.append(_application(rita, sam, ids["apply"]))
    sam.append(_application(rita, sam, ids["apply"]))
    rita.append(
        make_message(
            message_id=ids["answer"],
            from_=f"Rita Recruiter <{rita.address}>",
            to=f"Ann Applicant <{ANN}>",
            subject="Re: Application for the data engineer role",
            in_reply_to=ids["apply"],
            references=[ids["apply"]],
            date=T0 + timedelta(hours=2),
            body="Thanks Ann, could you do an interview on Tuesday at 10?\n\n> please find my CV attached\n",
        ),
        "Sent",
    )
    rita.append(
        make_message(
            message_id=ids["reply"],
            from_=f"Ann Applicant <{ANN}>",
            to=f"Rita Recruiter <{rita.address}>",
            subject="Re: Application for the data engineer role",
            in_reply_to=ids["answer"],
            references=[ids["apply"], ids["answer"]],
            date=T0 + timedelta(hours=5),
            body="Tuesday works for me.",
            html=HTML_REPLY,
        )
    )
    sam.append(
        make_message(
            message_id=ids["work"],
            from_=f"Ann at work <{ANN_WORK}>",
            to=f"Sam Sourcer <{sam.address}>",
            subject="From my work address",
            date=T0 + timedelta(days=1),
            body="Writing from work.",
        )
    )
    rita.append(make_message(message_id=ids["other"], from_="Otto <otto@elsewhere.example>", to=rita.address))
    rita_id, sam_id = connect(config, sessions, rita), connect(config, sessions, sam)
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Ann Applicant", [ANN])
        applicant_id = applicant.id
        outbox_id = _record_send(s, rita_id, applicant_id, ids["answer"])
    sync_ok(config, sessions, rita_id)
    sync_ok(config, sessions, sam_id)
    return Scenario(rita, sam, rita_id, sam_id, applicant_id, outbox_id, ids)


def _record_send(s: Session, account_id: int, applicant_id: int, message_id: str) -> int:
    """Rita's answer as a tracked send recorded it: Ann, Carol, Dave accepted, Bob refused."""
    sent_at = T0 + timedelta(hours=2)
    row = OutboxMessage(
        account_id=account_id,
        message_id=message_id,
        raw=b"",
        recipients=[ANN, "carol@example.org", "dave@example.org", "bob@gone.example"],
        status="sent",
        refused={"bob@gone.example": "550 5.1.1 no such user"},
        applicant_id=applicant_id,
        tracked=True,
        mode="smtp",
        sent_at=sent_at,
    )
    s.add(row)
    s.flush()
    people = {}
    for i, (address, status) in enumerate(
        [(ANN, "sent"), ("carol@example.org", "sent"), ("dave@example.org", "sent"), ("bob@gone.example", "failed")]
    ):
        people[address] = OutboxRecipient(
            outbox_id=row.id,
            address=address,
            kind="to",
            message_id=f"<copy{i}.{message_id[1:]}",
            status=status,
            sent_at=sent_at if status == "sent" else None,
            error="550 5.1.1 no such user" if status == "failed" else None,
        )
    s.add_all(people.values())
    s.flush()

    def hit(address: str, kind: str, minutes: int, machine: bool) -> TrackingEvent:
        return TrackingEvent(
            recipient_id=people[address].id,
            kind=kind,
            at=sent_at + timedelta(minutes=minutes),
            seconds_after_send=minutes * 60.0,
            method="GET",
            user_agent="Mozilla/5.0 (via ggpht.com GoogleImageProxy)" if machine else "Mozilla/5.0 (X11) Firefox/130.0",
            ip="66.249.84.1" if machine else "203.0.113.9",
            link=0 if kind == "click" else None,
            url="https://jobs.example.com/" if kind == "click" else None,
            machine=machine,
            reason="Gmail's image proxy" if machine else "no sign of a machine",
        )

    s.add_all(
        [
            hit(ANN, "open", 30, False),
            hit("carol@example.org", "open", 10, False),
            hit("carol@example.org", "click", 11, False),
            hit("carol@example.org", "open", 1, True),
            hit("dave@example.org", "open", 1, True),
            hit("dave@example.org", "open", 2, True),
            hit("dave@example.org", "open", 3, True),
        ]
    )
    return row.id
