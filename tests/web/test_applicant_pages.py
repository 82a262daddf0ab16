"""The applicant, timeline, thread and message pages as a signed-in recruiter uses them (Flask's
test client, real sign-in), over the scenario of tests/services/scenario.py synced from Dovecot,
on SQLite and PostgreSQL: list, search, add and edit applicants; a timeline with its threads and
tracking; mail HTML only inside a sandboxed frame, with no script and no remote image until
"Show images"; attachments that download as attachments; another organisation's ids answer 404."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from selectolax.parser import HTMLParser
from sqlalchemy import select

from postroom.bounces import Bounce, BouncedRecipient
from postroom.models import Applicant, Email
from services.applicants import add_applicant
from services.orgs import add_org
from sync.inbound_routing import record_bounce
from tests.services.scenario import ANN, ANN_WORK, PDF, build
from tests.services.test_timeline import seed_busy_applicant
from tests.web.signin import csrf_token, signed_in
from web import create_app


@pytest.fixture
def world(config, sessions, new_mailbox):  # type: ignore[no-untyped-def]
    scenario = build(config, sessions, new_mailbox)
    app = create_app(config)
    with sessions() as s:
        emails = dict(s.execute(select(Email.message_id, Email.id)).tuples().all())
        thread_id = s.scalar(select(Email.thread_id).where(Email.message_id == scenario.ids["apply"]))
    email = {name: emails[mid] for name, mid in scenario.ids.items()}
    return app, scenario, email, thread_id


def _page(client: FlaskClient, url: str, status: int = 200) -> str:
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code, resp.headers.get("Location"))
    return resp.get_data(as_text=True)


def _post(client: FlaskClient, url: str, data: dict[str, str], page: str) -> tuple[int, str, str]:
    resp = client.post(url, data={"csrf_token": csrf_token(page), **data})
    return resp.status_code, resp.headers.get("Location", ""), resp.get_data(as_text=True)


def test_list_search_add_and_edit_applicants(world) -> None:  # type: ignore[no-untyped-def]
    app, scenario, _, _ = world
    client = signed_in(app)
    page = _page(client, "/applicants")
    assert "Ann Applicant" in page and ANN in page and "Add an applicant" in page
    assert "Ann Applicant" in _page(client, "/applicants?q=ANN%40example")
    assert "No applicant matches" in _page(client, "/applicants?q=zzz")

    status, location, _ = _post(client, "/applicants", {"name": "Bea Bright", "addresses": "bea@example.org\n"}, page)
    assert status == 302
    bea = _page(client, urlsplit(location).path)
    assert "Bea Bright added" in bea and "No messages with Bea Bright yet" in bea  # the empty state says what next
    assert "add the other addresses they write from" in bea

    status, _, refused = _post(client, "/applicants", {"name": "Copycat", "addresses": f"x@y.example\n{ANN}"}, page)
    assert status == 400
    error = HTMLParser(refused).css_first("textarea[name=addresses] + .field-error")
    assert error is not None and "already belongs to applicant 'Ann Applicant'" in error.text()
    assert "Copycat" in refused  # what was typed is kept
    assert client.post("/applicants", data={"name": "No token", "addresses": "n@t.example"}).status_code == 400

    edit_url = f"/applicants/{scenario.applicant_id}/edit"
    form = _page(client, edit_url)
    status, location, _ = _post(client, edit_url, {"name": "Ann Applicant", "addresses": f"{ANN}\n{ANN_WORK}"}, form)
    assert status == 302 and urlsplit(location).path == f"/applicants/{scenario.applicant_id}"
    timeline = _page(client, location)
    assert "From my work address" in timeline  # the new address brought its message in
    status, _, refused = _post(client, edit_url, {"name": "", "addresses": ANN}, form)
    assert status == 400 and "An applicant needs a name." in refused


def test_the_list_pages_through_many_applicants(world, sessions) -> None:  # type: ignore[no-untyped-def]
    app = world[0]
    with sessions.begin() as s:
        for i in range(30):
            add_applicant(s, f"Zz Applicant {i:02d}", [f"zz{i}@many.example"])
    client = signed_in(app)
    first = _page(client, "/applicants?q=zz")
    assert "1–25 of 30" in first and "Zz Applicant 24" in first and "Zz Applicant 25" not in first
    link = HTMLParser(first).css_first("a[rel=next]")
    assert link is not None
    second = _page(client, link.attributes["href"] or "")
    assert "26–30 of 30" in second and "Zz Applicant 29" in second and "Zz Applicant 00" not in second


def test_a_long_timeline_opens_at_its_newest_page_and_pages_back(world, sessions) -> None:  # type: ignore[no-untyped-def]
    org, applicant_id = seed_busy_applicant(sessions, 250)
    client = signed_in(world[0], "busy@big.example", org_id=org)
    newest = _page(client, f"/applicants/{applicant_id}")
    items = HTMLParser(newest).css("ol.timeline > li")
    assert len(items) == 100 and "messages 151–250 of 250" in newest
    link = HTMLParser(newest).css_first(".timeline-nav a")
    assert link is not None and link.text(strip=True) == "Earlier messages"
    earlier = _page(client, link.attributes["href"] or "")
    assert "messages 51–150 of 250" in earlier and "Later messages" in earlier
    first_ids = {li.attributes["id"] for li in items}
    assert not first_ids & {li.attributes["id"] for li in HTMLParser(earlier).css("ol.timeline > li")}
    oldest = _page(client, f"/applicants/{applicant_id}?start=0")
    assert "Earlier messages" not in oldest and len(HTMLParser(oldest).css("ol.timeline > li")) == 100


def test_the_timeline_shows_each_message_once_with_thread_and_tracking(world) -> None:  # type: ignore[no-untyped-def]
    app, scenario, email, thread_id = world
    client = signed_in(app)
    page = _page(client, f"/applicants/{scenario.applicant_id}")
    tree = HTMLParser(page)
    items = tree.css("ol.timeline > li")
    assert [li.attributes["id"] for li in items] == [f"m{email[n]}" for n in ("apply", "answer", "reply")]
    assert [li.attributes["class"] for li in items] == ["in", "out", "in"]
    assert all(li.css_first("a.thread-link").attributes["href"] == f"/threads/{thread_id}" for li in items)
    assert "with attachment" in items[0].text() and "with attachment" not in items[1].text()
    assert "please find my CV attached" in items[0].text()
    assert scenario.rita.address in items[0].text() and scenario.sam.address in items[0].text()
    badges = {b.text() for b in items[1].css(".tracking .state")}
    assert badges == {"replied", "clicked", "sent", "bounced"}
    assert "3 by machines (not counted)" in items[1].text()
    assert items[2].css_first(".tracking") is None
    assert scenario.ids["other"] not in page


def test_a_bounce_read_by_the_processing_mailbox_shows_its_code(world, sessions) -> None:  # type: ignore[no-untyped-def]
    app, scenario, email, _thread_id = world
    with sessions.begin() as s:
        org = s.scalar(select(Applicant.org_id).where(Applicant.id == scenario.applicant_id))
        failed = BouncedRecipient("dave@example.org", "failed", "5.1.1", "550 5.1.1 <dave> User unknown", True)
        assert record_bounce(s, org, Bounce(scenario.ids["answer"], (failed,), None), datetime.now(UTC))
    page = _page(signed_in(app), f"/applicants/{scenario.applicant_id}")
    item = HTMLParser(page).css_first(f"#m{email['answer']}")
    (dave,) = [li for li in item.css(".tracking li") if "dave@example.org" in li.text()]
    assert dave.css_first(".state").text() == "bounced (5.1.1)"
    assert "— 550 5.1.1 <dave> User unknown" in dave.text()  # the reason, escaped on the page
    assert "&lt;dave&gt;" in page


def test_the_thread_page_lists_its_messages_oldest_first(world) -> None:  # type: ignore[no-untyped-def]
    app, scenario, email, thread_id = world
    page = _page(signed_in(app), f"/threads/{thread_id}")
    links = [a.attributes["href"] for a in HTMLParser(page).css("ol.timeline .subject a")]
    assert links == [f"/messages/{email[n]}" for n in ("apply", "answer", "reply")]
    assert f'href="/applicants/{scenario.applicant_id}"' in page and "Ann Applicant" in page


def test_mail_html_is_sandboxed_and_images_wait_for_the_reader(world) -> None:  # type: ignore[no-untyped-def]
    app, _, email, _ = world
    client = signed_in(app)
    resp = client.get(f"/messages/{email['reply']}")
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self' 'unsafe-inline'" in csp
    page = resp.get_data(as_text=True)
    frame = HTMLParser(page).css_first("iframe.mail")
    assert frame is not None
    sandbox = (frame.attributes["sandbox"] or "").split()
    assert "allow-scripts" not in sandbox and "allow-same-origin" not in sandbox and "allow-forms" not in sandbox
    srcdoc = frame.attributes["srcdoc"] or ""
    assert "Tuesday <b>works</b> for me." in srcdoc
    assert "img-src 'none'" in srcdoc and "script-src 'none'" in srcdoc
    for bad in ("<script", "onclick", "steal()", "alert(", "javascript:", "tracker.example"):
        assert bad not in srcdoc
    for bad in ("onclick", "steal()", "alert(", "javascript:", "tracker.example"):
        assert bad not in page
    assert page.count("<script") == 1 and '<script src="/static/htmx.min.js"' in page  # the page's own only
    assert "<b>works</b>" not in page  # the mail is only in the frame's attribute, escaped
    show = HTMLParser(page).css_first("a[href$='images=1']")
    assert show is not None and "Show images" in show.text()

    shown = HTMLParser(_page(client, show.attributes["href"] or "")).css_first("iframe.mail").attributes["srcdoc"]
    assert shown is not None and "img-src http://localhost/img/;" in shown
    src = re.search(r'<img src="([^"]+)"', shown)
    assert src is not None and src.group(1).startswith("/img/") and "tracker.example" in src.group(1)


def test_plain_text_and_attachments(world) -> None:  # type: ignore[no-untyped-def]
    app, _, email, _ = world
    client = signed_in(app)
    resp = client.get(f"/messages/{email['apply']}")
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]  # no mail HTML, no widening
    tree = HTMLParser(resp.get_data(as_text=True))
    assert tree.css_first("iframe") is None
    assert "please find my CV attached" in tree.css_first(".mail-text pre.plain-text").text()
    link = tree.css_first(".attachments a")
    assert link is not None and link.text() == "Ann CV 2026.pdf"
    download = client.get(link.attributes["href"] or "")
    assert download.status_code == 200 and download.data == PDF
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''Ann%20CV%202026.pdf" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/messages/{email['apply']}/attachments/5").status_code == 404


def test_another_organisations_pages_answer_404(world, sessions) -> None:  # type: ignore[no-untyped-def]
    app, scenario, email, thread_id = world
    with sessions.begin() as s:
        other = add_org(s, "Other Ltd").id
    client: FlaskClient = signed_in(app, "mallory@other.test", org_id=other)
    assert "Ann Applicant" not in _page(client, "/applicants?q=ann")
    own = _page(client, "/applicants")
    for url in (
        f"/applicants/{scenario.applicant_id}",
        f"/applicants/{scenario.applicant_id}/edit",
        f"/threads/{thread_id}",
        f"/messages/{email['apply']}",
        f"/messages/{email['apply']}?images=1",
        f"/messages/{email['apply']}/attachments/0",
        "/applicants/999999",
        "/messages/999999",
        "/threads/999999",
    ):
        assert _page(client, url, 404)
    status, _, _ = _post(client, f"/applicants/{scenario.applicant_id}/edit", {"name": "Mine", "addresses": ANN}, own)
    assert status == 404
    assert "Ann Applicant" in _page(signed_in(app), f"/applicants/{scenario.applicant_id}")  # unchanged
