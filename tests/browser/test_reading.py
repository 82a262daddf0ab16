"""Reading mail in a real Chromium: adding an applicant with two addresses and reading their
timeline (every message with them, once, oldest first, with its direction), opening a message
(its body in a sandboxed frame, remote images blocked and nothing fetched from the sender's
server), "Show images" (loaded through Postroom's image proxy only, never by the browser from
the sender's server), and the thread view.

The mail is real: appended to the rig's Dovecot and synced by the real engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import Browser, Live, Who, frame_resources, page_errors
from tests.browser.leak_server import LeakServer
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig

SUBJECT = "Application for the Data Engineer role"


@dataclass(frozen=True)
class Scenario:
    who: Who
    box: str
    ann: tuple[str, str]  # her work and personal addresses
    image_path: str  # on the leak server


def _message(
    from_: str, to: str, subject: str, message_id: str, date: str, text: str, html: str | None = None, **headers: str
) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"], msg["Date"] = from_, to, subject, message_id, date
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=SMTP)


@pytest.fixture(scope="module")
def scenario(live: Live, mail_rig: MailRig, leak: LeakServer) -> Iterator[Scenario]:
    """A recruiter's mailbox with a conversation with Ann (from two addresses of hers, and the
    recruiter's answer in Sent) and one message from someone else, synced."""
    address = mail_rig.free_users.pop()  # type: ignore[attr-defined]
    box = Mailbox(mail_rig, address, mail_rig.users[address], "")
    who = live.new_user()
    ann, ann_home = "ann.reading@applicant.test", "ann.home@applicant.test"
    image_path = "/leak/reading-photo.png"
    first = "<reading-1@applicant.test>"
    html = (
        f'<p>Hello, I attach my CV. <a href="https://portfolio.example.org/ann">My portfolio</a></p>'
        f'<p><img src="{leak.origin}{image_path}" alt="Ann\'s photo" width="1" height="1"></p>'
    )
    box.append(
        _message(f"Ann Example <{ann}>", address, SUBJECT, first, "Mon, 02 Jun 2025 09:00:00 +0000", "Hello.", html)
    )
    box.append(
        _message(
            address, ann, f"Re: {SUBJECT}", "<reading-2@example.test>", "Mon, 02 Jun 2025 11:00:00 +0000",
            "Thank you, Ann. Are you free on Thursday?", In_Reply_To=first, References=first,
        ),
        folder="Sent",
    )  # fmt: skip
    box.append(
        _message(
            f"Ann Example <{ann_home}>", address, f"Re: {SUBJECT}", "<reading-3@applicant.test>",
            "Tue, 03 Jun 2025 08:00:00 +0000", "Thursday works for me.",
            In_Reply_To="<reading-2@example.test>", References=f"{first} <reading-2@example.test>",
        )
    )  # fmt: skip
    box.append(
        _message(
            "Newsletter <news@example.org>", address, "Weekly digest", "<digest@example.org>",
            "Mon, 02 Jun 2025 10:00:00 +0000", "Not about Ann.",
        )
    )  # fmt: skip
    live.sync(live.connect(box, who.org_id))
    yield Scenario(who, address, (ann, ann_home), image_path)


def _timeline(browser: Browser) -> list[tuple[str, str]]:
    return [
        (li.find_element(By.CSS_SELECTOR, ".direction").text, li.find_element(By.CSS_SELECTOR, ".subject a").text)
        for li in browser.find_all("ol.timeline > li")
    ]


def _open_applicant(browser: Browser, scenario: Scenario) -> None:
    browser.open("/applicants")
    browser.find_all("table.applicants a")[0].click()
    browser.wait(lambda: browser.find_all("ol.timeline"), what="the timeline")


