"""Writing and sending in a real Chromium, from a mailbox on the rig to another one on it: a new
message with its live preview (htmx), a template made in the templates editor and sent tracked
to an applicant from their page, and a reply. Each one really arrives: the recipient's INBOX on
the rig's Dovecot is read back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import SMTP, default

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from postroom.models import Email
from services.applicants import add_applicant
from tests.browser.conftest import Browser, Live, Who, page_errors
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig


@dataclass(frozen=True)
class Desk:
    """A recruiter with a synced mailbox, and an applicant (another rig mailbox) who wrote to it."""

    who: Who
    sender: Mailbox
    ann: Mailbox
    account_id: int
    applicant_id: int
    email_id: int  # Ann's message in the recruiter's mailbox


def _box(rig: MailRig) -> Mailbox:
    address = rig.free_users.pop()  # type: ignore[attr-defined]
    return Mailbox(rig, address, rig.users[address], "")


@pytest.fixture(scope="module")
def desk(live: Live, mail_rig: MailRig) -> Iterator[Desk]:
    sender, ann = _box(mail_rig), _box(mail_rig)
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"], msg["Subject"] = f"Ann Applicant <{ann.address}>", sender.address, "My application"
    msg["Message-ID"], msg["Date"] = "<compose-ann-1@example.test>", "Mon, 02 Jun 2025 09:00:00 +0000"
    msg.set_content("Hello, here is my application.")
    sender.append(msg.as_bytes(policy=SMTP))
    who = live.new_user(name="Rita Recruiter")
    account_id = live.connect(sender, who.org_id)
    with live.sessions.begin() as s:
        applicant_id = add_applicant(s, "Ann Applicant", [ann.address], who.org_id)[0].id
    live.sync(account_id)
    with live.sessions() as s:
        email_id = s.scalars(select(Email.id).where(Email.message_id == "<compose-ann-1@example.test>")).one()
    yield Desk(who, sender, ann, account_id, applicant_id, email_id)


def _received(box: Mailbox, subject_part: str) -> Message:
    """The message whose subject contains ``subject_part``, once it is in ``box``'s INBOX."""
    found: list[Message] = []

    def arrived() -> bool:
        found[:] = [
            m
            for m in (message_from_bytes(raw, policy=default) for raw in box.fetch_raw().values())
            if subject_part in str(m["Subject"])
        ]
        return bool(found)

    box.wait_for(arrived, timeout=15)
    assert len(found) == 1, [str(m["Subject"]) for m in found]
    return found[0]


def _preview_subject(browser: Browser) -> str:
    shown = browser.find_all("#preview .preview-subject")
    return shown[0].text if shown else ""


def _flash(browser: Browser) -> str:
    return " ".join(e.text for e in browser.find_all(".flash"))


def test_compose_previews_live_and_sends(browser: Browser, desk: Desk) -> None:
    browser.sign_in(desk.who)
    browser.open("/compose")
    assert Select(browser.find("select[name=account]")).first_selected_option.text == desk.sender.address
    browser.fill("input[name=to]", desk.ann.address)
    browser.fill("input[name=subject]", "Next steps")
    browser.fill("textarea[name=body]", "Dear Ann,\n\nthank you — **we would like to meet you**.")
    browser.wait(lambda: _preview_subject(browser) == "Next steps", what="the live preview")
    browser.driver.switch_to.frame(browser.find("#preview iframe.mail"))
    try:
        assert browser.find("strong").text == "we would like to meet you"
    finally:
        browser.driver.switch_to.default_content()
    assert page_errors(browser.console()) == []

    browser.find("form button[type=submit].primary").click()
    browser.wait_path("/outbox")
    assert re.search(rf"Sent “\[\w+\] Next steps” to {re.escape(desk.ann.address)}\.", _flash(browser)), _flash(browser)
    received = _received(desk.ann, "Next steps")
    assert received["From"].addresses[0].addr_spec == desk.sender.address
    body = received.get_body(("plain",))
    assert body is not None and "we would like to meet you" in body.get_content()
    assert "+" in str(received["Reply-To"])  # the reply token that brings the answer back


