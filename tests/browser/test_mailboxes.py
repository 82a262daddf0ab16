"""The mailboxes page in a real Chromium while an initial sync runs: its progress (messages indexed
of those found, folders done) updates live, by htmx polling under the page's strict CSP, without
a reload, and the progress goes away once the sync is done.

The sync's progress is what the engine writes on the folder rows as it works (see
:mod:`services.progress`); the test writes those numbers itself, step by step, because a real
initial sync of the rig's mailboxes is over before a person (or a test) could watch it."""

from __future__ import annotations

from sqlalchemy import update

from postroom.models import Folder, MailAccount, utcnow
from postroom.states import FolderState
from tests.browser.conftest import Browser, page_errors
from tests.rig.fixtures import Mailbox


def _progress(browser: Browser) -> str:
    shown = browser.find_all(".sync-progress")
    return shown[0].text if shown else ""


def _folder(browser: Browser, account_id: int, name: str, **values: object) -> None:
    """What the engine records on a folder after a batch."""
    with browser.live.sessions.begin() as s:
        s.execute(update(Folder).where(Folder.account_id == account_id, Folder.name == name).values(**values))


def test_an_initial_syncs_progress_updates_live_and_goes_when_done(browser: Browser, mailbox: Mailbox) -> None:
    live = browser.live
    who = live.new_user()
    account_id = live.connect(mailbox, who.org_id)
    initial, done = FolderState.INITIAL.value, FolderState.INCREMENTAL.value
    with live.sessions.begin() as s:
        s.add(Folder(account_id=account_id, name="INBOX", state=initial, messages_found=12000, messages_indexed=1500))
        s.add(Folder(account_id=account_id, name="Archive", state=initial))  # not listed yet

    browser.sign_in(who)
    browser.open("/mailboxes")
    assert "Initial sync: 1,500 of 12,000 messages, 0 of 2 folders" in _progress(browser)
    bar = browser.find(".sync-progress progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("1500", "12000")
    browser.driver.execute_script("window.__same_page = true")  # gone if the page reloads

    _folder(browser, account_id, "INBOX", messages_indexed=12000, state=done)
    _folder(browser, account_id, "Archive", messages_found=800, messages_indexed=200)
    browser.wait(
        lambda: "Initial sync: 12,200 of 12,800 messages, 1 of 2 folders" in _progress(browser),
        timeout=8,
        what="the progress to update by itself",
    )
    assert browser.driver.execute_script("return window.__same_page === true"), "the page was reloaded"

    _folder(browser, account_id, "Archive", messages_indexed=800, state=done)
    with live.sessions.begin() as s:
        s.execute(update(MailAccount).where(MailAccount.id == account_id).values(last_success_at=utcnow()))
    browser.wait(lambda: not browser.find_all(".sync-progress"), timeout=8, what="the progress to go")
    assert browser.driver.execute_script("return window.__same_page === true")
    assert "never" not in browser.find("tr.mailbox").text
    assert page_errors(browser.console()) == []
