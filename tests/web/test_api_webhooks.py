"""``/api/v1/webhooks`` as an integrating system uses it, through the real app and a bearer token,
on SQLite and PostgreSQL: subscribe (the secret once), list, read, rotate (the new secret signs a
real delivery beside the old one), delete, the paged delivery log; a recruiter's token may read
but not change; another organisation's ids answer exactly like missing ones; wrong input is one
JSON error naming its field."""

from __future__ import annotations

import dataclasses
import time

import pytest
from flask import Flask

from postroom.config import Config, WebhooksConfig
from postroom.webhook_signing import verify
from services.webhooks import deliver_due, emit
from tests.services.test_webhooks import Receiver
from tests.web.api_client import MISSING, ApiClient, api_client, assert_error, assert_same_404, new_org
from web import create_app

HOOK = "https://hooks.example.com/postroom"


@pytest.fixture
def app(config: Config) -> Flask:
    allowed = dataclasses.replace(config, webhooks=WebhooksConfig(allow_private=True, timeout=5.0))
    return create_app(allowed)


@pytest.fixture
def admin(app: Flask) -> ApiClient:
    return api_client(app, "admin@example.test", role="admin")


@pytest.fixture
def recruiter(app: Flask, admin: ApiClient) -> ApiClient:
    return api_client(app, "recruiter@example.test", admin.org_id)


def _subscribe(api: ApiClient, url: str = HOOK, events: tuple[str, ...] = ("message.opened",)) -> dict[str, object]:
    body = api.ok("POST", "/api/v1/webhooks", 201, json={"url": url, "events": list(events)})
    assert set(body) == {"id", "secret"} and str(body["secret"]).startswith("whsec_")
    return dict(body)


def test_subscribe_then_list_and_read_without_the_secret(admin: ApiClient) -> None:
    created = _subscribe(admin, events=("message.opened", "message.bounced"))
    page = admin.ok("GET", "/api/v1/webhooks")
    assert page["total"] == 1 and page["offset"] == 0
    [sub] = page["items"]
    assert sub["id"] == created["id"] and sub["url"] == HOOK
    assert sub["events"] == ["message.opened", "message.bounced"]
    assert sub["active"] is True and sub["disabled_reason"] is None and sub["rotating_until"] is None
    assert admin.ok("GET", f"/api/v1/webhooks/{created['id']}") == sub
    assert str(created["secret"]) not in admin.get("/api/v1/webhooks").get_data(as_text=True)


def test_wrong_input_is_one_error_naming_its_field(admin: ApiClient) -> None:
    assert "https" in assert_error(
        admin.post("/api/v1/webhooks", json={"url": "ftp://x.example/", "events": ["message.opened"]}), 400, "url"
    )
    assert "private or loopback" not in assert_error(
        admin.post("/api/v1/webhooks", json={"url": "http://hooks.example.com/", "events": ["message.opened"]}),
        400,
        "url",
    )
    assert_error(admin.post("/api/v1/webhooks", json={"url": HOOK, "events": ["message.eaten"]}), 422, "events.0")
    assert_error(admin.post("/api/v1/webhooks", json={"url": HOOK, "events": []}), 422, "events")
    assert_error(admin.post("/api/v1/webhooks", json={"events": ["message.opened"]}), 422, "url")
    assert_error(admin.get("/api/v1/webhooks/deliveries?limit=0"), 422, "limit")
    assert admin.ok("GET", "/api/v1/webhooks")["total"] == 0


def test_a_recruiters_token_reads_but_does_not_change(admin: ApiClient, recruiter: ApiClient) -> None:
    sub = _subscribe(admin)
    assert recruiter.ok("GET", "/api/v1/webhooks")["total"] == 1
    assert "admin" in assert_error(
        recruiter.post("/api/v1/webhooks", json={"url": HOOK, "events": ["message.opened"]}), 403
    )
    assert_error(recruiter.post(f"/api/v1/webhooks/{sub['id']}/rotate"), 403)
    assert_error(recruiter.delete(f"/api/v1/webhooks/{sub['id']}"), 403)
    assert admin.ok("GET", "/api/v1/webhooks")["total"] == 1


def test_another_organisations_ids_answer_like_missing_ones(app: Flask, admin: ApiClient) -> None:
    sub = _subscribe(admin)
    other = api_client(app, "admin@other.example", new_org(app), role="admin")
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/rotate")):
        mine = other.call(method, f"/api/v1/webhooks/{sub['id']}{suffix}")
        missing = other.call(method, f"/api/v1/webhooks/{MISSING}{suffix}")
        assert_same_404(mine, missing, str(sub["id"]))
    assert other.ok("GET", "/api/v1/webhooks")["total"] == 0
    assert admin.ok("GET", f"/api/v1/webhooks/{sub['id']}")["active"] is True


def test_rotate_signs_with_both_then_delete_stops_deliveries(app: Flask, admin: ApiClient) -> None:
    receiver = Receiver()
    try:
        sub = _subscribe(admin, receiver.url)
        rotated = admin.ok("POST", f"/api/v1/webhooks/{sub['id']}/rotate")
        assert set(rotated) == {"secret"} and rotated["secret"] != sub["secret"]
        assert admin.ok("GET", f"/api/v1/webhooks/{sub['id']}")["rotating_until"] is not None
        receiver.secrets = [rotated["secret"]]
        sessions, config = app.extensions["postroom"]["sessions"], app.extensions["postroom"]["config"]
        with sessions.begin() as s:
            emit(s, admin.org_id, "message.opened", {"recipient_id": 7})
        assert deliver_due(sessions, config) == 1
        heads, body = receiver.received[0]
        verify(str(sub["secret"]), heads, body, now=time.time())  # the old one still signs, for now
        assert receiver.bad_signatures == []
        log = admin.ok("GET", "/api/v1/webhooks/deliveries")
        assert log["total"] == 1
        [entry] = log["items"]
        assert entry["status"] == "delivered" and entry["event"] == "message.opened"
        assert entry["last_status_code"] == 200 and entry["attempts"] == 1 and entry["msg_id"] == heads["webhook-id"]

        assert admin.delete(f"/api/v1/webhooks/{sub['id']}").status_code == 204
        with sessions.begin() as s:
            assert emit(s, admin.org_id, "message.opened", {"recipient_id": 8}) == 0
        assert admin.ok("GET", "/api/v1/webhooks")["total"] == 0
        assert admin.ok("GET", "/api/v1/webhooks/deliveries")["total"] == 0
        assert_error(admin.get(f"/api/v1/webhooks/{sub['id']}"), 404)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_the_delivery_log_pages(app: Flask, admin: ApiClient) -> None:
    _subscribe(admin)
    with app.extensions["postroom"]["sessions"].begin() as s:
        for n in range(3):
            emit(s, admin.org_id, "message.opened", {"n": n})
    first = admin.ok("GET", "/api/v1/webhooks/deliveries?limit=2")
    rest = admin.ok("GET", "/api/v1/webhooks/deliveries?limit=2&offset=2")
    assert first["total"] == rest["total"] == 3 and len(first["items"]) == 2 and len(rest["items"]) == 1
    ids = [d["id"] for d in first["items"] + rest["items"]]
    assert len(set(ids)) == 3 and all(d["status"] == "pending" for d in first["items"])
