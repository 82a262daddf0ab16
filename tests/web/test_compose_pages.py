"""Composing and sending from the browser (issue 12, item 2): a templated, tracked message with an
interview invitation, previewed live exactly as it will be sent (in a sandboxed frame) and sent
through the rig's Postfix to two Dovecot mailboxes, which get one copy each with its own pixel;
the sentence after sending says how the copies went out. Replies and messages to an applicant
start from a draft; mistakes show next to their field; another organisation's message, applicant
or mailbox is not found. SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy

import icalendar
import pytest
from sqlalchemy import select

from postroom.config import Config
from postroom.models import Email, OutboxMessage
from services.applicants import add_applicant
from services.orgs import resolve_org
from services.templates import add_template
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, sync_ok
from tests.web.page_helpers import Browser, browser, field_errors, flashes, other_org, page_text

BODY = "Hello {{ name }},\n\nplease pick a slot for the **{{ role }}** interview: [calendar](https://cal.example.com/slots).\n"


@pytest.fixture
def sender(tracking: Config, mailbox: Mailbox) -> tuple[Browser, int]:
    """A recruiter whose rig mailbox is connected, with a template "Interview"."""
    b = browser(tracking)
    mailbox.ensure_folders()
    account_id = connect(tracking, b.sessions, mailbox)
    with b.sessions.begin() as s:
        add_template(s, resolve_org(s, None), "Interview", "Your interview for {{ role }}", BODY)
    return b, account_id


def parsed(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=default_policy)


def inbox(box: Mailbox, subject_part: str) -> list[Message]:
    return [m for m in map(parsed, box.fetch_raw().values()) if subject_part in str(m["Subject"])]


def test_a_templated_tracked_invitation_is_previewed_then_sent_and_each_recipient_gets_their_copy(
    sender: tuple[Browser, int], mailbox: Mailbox, new_mailbox: Callable[[], Mailbox]
) -> None:
    b, account_id = sender
    ann, bob = new_mailbox(), new_mailbox()
    page = b.text("/compose")
    assert f'<option value="{account_id}" selected>{mailbox.address}</option>' in page
    assert '<option value="Interview">Interview</option>' in page
    form = {
        "account": str(account_id),
        "to": ann.address,
        "cc": bob.address,
        "template": "Interview",
        "data": '{"role": "Data Engineer", "name": "Ann"}',
        "track": "on",
        "invite_start": "2027-01-12T10:00",
        "invite_end": "2027-01-12T11:00",
        "invite_timezone": "Europe/Berlin",
        "invite_location": "Room 4",
    }

    preview = b.post("/compose/preview", form)
    shown = page_text(preview)
    assert preview.status_code == 200 and "Your interview for Data Engineer" in shown
    (frame,) = re.findall(
        r'<iframe class="mail" sandbox="" title="Preview of the message" srcdoc="([^"]*)"',
        preview.get_data(as_text=True),
    )
    document = html.unescape(frame)
    assert "Hello Ann," in document and "<strong>Data Engineer</strong>" in document
    assert "script-src 'none'" in document  # the frame's own policy, besides the sandbox
    assert "please pick a slot for the Data Engineer interview: calendar (https://cal.example.com/slots)" in shown

    sent = b.post("/compose", form)
    page = b.follow(sent)
    assert sent.headers["Location"].endswith("/outbox")
    ((kind, sentence),) = flashes(page)
    with b.sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        subject = f"[{row.short_id}] Your interview for Data Engineer"
        assert (row.tracked, row.mode, row.status) == (True, "smtp", "sent")
    assert (kind, sentence) == (
        "ok",
        f"Sent “{subject}” to {ann.address}, {bob.address}, tracked: one SMTP transaction per recipient, "
        "every copy with the same visible headers.",
    )
    assert "state-sent" in page and subject in page

    for box in (ann, bob):
        box.wait_for(lambda box=box: bool(inbox(box, subject)))  # type: ignore[misc]
        (got,) = inbox(box, subject)
        assert (got["To"], got["Cc"]) == (ann.address, bob.address)
        body = str(got.get_body(("html",)).get_content())  # type: ignore[union-attr]
        assert re.search(r'https://t\.example\.com/t/o/[^"]+\.gif', body)  # their own pixel
        (event,) = icalendar.Calendar.from_ical(
            next(p for p in got.walk() if p.get_content_type() == "text/calendar").get_payload(decode=True)
        ).walk("VEVENT")
        assert str(event["DTSTART"].params["TZID"]) == "Europe/Berlin" and event["DTSTART"].dt.hour == 10
        assert str(event["LOCATION"]) == "Room 4"


def test_the_preview_names_what_is_missing_and_sending_shows_mistakes_next_to_their_field(
    sender: tuple[Browser, int],
) -> None:
    b, account_id = sender
    base = {"account": str(account_id), "to": "ann@example.org", "template": "Interview"}
    shown = page_text(b.post("/compose/preview", base | {"data": '{"role": "Data Engineer"}'}))
    assert "The body uses {{ name }}, which the data does not have." in shown
    shown = page_text(b.post("/compose/preview", base | {"data": '{"role": '}))
    assert "The Template data is not JSON: Expecting value on line 1." in shown
    assert "Write the message, or choose a template" in page_text(b.post("/compose/preview", {"account": "1"}))

    written = {"account": str(account_id), "to": "ann@example.org", "subject": "Hello", "body": "Hi."}
    invite = {"invite_start": "2027-01-12T10:00", "invite_end": "2027-01-12T11:00"}
    for change, error in [
        ({"to": ""}, "A message needs at least one recipient (To)."),
        ({"to": "ann@"}, "The recipient 'ann@' is not one plain email address like ann@example.com."),
        ({"template": "Interview"}, "Give either a template (Template) or a subject and a body, not both."),
        (invite, "An invitation needs its Time zone, such as Europe/Berlin."),
    ]:
        resp = b.post("/compose", written | change)
        page = page_text(resp)
        assert resp.status_code == 400 and field_errors(page) == [error], field_errors(page)
        assert 'name="subject" value="Hello"' in page  # what was typed stays
    with b.sessions() as s:
        assert s.scalars(select(OutboxMessage)).all() == []


def test_a_reply_starts_from_the_message_and_a_message_to_an_applicant_from_their_address(
    sender: tuple[Browser, int], tracking: Config, mailbox: Mailbox
) -> None:
    b, account_id = sender
    mailbox.append(make_message(subject="My application", from_="Ann Lee <ann@example.org>", to=mailbox.address))
    sync_ok(tracking, b.sessions, account_id)
    with b.sessions.begin() as s:
        email = s.scalars(select(Email).where(Email.subject == "My application")).one()
        applicant = add_applicant(s, "Ann Lee", ["ann@example.org", "ann.lee@example.net"], resolve_org(s, None))[0]
        email_id, message_id, applicant_id = email.id, email.message_id, applicant.id

    page = b.text(f"/compose?reply_to={email_id}")
    assert "<h1>Reply</h1>" in page and "This is a reply to Ann Lee: 'My application'." in page
    assert 'name="to" value="ann@example.org"' in page and 'name="subject" value="Re: My application"' in page
    assert f'name="in_reply_to" value="{message_id}"' in page and f'name="applicant" value="{applicant_id}"' in page

    page = b.text(f"/compose?applicant={applicant_id}")
    assert 'name="to" value="ann@example.org"' in page and "This is a message to Ann Lee." in page

    eve = other_org(b.app)
    assert eve.get(f"/compose?reply_to={email_id}").status_code == 404
    assert eve.get(f"/compose?applicant={applicant_id}").status_code == 404
    assert b.get(f"/compose?applicant={applicant_id + 100}").status_code == 404  # exactly like a missing one
    assert "No mailbox to send from" in eve.text("/compose")
    resp = eve.post("/compose", {"account": str(account_id), "to": "x@example.org", "subject": "Hi", "body": "Hi."})
    assert resp.status_code == 400 and field_errors(page_text(resp)) == [f"No mail account with id {account_id}."]
    with b.sessions() as s:
        assert s.scalars(select(OutboxMessage)).all() == []
