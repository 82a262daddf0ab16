"""Connecting an IMAP mailbox in a real Chromium, against the rig's Dovecot and Postfix: the
address and password, the servers guessed from the domain's autoconfig document (the live
app's ``web.settings_guess_autoconfig``, see conftest), confirmed as shown, then the mailbox
on /mailboxes — and syncing with exactly those settings."""

from __future__ import annotations

from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from postroom.models import MailAccount
from tests.browser.conftest import Browser, page_errors
from tests.rig.fixtures import Mailbox


def _value(browser: Browser, name: str) -> str:
    return browser.find(f"form [name={name}]").get_attribute("value") or ""


def test_connecting_an_imap_mailbox_through_the_settings_guess(browser: Browser, mailbox: Mailbox) -> None:
    who = browser.sign_in()
    browser.open("/mailboxes")
    assert "No mailbox connected yet" in browser.text
    browser.open("/connect")
    browser.fill("#imap input[name=email]", mailbox.address)
    browser.fill("#imap input[name=password]", mailbox.password)
    browser.find("#imap button[type=submit]").click()

    browser.wait(lambda: "Connect " + mailbox.address in browser.text, 15, "the guessed settings")
    assert browser.find(".guess-source").text == "Found in the domain's own autoconfig document (Test rig)."
    probes = [li.text for li in browser.find_all("ul.probes li")]
    rig = mailbox.rig.ports
    assert probes == [
        f"IMAP 127.0.0.1:{rig['imap']} (none): answered",
        f"SMTP 127.0.0.1:{rig['smtp_submission']} (none): answered",
    ]
    assert (_value(browser, "imap_host"), _value(browser, "imap_port")) == ("127.0.0.1", str(rig["imap"]))
    assert (_value(browser, "smtp_host"), _value(browser, "smtp_port")) == ("127.0.0.1", str(rig["smtp_submission"]))
    assert Select(browser.find("select[name=imap_security]")).first_selected_option.text == "none"
    assert _value(browser, "username") == mailbox.address
    assert page_errors(browser.console()) == []

    browser.find("form button[type=submit].primary").click()
    browser.wait_path("/mailboxes")
    assert f"{mailbox.address} is connected; Postroom is syncing it now." in browser.text
    row = browser.find("tr.mailbox")
    assert mailbox.address in row.text

    with browser.live.sessions() as s:
        account = s.scalars(select(MailAccount).where(MailAccount.org_id == who.org_id)).one()
        assert account.settings["imap_port"] == rig["imap"]
    mailbox.append(b"From: a@example.org\r\nSubject: first\r\nMessage-ID: <c1@example.org>\r\n\r\nhello\r\n")
    browser.live.sync(account.id)  # the worker's pass, with the settings as confirmed in the browser
    browser.open("/mailboxes")
    assert browser.find("tr.mailbox .state").text == "active"
    assert "never" not in browser.find("tr.mailbox").text


def test_a_setting_the_server_refuses_is_shown_next_to_its_field(browser: Browser, mailbox: Mailbox) -> None:
    """The guess is only a proposal: a correction that would send the password unencrypted over
    the network is refused, in one sentence beside the security setting, with the form kept."""
    browser.sign_in()
    browser.open("/connect")
    browser.fill("#imap input[name=email]", mailbox.address)
    browser.fill("#imap input[name=password]", mailbox.password)
    browser.find("#imap button[type=submit]").click()
    browser.wait(lambda: browser.find_all("input[name=imap_host]"), 15, "the guessed settings")
    browser.fill("input[name=imap_host]", "mail.example.com")
    browser.find("form button[type=submit].primary").click()
    browser.wait(lambda: browser.find_all(".field-error"), what="the field's error")
    errors = [e.text for e in browser.find_all(".field-error")]
    assert errors == [
        "Refusing to send the password unencrypted to mail.example.com; use ssl or starttls "
        "(or set imap.allow_plaintext = true if you really mean it)."
    ]
    assert _value(browser, "imap_host") == "mail.example.com"  # what was typed is kept
    assert _value(browser, "password") == mailbox.password  # not typed again
    browser.open("/mailboxes")
    assert "No mailbox connected yet" in browser.text