def test_adding_an_applicant_shows_their_timeline_oldest_first(browser: Browser, scenario: Scenario) -> None:
    browser.sign_in(scenario.who)
    browser.open("/applicants")
    assert "No applicants yet" in browser.text
    browser.fill("#add input[name=name]", "Ann Example")
    browser.fill("#add textarea[name=addresses]", "\n".join(scenario.ann))
    browser.find("#add button[type=submit]").click()
    browser.wait(lambda: browser.path.startswith("/applicants/"), what="the applicant's page")
    assert "Ann Example added; 3 messages found in the mailboxes so far." in browser.text
    assert _timeline(browser) == [
        ("From them", SUBJECT),
        ("Sent to them", f"Re: {SUBJECT}"),
        ("From them", f"Re: {SUBJECT}"),
    ]
    assert [li.get_attribute("class") for li in browser.find_all("ol.timeline > li")] == ["in", "out", "in"]
    assert "Weekly digest" not in browser.text
    assert all(scenario.box in h.text for h in browser.find_all("ol.timeline .holders"))
    assert page_errors(browser.console()) == []

    browser.open("/applicants?q=ann.home")  # search by either address
    assert [a.text for a in browser.find_all("table.applicants a")] == ["Ann Example"]


def test_opening_a_message_blocks_remote_images_and_fetches_nothing(
    browser: Browser, scenario: Scenario, leak: LeakServer
) -> None:
    browser.sign_in(scenario.who)
    _open_applicant(browser, scenario)
    leak.reset()
    browser.requests()
    browser.find("ol.timeline > li .subject a").click()
    browser.wait(lambda: browser.path.startswith("/messages/"), what="the message page")
    assert browser.find("h1").text == SUBJECT
    assert "Ann Example <ann.reading@applicant.test>" in browser.find("dl.headers").text
    assert "1 remote image blocked to protect your privacy." in browser.text

    frame = browser.find("iframe.mail")
    sandbox = frame.get_attribute("sandbox") or ""
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox
    browser.driver.switch_to.frame(frame)
    try:
        assert "Hello, I attach my CV." in browser.text
        image = browser.find("img")
        assert image.get_attribute("src") in (None, "")
        assert image.get_attribute("alt") == "Ann's photo"
        assert frame_resources(browser) == []
        link = browser.find("a")
        assert link.get_attribute("href") == "https://portfolio.example.org/ann"
        assert link.get_attribute("target") == "_blank"
    finally:
        browser.driver.switch_to.default_content()

    assert [u for u in browser.requests() if u.startswith(leak.origin)] == []
    assert leak.hits() == []  # whoever asked: the page, the frame, a prefetch
    assert page_errors([m for m in browser.console() if "/img/" not in m]) == []


def test_show_images_loads_them_through_the_proxy_only(browser: Browser, scenario: Scenario, leak: LeakServer) -> None:
    browser.sign_in(scenario.who)
    _open_applicant(browser, scenario)
    browser.find("ol.timeline > li .subject a").click()
    browser.wait(lambda: browser.find_all("iframe.mail"), what="the message page")
    leak.reset()
    browser.requests()
    browser.find("a.button[href*='images=1']").click()
    browser.wait(lambda: "images=1" in browser.driver.current_url, what="the page with images")
    assert "remote image blocked" not in browser.text

    browser.driver.switch_to.frame(browser.find("iframe.mail"))
    try:
        image = browser.find("img")
        src = image.get_attribute("src") or ""
        assert src.startswith(browser.live.url + "/img/"), src
        browser.wait(
            lambda: browser.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image),
            what="the image to load through the proxy",
        )
        fetched = frame_resources(browser)
    finally:
        browser.driver.switch_to.default_content()

    assert fetched == [src], "the frame loaded something other than the proxied image"
    # the sandboxed frame may run in a process of its own, outside the page's performance log:
    # the leak server's own log is the witness of who contacted the sender's server
    assert [u for u in browser.requests() if u.startswith(leak.origin)] == []
    hits = leak.hits()
    assert [h.path for h in hits] == [scenario.image_path]
    assert all(h.user_agent == "Postroom image proxy" for h in hits), hits


def test_the_thread_shows_the_whole_conversation(browser: Browser, scenario: Scenario) -> None:
    browser.sign_in(scenario.who)
    _open_applicant(browser, scenario)
    browser.find("ol.timeline > li .thread-link").click()
    browser.wait(lambda: browser.path.startswith("/threads/"), what="the thread page")
    assert browser.find("h1").text == SUBJECT
    subjects = [a.text for a in browser.find_all("ol.timeline > li .subject a")]
    assert subjects == [SUBJECT, f"Re: {SUBJECT}", f"Re: {SUBJECT}"]
    assert "3 messages, oldest first" in browser.text
    assert page_errors(browser.console()) == []
