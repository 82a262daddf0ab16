"""The webhooks page through Flask's client (SQLite and PostgreSQL): an admin subscribes a URL
to events and sees its secret once (never again on any page), rotates it (a new secret, the
old one signing for a while), deletes it; mistakes are shown next to their field; the delivery
log shows each delivery's answer; a recruiter sees the page without its forms and is refused
the actions; another organisation's subscription is not found."""

from __future__ import annotations

import re

from sqlalchemy import select

from postroom.config import Config
from postroom.models import WebhookDelivery, WebhookSubscription, utcnow
from services.webhooks import emit
from tests.web.page_helpers import Browser, browser, field_errors, flashes, other_org, page_text
from tests.web.signin import signed_in

HOOK = "https://hooks.example.com/postroom"
SECRET = re.compile(r'<pre class="mail-text secret" id="webhook-secret">(whsec_[A-Za-z0-9+/=]+)</pre>')


def admin(config: Config) -> Browser:
    """An admin's browser (``browser`` signs in a recruiter)."""
    b = browser(config)
    return Browser(b.app, signed_in(b.app, "boss@example.test", role="admin"))


def _org(b: Browser, sub_id: int) -> int:
    with b.sessions() as s:
        return s.get_one(WebhookSubscription, sub_id).org_id


def subscribe(b: Browser, url: str = HOOK, events: tuple[str, ...] = ("message.opened",)) -> tuple[int, str]:
    resp = b.post("/webhooks", {"url": url, "events": list(events)})  # type: ignore[dict-item]
    assert resp.status_code == 200, resp.get_data(as_text=True)[:1000]
    assert resp.headers["Cache-Control"] == "no-store" and resp.mimetype == "text/html"
    found = SECRET.search(resp.get_data(as_text=True))
    assert found, resp.get_data(as_text=True)
    with b.sessions() as s:
        sub_id = s.scalars(select(WebhookSubscription.id).order_by(WebhookSubscription.id.desc())).first()
    assert sub_id is not None
    return sub_id, found.group(1)


def test_an_admin_subscribes_and_sees_the_secret_once(config: Config) -> None:
    b = admin(config)
    empty = b.text("/webhooks")
    assert "No subscriptions yet" in empty and "No deliveries yet" in empty
    _, secret = subscribe(b, events=("message.opened", "message.bounced"))
    page = b.text("/webhooks")
    assert HOOK in page and "message.opened, message.bounced" in page and "active" in page
    assert secret not in page  # shown once, on the answer to the form only
    assert 'href="/webhooks"' in b.get("/").get_data(as_text=True)  # the nav link


def test_mistakes_are_shown_next_to_their_field(config: Config) -> None:
    b = admin(config)
    resp = b.post("/webhooks", {"url": "ftp://nope.example/", "events": "message.opened"})
    assert resp.status_code == 400
    errors = field_errors(resp.get_data(as_text=True))
    assert len(errors) == 1 and errors[0].startswith("URL must be an https URL")
    assert 'value="ftp://nope.example/"' in resp.get_data(as_text=True)  # what was typed stays
    resp = b.post("/webhooks", {"url": HOOK})
    assert resp.status_code == 400
    assert field_errors(resp.get_data(as_text=True))[0].startswith("Events must name at least one of")
    with b.sessions() as s:
        assert s.scalars(select(WebhookSubscription)).all() == []


def test_rotate_shows_a_new_secret_and_delete_removes(config: Config) -> None:
    b = admin(config)
    sub_id, first = subscribe(b)
    resp = b.post(f"/webhooks/{sub_id}/rotate", {})
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    found = SECRET.search(resp.get_data(as_text=True))
    assert found and found.group(1) != first
    assert "with the previous one too" in page_text(resp)
    assert "previous secret signs too until" in b.text("/webhooks")
    page = b.follow(b.post(f"/webhooks/{sub_id}/delete", {}))
    assert flashes(page) == [("ok", f"The subscription of {HOOK} is deleted; nothing more is sent to it.")]
    assert "No subscriptions yet" in page


def test_the_delivery_log_shows_each_delivery(config: Config) -> None:
    b = admin(config)
    sub_id, _ = subscribe(b)
    with b.sessions.begin() as s:
        emit(s, _org(b, sub_id), "message.opened", {"n": 1})
    with b.sessions.begin() as s:
        d = s.scalars(select(WebhookDelivery)).one()
        d.status, d.attempts, d.last_status_code = "failed", 2, 503
        d.last_error, d.next_attempt_at = "HTTP 503: try later", utcnow()
    page = b.text("/webhooks")
    log = page[page.index("Delivery log") :]
    assert "message.opened" in log and "failed" in log and "HTTP 503" in log and "try later" in log


def test_a_recruiter_sees_the_page_but_not_its_forms(config: Config) -> None:
    boss = admin(config)
    sub_id, _ = subscribe(boss)
    recruiter = Browser(boss.app, signed_in(boss.app, "recruiter@example.test"))
    page = recruiter.text("/webhooks")
    assert HOOK in page and "Rotate secret" not in page and "Subscribe" not in page
    assert recruiter.post("/webhooks", {"url": HOOK, "events": "message.opened"}).status_code == 403
    assert recruiter.post(f"/webhooks/{sub_id}/rotate", {}).status_code == 403
    assert recruiter.post(f"/webhooks/{sub_id}/delete", {}).status_code == 403
    with boss.sessions() as s:
        assert len(s.scalars(select(WebhookSubscription)).all()) == 1


def test_another_organisations_subscription_is_not_found(config: Config) -> None:
    b = admin(config)
    sub_id, _ = subscribe(b)
    eve = other_org(b.app)
    assert HOOK not in eve.text("/webhooks")
    assert eve.post(f"/webhooks/{sub_id}/rotate", {}).status_code == 404
    assert eve.post(f"/webhooks/{sub_id}/delete", {}).status_code == 404
    assert HOOK in b.text("/webhooks")
