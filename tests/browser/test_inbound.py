"""The processing page in a real Chromium: an admin (only an admin designates) opens it from
the navigation, designates their rig mailbox from the form, presses *Run now*, and sees the message it took — sender,
subject, its data as a key/value table, its text — while a ``<script>`` in the message stays
text and nothing runs; the page loads nothing the CSP refuses."""

from __future__ import annotations

from selenium.webdriver.support.ui import Select

from tests.browser.conftest import Browser, csp_violations, page_errors
from tests.rig.fixtures import Mailbox
from tests.web.inbound_helpers import inbound_message

HOSTILE = "<script>alert('inbound')</script>"


def test_designate_run_and_see_the_item(browser: Browser, mailbox: Mailbox) -> None:
    who = browser.live.new_user(role="admin")
    browser.live.connect(mailbox, who.org_id)
    mailbox.append(
        inbound_message(
            "<browser-inbound@example.org>",
            f"Name: Grace Hopper\nRole: Admiral\n---\nI would like to apply. {HOSTILE}",
            subject=f"Application {HOSTILE}",
        )
    )
    browser.sign_in(who)
    browser.open("/")
    browser.find('header nav a[href="/inbound"]').click()
    browser.wait_path("/inbound")
    assert "No processing mailbox yet" in browser.text and "Nothing taken yet" in browser.text

    Select(browser.find("#designate select[name=account]")).select_by_visible_text(f"{mailbox.address} (imap)")
    browser.find("#designate button[type=submit]").click()
    browser.wait(lambda: browser.find_all("table.inbound-mailboxes"), what="the designated mailbox")
    row = browser.find("table.inbound-mailboxes tbody tr")
    assert mailbox.address in row.text and "INBOX → processed / failed" in row.text and "never" in row.text

    browser.find("#run-now button").click()
    browser.wait(lambda: browser.find_all("li.inbound-item"), what="the item taken")
    assert "Run done: 1 processed, 0 failed." in browser.text
    item = browser.find("li.inbound-item")
    assert "processed" in item.find_element("css selector", ".state").text
    assert item.find_element("css selector", ".subject").text == f"Application {HOSTILE}"  # shown as text
    assert item.find_element("css selector", ".sender").text == "ann@example.org"
    data = [r.text for r in item.find_elements("css selector", "table.data tr")]
    assert data == ["name Grace Hopper", "role Admiral"]
    assert f"I would like to apply. {HOSTILE}" in item.find_element("css selector", "pre.mail-text").text
    assert browser.alert_text() is None  # nothing ran
    assert "never" not in browser.find("table.inbound-mailboxes tbody tr").text
    assert mailbox.uids("INBOX") == [] and len(mailbox.uids("processed")) == 1
    console = browser.console()
    assert csp_violations(console) == [] and page_errors(console) == []
