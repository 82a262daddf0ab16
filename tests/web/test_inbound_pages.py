"""The ``/inbound`` page as signed-in users use it (Flask's test client, real sign-in and CSRF,
the real loop taking mail from the rig's Dovecot): an admin designates a mailbox from the form;
it is run, its items read — filtered, paged, routed to the applicant, with data, text and
attachments — where everything that came in a message is shown escaped; a recruiter retries a
failed item, runs and reads, but sees no designate form and is refused (403) designating;
another organisation sees none of it. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from services.applicants import add_applicant
from services.inbound import run_once
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect
from tests.web.inbound_helpers import inbound_message, strict_config
from tests.web.page_helpers import Browser, field_errors, flashes, other_org
from tests.web.signin import signed_in
from web import create_app

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _designate(page: Browser, account_id: int, **form: str) -> str:
    resp = page.post("/inbound", {"account": str(account_id), **form})
    return page.follow(resp)


def _admin_and_recruiter(config: Config) -> tuple[Browser, Browser]:
    """An admin's and a recruiter's browsers, of the default organisation, on one app."""
    app = create_app(config)
    admin = Browser(app, signed_in(app, "boss@example.test", role="admin"))
    return admin, Browser(app, signed_in(app, "recruiter@example.test"))


def _items(raw: str) -> list[str]:
    """The ids of the items on the page, in order."""
    return re.findall(r'data-inbound-item="(\d+)"', raw)


def test_designate_run_and_read_hostile_mail_escaped(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    page, _ = _admin_and_recruiter(config)
    with page.sessions.begin() as s:
        applicant, _ = add_applicant(s, "Ann Applicant", ["ann@example.org"])
        applicant_id = applicant.id
    account_id = connect(config, sessions, mailbox)
    first = page.text("/inbound")
    assert "No processing mailbox yet" in first and "Nothing taken yet" in first
    assert f'<option value="{account_id}">{mailbox.address} (imap)</option>' in first
    assert 'href="/inbound"' in page.text("/") and ">Processing</a>" in page.text("/")  # the nav link

    # CSRF is required; a mistake is named next to its field, what was typed kept
    assert page.client.post("/inbound", data={"account": str(account_id)}).status_code == 400
    refused = page.post("/inbound", {"account": str(account_id), "processed": "INBOX"})
    assert refused.status_code == 400
    assert field_errors(refused.get_data(as_text=True)) == [
        "Source folder, Processed folder and Failed folder must be three different folders."
    ]
    assert page.post("/inbound", {"account": ""}).status_code == 400
    shown = _designate(page, account_id, failed="Broken", move="copy-delete")
    assert flashes(shown)[0][0] == "ok" and "Processing mailbox" in flashes(shown)[0][1]
    assert "INBOX → processed / Broken" in shown and "copy-delete" in shown and "never" in shown
    assert f'<option value="{account_id}"' not in shown  # designated: no longer offered

    mailbox.append(
        inbound_message(
            "<hostile@example.org>",
            f'"{HOSTILE}": "<img src=x onerror=alert(2)>"\nrole: {HOSTILE}\n---\nHello {HOSTILE} <b>bold</b>',
            subject=f"Apply {HOSTILE}",
            sender=f'"{HOSTILE}" <ann@example.org>',
            attachment=("cv <b>.pdf", b"%PDF-1.4 cv"),
        )
    )
    mailbox.append(inbound_message("<bad@agency.example>", "x", subject="Broken data", json_part="{not json"))
    done = page.follow(page.post("/inbound/run", {}))
    assert flashes(done) == [("ok", "Run done: 1 processed, 1 failed.")]
    assert mailbox.uids("INBOX") == [] and len(mailbox.uids("Broken")) == 1

    raw = page.get("/inbound").get_data(as_text=True)
    assert "<script>alert" not in raw and "<img src=x" not in raw and "<b>bold" not in raw
    assert f"Apply {ESCAPED}" in raw  # subject
    assert f"Hello {ESCAPED} &lt;b&gt;bold&lt;/b&gt;" in raw  # text, as text
    # data: keys are normalised by the parser; the values come as they were sent
    assert '<tr><th scope="row">script_alert_1_script</th><td>&lt;img src=x onerror=alert(2)&gt;</td></tr>' in raw
    assert f'<tr><th scope="row">role</th><td>{ESCAPED}</td></tr>' in raw
    assert f'href="/applicants/{applicant_id}">applicant {applicant_id}</a>' in raw  # routed by the sender
    ((att, name),) = re.findall(r'href="/inbound/attachments/(\d+)" download>([^<]*)</a>', raw)
    assert name == "cv _b_.pdf"  # the name made safe by the parser
    download = page.get(f"/inbound/attachments/{att}")
    assert download.status_code == 200 and download.data == b"%PDF-1.4 cv"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    text = page.text("/inbound")
    assert "Broken data" in text and "json" in text.lower()

    failed = page.text("/inbound?status=failed")
    assert "Broken data" in failed and "Apply" not in failed and len(_items(failed)) == 1
    assert "Retry" in failed
    processed = page.text("/inbound?status=processed")
    assert "Apply" in processed and "Broken data" not in processed and "Retry" not in processed
    assert page.get("/inbound?status=lost").status_code == 404

    # the failed item, retried unchanged, fails again and says why
    (bad_id,) = _items(failed)
    again = page.follow(page.post(f"/inbound/items/{bad_id}/retry", {"back": "failed"}))
    ((kind, sentence),) = flashes(again)
    assert kind == "error" and sentence.startswith(f"Item {bad_id} failed again:") and "json" in sentence.lower()

    # another organisation sees none of it and cannot act on it
    eve = other_org(page.app)
    theirs = eve.get("/inbound").get_data(as_text=True)
    assert "Apply" not in theirs and mailbox.address not in theirs and "No processing mailbox yet" in theirs
    assert eve.post(f"/inbound/items/{bad_id}/retry", {}).status_code == 404
    assert eve.get(f"/inbound/attachments/{att}").status_code == 404
    assert flashes(eve.follow(eve.post("/inbound/run", {}))) == [("ok", "Run done: 0 processed, 0 failed.")]
    page.app.extensions["postroom"]["hits"].close()


def test_a_failed_item_retried_after_the_fix_is_processed_and_the_list_pages(
    env: dict[str, str], tmp_path: Path, config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    boss, page = _admin_and_recruiter(config)
    account_id = connect(config, sessions, mailbox)
    _designate(boss, account_id)  # the rest is a recruiter's
    for n in range(26):
        mailbox.append(inbound_message(f"<n{n}@example.org>", f"Name: Person {n}", subject=f"Note {n:02d}"))
    mailbox.append(inbound_message("<big@example.org>", "Name: Big\n---\n" + "lorem ipsum " * 400, subject="Big one"))
    result = run_once(strict_config(env, tmp_path), sessions)  # the worker, under a lower size limit then
    assert (result.processed, result.failed) == (26, 1)

    newest = page.text("/inbound")
    assert len(_items(newest)) == 25 and "1–25 of 27" in newest and "Older" in newest
    older = page.text("/inbound?offset=25")
    assert len(_items(older)) == 2 and "26–27 of 27" in older and "Newer" in older
    assert not set(_items(newest)) & set(_items(older))
    assert sorted(_items(newest) + _items(older), key=int, reverse=True) == _items(newest) + _items(older)
    assert all(f"Note {n:02d}" in newest + older for n in range(26))

    failed = page.text("/inbound?status=failed")
    (big_id,) = _items(failed)
    assert "max_message_size" in failed and "<big@example.org>" in failed  # never fetched: known by its Message-ID
    done = page.follow(page.post(f"/inbound/items/{big_id}/retry", {"back": "failed"}))  # the app has the raised limit
    assert flashes(done) == [("ok", f"Item {big_id} is processed now.")]
    assert "No failed items" in done
    assert mailbox.uids("failed") == [] and len(mailbox.uids("processed")) == 27
    page.app.extensions["postroom"]["hits"].close()


def test_a_recruiter_sees_no_designate_form_and_may_not_designate(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    boss, page = _admin_and_recruiter(config)
    account_id = connect(config, sessions, mailbox)
    mailbox.append(inbound_message("<stays@example.org>", "Name: Stays"))
    raw = page.get("/inbound").get_data(as_text=True)
    assert 'id="designate"' not in raw and f'<option value="{account_id}"' not in raw
    assert "An admin of your organisation designates processing mailboxes." in raw
    assert page.post("/inbound", {"account": str(account_id)}).status_code == 403
    assert flashes(page.follow(page.post("/inbound/run", {}))) == [("ok", "Run done: 0 processed, 0 failed.")]
    assert "No processing mailbox yet" in page.text("/inbound")  # nothing designated
    assert len(mailbox.uids("INBOX")) == 1  # nor taken

    admin_page = boss.get("/inbound").get_data(as_text=True)  # the control: an admin has the form
    assert 'id="designate"' in admin_page and f'<option value="{account_id}"' in admin_page
    assert "An admin of your organisation designates" not in admin_page
    shown = _designate(boss, account_id)
    assert "INBOX → processed / failed" in shown
    assert "INBOX → processed / failed" in page.text("/inbound")  # the recruiter sees it designated
    boss.app.extensions["postroom"]["hits"].close()
