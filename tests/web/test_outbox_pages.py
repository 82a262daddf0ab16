"""The outbox page (issue 12, item 2): every state, uncertain messages highlighted with *Check Sent*
and *Send again anyway*, against a real submission server that drops the connection after DATA
(the rig's aiosmtpd with its fault modes) and Dovecot's Sent folder: a message found in Sent is
marked sent and not sent again, one not found is sent again only when the user says so. Another
organisation's message is not found. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from postroom.bounces import Bounce, BouncedRecipient
from postroom.config import Config
from postroom.models import MailAccount, OutboxMessage
from sync.inbound_routing import record_bounce
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect
from tests.web.page_helpers import Browser, browser, flashes, other_org


@pytest.fixture
def sending(config: Config, mailbox: Mailbox, smtp: FaultySmtp) -> tuple[Browser, int]:
    b = browser(config)
    mailbox.ensure_folders()
    return b, connect(config, b.sessions, mailbox, smtp_port=smtp.port)


def rcpt(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.org"


def send(b: Browser, account_id: int, to: str, subject: str) -> tuple[int, str]:
    """Send from the compose page; returns the outbox row and the flash sentence, in which the
    subject is written as ``{subject}`` (it went out with its short id, ``[k3x9q2] Offer``)."""
    page = b.follow(b.post("/compose", {"account": str(account_id), "to": to, "subject": subject, "body": "Hello."}))
    with b.sessions() as s:
        row = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc())).first()
        assert row is not None
    ((_, sentence),) = flashes(page)
    return row.id, sentence.replace(f"[{row.short_id}] {subject}", "{subject}")


def test_an_empty_outbox_says_how_to_fill_it(config: Config) -> None:
    page = browser(config).text("/outbox")
    assert "Nothing sent yet" in page and 'href="/compose"' in page
    assert "No uncertain messages" in browser(config, "other@example.test").text("/outbox?status=uncertain")
    assert browser(config, "third@example.test").get("/outbox?status=lost").status_code == 404


def test_an_uncertain_message_found_in_sent_is_marked_sent_and_not_sent_again(
    sending: tuple[Browser, int], mailbox: Mailbox, smtp: FaultySmtp
) -> None:
    b, account_id = sending
    ok_id, _ = send(b, account_id, rcpt("ann"), "Welcome")
    outbox_id, sentence = send(b, account_id, rcpt("dropdata"), "Your interview")
    assert sentence.startswith("“{subject}” may have gone out although the server's answer was lost (")
    assert sentence.endswith("), so it is not sent again: check it in the outbox.")

    page = b.text("/outbox")
    assert f'class="outbox-uncertain attention" data-outbox="{outbox_id}"' in page
    assert f'class="outbox-sent" data-outbox="{ok_id}"' in page
    assert page.count(f'action="/outbox/{outbox_id}/retry"') == 2 and f'action="/outbox/{ok_id}/retry"' not in page
    assert ">Check Sent</button>" in page and ">Send again anyway</button>" in page
    only = b.text("/outbox?status=uncertain")
    assert f'data-outbox="{outbox_id}"' in only and f'data-outbox="{ok_id}"' not in only

    with b.sessions() as s:
        row = s.get_one(OutboxMessage, outbox_id)
        raw, message_id, subject = row.raw, row.message_id, f"[{row.short_id}] Your interview"
    mailbox.append(raw, "Sent", flags=["\\Seen"])  # the server had it after all, and filed it
    page = b.follow(b.post(f"/outbox/{outbox_id}/retry", {}))
    ((kind, sentence),) = flashes(page)
    assert (kind, sentence) == (
        "ok",
        f"“{subject}” is in the Sent folder of {mailbox.address}, so it did go out: marked sent, not sent again.",
    )
    assert f'class="outbox-sent" data-outbox="{outbox_id}"' in page
    assert len(smtp.received(message_id)) == 1


def test_an_uncertain_message_not_in_sent_is_sent_again_only_when_asked(
    sending: tuple[Browser, int], smtp: FaultySmtp
) -> None:
    b, account_id = sending
    to = rcpt("dropfirst")
    outbox_id, _ = send(b, account_id, to, "Offer")
    with b.sessions() as s:
        row = s.get_one(OutboxMessage, outbox_id)
        message_id, subject = row.message_id, f"[{row.short_id}] Offer"

    page = b.follow(b.post(f"/outbox/{outbox_id}/retry", {"back": "uncertain"}))
    ((kind, sentence),) = flashes(page)
    assert kind == "error" and sentence.count(". ") == 0
    assert "may already have gone out even though it is not in the Sent folder" in sentence
    assert f"ask the recipients ({to})" in sentence and "use “Send again anyway” to send it anyway." in sentence
    assert len(smtp.received(message_id)) == 1 and f'data-outbox="{outbox_id}"' in page  # back on the same filter

    page = b.follow(b.post(f"/outbox/{outbox_id}/retry", {"force": "1"}))
    assert flashes(page) == [("ok", f"“{subject}” is sent to {to}.")]
    assert len(smtp.received(message_id)) == 2  # a person chose to send it again
    page = b.follow(b.post(f"/outbox/{outbox_id}/retry", {"force": "1"}))
    assert flashes(page) == [("ok", f"“{subject}” was already sent; nothing was done.")]
    assert len(smtp.received(message_id)) == 2


def test_another_organisations_message_is_not_found(sending: tuple[Browser, int], smtp: FaultySmtp) -> None:
    b, account_id = sending
    outbox_id, _ = send(b, account_id, rcpt("dropdata"), "Private")
    eve = other_org(b.app)
    assert "Nothing sent yet" in eve.text("/outbox") and "Private" not in eve.text("/outbox?status=uncertain")
    assert eve.post(f"/outbox/{outbox_id}/retry", {"force": "1"}).status_code == 404
    assert b.post(f"/outbox/{outbox_id + 100}/retry", {}).status_code == 404  # exactly like a missing one
    with b.sessions() as s:
        assert s.get_one(OutboxMessage, outbox_id).status == "uncertain"
        assert len(smtp.received(s.get_one(OutboxMessage, outbox_id).message_id)) == 1


def test_a_bounce_read_by_the_processing_mailbox_shows_under_its_message(sending: tuple[Browser, int]) -> None:
    b, account_id = sending
    ghost = rcpt("ghost")
    outbox_id, _ = send(b, account_id, ghost, "Your interview")
    with b.sessions.begin() as s:
        row = s.get_one(OutboxMessage, outbox_id)
        org = s.scalar(select(MailAccount.org_id).where(MailAccount.id == account_id))
        failed = BouncedRecipient(ghost, "failed", "5.1.1", "550 5.1.1 <ghost> User unknown", True)
        assert record_bounce(s, org, Bounce(row.message_id, (failed,), None), datetime.now(UTC))
    assert f"bounced (5.1.1): {ghost} — 550 5.1.1 <ghost> User unknown" in b.text("/outbox")
    assert "&lt;ghost&gt;" in b.get("/outbox").get_data(as_text=True)  # escaped
