"""Tracked sends on Gmail, Microsoft 365 (Graph) and Exchange (EWS), against their stand-ins
driven by the real client libraries, on SQLite and PostgreSQL.

Through the providers' APIs (which take recipients from the headers) each recipient gets one
copy naming only them; over the services' SMTP submission with OAuth (Gmail, Microsoft 365:
an opt-in) one transaction per recipient with the same visible headers for all. Either way
each recipient's mailbox holds exactly one copy with its own pixel, a Bcc recipient is in no
header they see, and the sender's Sent holds exactly one clean copy, not a draft, naming every
visible recipient — the copies the services filed themselves are gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from email.utils import getaddresses

import pytest
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.states import OutboxStatus, SendMode
from services.applicants import add_applicant
from services.sending import SendRequest, send_message
from services.timeline import applicant_timeline
from tests.rig.cloud_senders import ANN, BACKENDS, BOB, CARL, Cloud
from tests.sync.helpers import sync_account

BODY = "Dear candidate,\n\nplease pick a slot: [calendar](https://cal.example.com/slots).\n"


@pytest.fixture(params=list(BACKENDS))
def cloud(request: pytest.FixtureRequest, config: Config, sessions: sessionmaker[Session]) -> Iterator[Cloud]:
    make, smtp = BACKENDS[request.param]
    with ExitStack() as stack:
        yield make(stack, config, sessions, smtp)


def parsed(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=default_policy)


def addresses(raw: bytes, field: str) -> list[str]:
    return [a for _, a in getaddresses([str(parsed(raw)[field] or "")]) if a]


def html_of(raw: bytes) -> str:
    part = parsed(raw).get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def test_three_recipients_get_one_tracked_copy_each_and_sent_holds_one_clean_copy(
    cloud: Cloud, sessions: sessionmaker[Session]
) -> None:
    outcome = send_message(
        cloud.config,
        sessions,
        SendRequest(cloud.account, [ANN], "Your interview", BODY, cc=[BOB], bcc=[CARL], track=True),
    )
    assert outcome.entry.status == OutboxStatus.SENT, outcome.entry.error
    assert outcome.mode == cloud.mode
    subject = f"[{outcome.short_id}] Your interview"

    got = {a: cloud.inbox(a) for a in (ANN, BOB, CARL)}
    assert {a: len(v) for a, v in got.items()} == {ANN: 1, BOB: 1, CARL: 1}  # one copy each, never two
    copies = {a: parsed(v[0]) for a, v in got.items()}
    pixels = set()
    for address, msg in copies.items():
        assert msg["Subject"] == subject and msg["Reply-To"] == outcome.reply_to
        assert msg["Bcc"] is None
        if address != CARL:  # a Bcc recipient is named in nobody else's copy
            assert CARL not in str(msg["To"]) + str(msg["Cc"] or "")
        if cloud.mode == SendMode.SMTP:  # the same visible headers for everyone
            assert (msg["To"], msg["Cc"]) == (ANN, BOB)
        else:  # the API takes recipients from the headers: each copy names only its recipient
            assert (msg["To"], msg["Cc"]) == (address, None)
        (pixel,) = re.findall(r'src="(https://t\.example\.com/t/o/[^"]+)"', html_of(got[address][0]))
        pixels.add(pixel)
    assert len(pixels) == 3

    (clean,) = [raw for raw in cloud.sent() if outcome.entry.message_id.encode() in raw]
    assert len(cloud.sent()) == 1  # nothing else in Sent: the services' own copies are gone
    assert b"/t/o/" not in clean and "https://cal.example.com/slots" in html_of(clean)
    assert (addresses(clean, "To"), addresses(clean, "Cc")) == ([ANN], [BOB]) and parsed(clean)["Subject"] == subject


def test_a_tracked_message_appears_once_in_the_applicants_timeline_after_a_sync(
    cloud: Cloud, sessions: sessionmaker[Session]
) -> None:
    """The copies a provider filed itself and Postroom moved to Trash (Gmail's, indexed with
    Trash) are the same message as the canonical copy in Sent: the timeline shows it once."""
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Ann", [ANN])
        applicant_id, org_id = applicant.id, applicant.org_id
    outcome = send_message(
        cloud.config,
        sessions,
        SendRequest(cloud.account, [ANN], "Your interview", BODY, cc=[BOB], applicant_id=applicant_id, track=True),
    )
    assert outcome.entry.status == OutboxStatus.SENT, outcome.entry.error
    sync_account(cloud.config, sessions, cloud.account)
    with sessions() as s:
        items = [i for i in applicant_timeline(s, org_id, applicant_id) if "Your interview" in i.subject]
    assert len(items) == 1, [(i.message_id, i.subject) for i in items]
    (item,) = items
    assert item.message_id == outcome.entry.message_id and item.direction == "out"
    assert item.tracking is not None and {r.address for r in item.tracking.recipients} == {ANN, BOB}