def test_a_template_made_in_the_editor_is_sent_tracked_from_the_applicants_page(
    browser: Browser, desk: Desk, live: Live
) -> None:
    browser.sign_in(desk.who)
    browser.open("/templates/new")
    browser.fill("input[name=name]", "Interview invitation")
    browser.fill("input[name=subject]", "Your interview, {{ applicant.name }}")
    browser.fill("textarea[name=body]", "Hello {{ applicant.name }},\n\nplease pick a slot for the {{ role }} role.")
    browser.find("form button[type=submit].primary").click()
    browser.wait(lambda: "Template “Interview invitation” is saved" in _flash(browser), what="the saved template")

    browser.open(f"/applicants/{desk.applicant_id}")
    browser.find("a.button.primary[href*='compose']").click()
    browser.wait_path("/compose")
    assert browser.find("input[name=to]").get_attribute("value") == desk.ann.address
    Select(browser.find("select[name=template]")).select_by_visible_text("Interview invitation")
    browser.fill("textarea[name=data]", '{"role": "Data Engineer"}')
    browser.wait(lambda: _preview_subject(browser) == "Your interview, Ann Applicant", what="the template's preview")
    browser.find("input[name=track]").click()
    browser.find("form button[type=submit].primary").click()
    browser.wait_path("/outbox")
    assert "tracked: one SMTP transaction per recipient" in _flash(browser), _flash(browser)

    received = _received(desk.ann, "Your interview, Ann Applicant")
    html = received.get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert "please pick a slot for the Data Engineer role" in content
    assert f"{live.url}/t/o/" in content  # the tracking pixel points at this Postroom

    live.sync(desk.account_id)  # the worker's next pass finds the copy in Sent
    browser.open(f"/applicants/{desk.applicant_id}")  # the sent message in the timeline, with its tracking
    sent = [li for li in browser.find_all("ol.timeline > li.out") if "Your interview, Ann Applicant" in li.text]
    assert len(sent) == 1, browser.text
    states = [e.text for e in sent[0].find_elements(By.CSS_SELECTOR, ".tracking .state")]
    assert states == ["sent"]  # delivered to Ann's server, not opened yet
    assert desk.ann.address in sent[0].find_element(By.CSS_SELECTOR, ".tracking").text


def test_replying_to_an_applicants_message(browser: Browser, desk: Desk) -> None:
    browser.sign_in(desk.who)
    browser.open(f"/compose?reply_to={desk.email_id}")
    assert browser.find("h1").text == "Reply"
    assert browser.find("input[name=to]").get_attribute("value") == desk.ann.address
    assert browser.find("input[name=subject]").get_attribute("value") == "Re: My application"
    browser.fill("textarea[name=body]", "Thank you, Ann: we will be in touch.")
    browser.wait(lambda: _preview_subject(browser) == "Re: My application", what="the preview")
    browser.find("form button[type=submit].primary").click()
    browser.wait_path("/outbox")
    received = _received(desk.ann, "Re: My application")
    assert received["In-Reply-To"] == "<compose-ann-1@example.test>"


def test_sending_without_a_recipient_says_so_next_to_the_field(browser: Browser, desk: Desk) -> None:
    browser.sign_in(desk.who)
    browser.open("/compose")
    browser.fill("input[name=subject]", "Nobody")
    browser.fill("textarea[name=body]", "To no one.")
    browser.find("form button[type=submit].primary").click()
    browser.wait(lambda: browser.find_all(".field-error"), what="the field's error")
    assert [e.text for e in browser.find_all(".field-error")] == ["A message needs at least one recipient (To)."]
    assert browser.find("input[name=subject]").get_attribute("value") == "Nobody"  # kept
