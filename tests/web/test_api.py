"""The JSON API as an integrating hiring system uses it, through the real app (``create_app``)
and Flask's test client with a bearer token, on SQLite and PostgreSQL: who may call it (a
token, never a browser's cookie), the one error shape, pagination, and each resource's
endpoints — with another organisation's ids answering exactly like ids that do not exist.

Mail that must be synced or sent (threads, messages, timelines, sends, retries, tracking) is
in ``test_api_mail.py``; the OpenAPI document in ``test_api_openapi.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from postroom.config import Config
from postroom.models import ApiToken, MailAccount, User
from tests.web.api_client import MISSING, ApiClient, api_client, assert_error, assert_same_404, imap_body
from tests.web.signin import signed_in
from web import create_app


@pytest.fixture
def app(config: Config) -> Flask:
    return create_app(config)


def api_routes(app: Flask) -> Iterator[tuple[str, str]]:
    """(method, url) of every API route in the URL map, ids filled in with 1."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "api-docs.openapi_json":
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                yield method, re.sub(r"<(?:\w+:)?\w+>", "1", rule.rule)


# ---------------------------------------------------------------------------- who may call it


def test_every_api_route_answers_401_json_without_a_token_and_never_redirects(app: Flask) -> None:
    client = app.test_client()
    routes = list(api_routes(app))
    assert len(routes) >= 20  # every resource is mounted
    for method, url in routes:
        response = client.open(url, method=method, json={})
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, url)
        assert "Location" not in response.headers


@pytest.mark.parametrize(
    "header",
    ["Bearer pr_not-a-token-of-anyone", "Bearer ", "Basic dXNlcjpwYXNzd29yZA==", "pr_no-scheme", "Bearer x y"],
)
def test_a_wrong_or_malformed_token_is_refused(app: Flask, api: ApiClient, header: str) -> None:
    response = app.test_client().get("/api/v1/applicants", headers={"Authorization": header})
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="postroom"')


def test_a_token_acts_as_its_user_and_records_its_use(app: Flask, api: ApiClient) -> None:
    response = api.get("/api/v1/applicants")
    assert response.status_code == 200 and response.get_json()["total"] == 0
    assert response.headers["Cache-Control"] == "no-store"  # the organisation's data stays out of caches
    with app.extensions["postroom"]["sessions"]() as s:
        assert s.scalar(select(ApiToken.last_used_at)) is not None


def test_a_deactivated_users_token_stops_working(app: Flask, api: ApiClient) -> None:
    api.ok("GET", "/api/v1/accounts")
    with app.extensions["postroom"]["sessions"].begin() as s:
        s.scalars(select(User)).one().active = False
    assert_error(api.get("/api/v1/accounts"), 401)


def test_a_signed_in_browser_session_does_not_authenticate_the_api(app: Flask) -> None:
    browser = signed_in(app)
    assert browser.get("/").status_code == 200  # signed in for the pages
    assert_error(browser.get("/api/v1/applicants"), 401)
    response = browser.post("/api/v1/applicants", json={"name": "Ann", "emails": ["ann@example.org"]})
    assert_error(response, 401)  # not a CSRF refusal: the cookie is simply not a credential here
    token = api_client(app, "recruiter@example.test")  # the same user, with a token
    assert token.ok("GET", "/api/v1/applicants")["total"] == 0


# ---------------------------------------------------------------------------- one error shape


def test_unknown_urls_wrong_methods_and_bad_bodies_answer_the_error_shape(api: ApiClient) -> None:
    assert_error(api.get("/api/v1/no-such-thing"), 404)
    assert_error(api.delete("/api/v1/applicants"), 405)
    says = assert_error(
        api.post("/api/v1/applicants", json={"name": "Ann", "emails": ["a@x.org"], "age": 3}), 422, "age"
    )
    assert says.startswith("age:")
    assert assert_error(api.post("/api/v1/applicants", json={"emails": ["a@x.org"]}), 422, "name").startswith("name:")
    assert_error(api.post("/api/v1/applicants", json={"name": "Ann", "emails": "a@x.org"}), 422, "emails")
    assert_error(api.post("/api/v1/applicants", json={"name": "Ann", "emails": [7]}), 422, "emails.0")


def test_a_body_that_is_not_json_is_refused_in_one_sentence(api: ApiClient) -> None:
    assert assert_error(api.post("/api/v1/applicants", data="{nope", content_type="application/json"), 400) == (
        "Invalid JSON body."
    )


# ---------------------------------------------------------------------------- accounts


def test_accounts_add_list_get_and_delete(app: Flask, api: ApiClient) -> None:
    assert api.ok("GET", "/api/v1/accounts") == {"items": [], "total": 0, "offset": 0, "limit": 50}
    response = api.post("/api/v1/accounts", json=imap_body("rita@example.test"))
    assert response.status_code == 201
    account_id = response.get_json()["id"]
    assert response.get_json() == {"id": account_id}
    assert response.headers["Location"] == f"/api/v1/accounts/{account_id}"

    listed = api.ok("GET", "/api/v1/accounts")
    assert listed["total"] == 1
    assert listed["items"][0] == {
        "id": account_id,
        "email": "rita@example.test",
        "provider": "imap",
        "status": "active",
        "last_sync_at": None,
        "last_success_at": None,
        "last_error": None,
    }
    health = api.ok("GET", f"/api/v1/accounts/{account_id}")
    assert health["email"] == "rita@example.test" and health["status"] == "active"
    assert health["failure_count"] == 0 and health["lag_seconds"] >= 0 and health["syncing_on"] is None
    with app.extensions["postroom"]["sessions"]() as s:  # the password is sealed, never stored as sent
        assert b"secret password" not in bytes(s.get_one(MailAccount, account_id).secret or b"")

    assert api.delete(f"/api/v1/accounts/{account_id}").status_code == 204
    assert_error(api.get(f"/api/v1/accounts/{account_id}"), 404)
    assert api.ok("GET", "/api/v1/accounts")["total"] == 0


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"imap_security": "tls"}, 422, "imap_security"),
        ({"imap_port": 0}, 400, "imap_port"),
        ({"smtp_port": 70000}, 400, "smtp_port"),
        ({"email": "not an address"}, 400, "email"),
        ({"imap_host": "imap.example.com"}, 400, "imap_security"),  # a password in clear to another host
        ({"password": None}, 422, "password"),
    ],
)
def test_adding_an_account_refuses_bad_settings_naming_the_field(
    api: ApiClient, change: dict[str, Any], status: int, field: str
) -> None:
    assert_error(api.post("/api/v1/accounts", json={**imap_body("rita@example.test"), **change}), status, field)
    assert api.ok("GET", "/api/v1/accounts")["total"] == 0


def test_the_same_mailbox_twice_is_refused(api: ApiClient) -> None:
    api.ok("POST", "/api/v1/accounts", 201, json=imap_body("rita@example.test"))
    assert "already exists" in assert_error(api.post("/api/v1/accounts", json=imap_body("rita@example.test")), 400)


def test_another_organisations_account_is_missing(api: ApiClient, other: ApiClient) -> None:
    theirs = other.ok("POST", "/api/v1/accounts", 201, json=imap_body("them@other.example"))["id"]
    assert_same_404(api.get(f"/api/v1/accounts/{theirs}"), api.get(f"/api/v1/accounts/{MISSING}"), theirs)
    assert_same_404(api.delete(f"/api/v1/accounts/{theirs}"), api.delete(f"/api/v1/accounts/{MISSING}"), theirs)
    assert api.ok("GET", "/api/v1/accounts")["total"] == 0
    assert other.ok("GET", f"/api/v1/accounts/{theirs}")["email"] == "them@other.example"  # still there


# ---------------------------------------------------------------------------- applicants


def test_applicants_add_get_update_and_timeline(api: ApiClient) -> None:
    response = api.post("/api/v1/applicants", json={"name": "Ann Lee", "emails": ["Ann.Lee@Example.org"]})
    assert response.status_code == 201 and response.get_json()["history_entries"] == 0
    ann = response.get_json()["id"]
    assert response.headers["Location"] == f"/api/v1/applicants/{ann}"
    got = api.ok("GET", f"/api/v1/applicants/{ann}")
    assert {k: got[k] for k in ("id", "name", "addresses", "messages", "last_message_at")} == {
        "id": ann,
        "name": "Ann Lee",
        "addresses": ["ann.lee@example.org"],
        "messages": 0,
        "last_message_at": None,
    }
    changed = api.ok(
        "PATCH", f"/api/v1/applicants/{ann}", json={"name": "Ann Lee-Park", "emails": ["ann.lee@example.org", "a@p.io"]}
    )
    assert changed["name"] == "Ann Lee-Park" and changed["addresses"] == ["ann.lee@example.org", "a@p.io"]
    renamed = api.ok("PATCH", f"/api/v1/applicants/{ann}", json={"name": "Ann Park"})
    assert renamed["addresses"] == changed["addresses"]  # unchanged when not given
    assert api.ok("GET", f"/api/v1/applicants/{ann}/timeline") == {"items": [], "total": 0, "offset": 0, "limit": 50}


def test_applicant_errors_name_the_request_field(api: ApiClient) -> None:
    ann = api.ok("POST", "/api/v1/applicants", 201, json={"name": "Ann", "emails": ["ann@example.org"]})["id"]
    says = assert_error(
        api.post("/api/v1/applicants", json={"name": "Bob", "emails": ["ANN@example.org"]}), 400, "emails"
    )
    assert says == "The address ann@example.org already belongs to applicant 'Ann'."
    assert_error(api.post("/api/v1/applicants", json={"name": "Bob", "emails": ["nope"]}), 400, "emails")
    assert_error(api.post("/api/v1/applicants", json={"name": "Bob", "emails": []}), 422, "emails")
    assert_error(api.post("/api/v1/applicants", json={"name": " ", "emails": ["b@x.org"]}), 400, "name")
    assert_error(api.patch(f"/api/v1/applicants/{ann}", json={"emails": ["bad"]}), 400, "emails")
    assert_error(api.patch(f"/api/v1/applicants/{ann}", json={"name": ""}), 422, "name")
    assert api.ok("GET", f"/api/v1/applicants/{ann}")["addresses"] == ["ann@example.org"]  # nothing changed


def test_applicants_paginate_and_search(api: ApiClient) -> None:
    for i in range(5):
        api.ok("POST", "/api/v1/applicants", 201, json={"name": f"Person {i}", "emails": [f"p{i}@example.org"]})
    api.ok("POST", "/api/v1/applicants", 201, json={"name": "Zoë Quist", "emails": ["zq@hire.example"]})
    page = api.ok("GET", "/api/v1/applicants?offset=2&limit=2")
    assert page["total"] == 6 and page["offset"] == 2 and page["limit"] == 2
    assert [a["name"] for a in page["items"]] == ["Person 2", "Person 3"]
    last = api.ok("GET", "/api/v1/applicants?offset=4&limit=2")
    assert [a["name"] for a in last["items"]] == ["Person 4", "Zoë Quist"]
    assert api.ok("GET", "/api/v1/applicants?offset=10")["items"] == []
    assert [a["name"] for a in api.ok("GET", "/api/v1/applicants?q=HIRE.example")["items"]] == ["Zoë Quist"]
    assert api.ok("GET", "/api/v1/applicants?q=person")["total"] == 5
    assert_error(api.get("/api/v1/applicants?limit=0"), 422, "limit")
    assert_error(api.get("/api/v1/applicants?limit=201"), 422, "limit")
    assert_error(api.get("/api/v1/applicants?offset=-1"), 422, "offset")
    assert_error(api.get("/api/v1/applicants?limit=ten"), 422, "limit")


def test_another_organisations_applicant_is_missing(api: ApiClient, other: ApiClient) -> None:
    theirs = other.ok("POST", "/api/v1/applicants", 201, json={"name": "Theirs", "emails": ["t@other.example"]})["id"]
    for method, suffix, kwargs in (
        ("GET", "", {}),
        ("PATCH", "", {"json": {"name": "Mine now"}}),
        ("GET", "/timeline", {}),
    ):
        mine = api.call(method, f"/api/v1/applicants/{theirs}{suffix}", **kwargs)
        missing = api.call(method, f"/api/v1/applicants/{MISSING}{suffix}", **kwargs)
        assert_same_404(mine, missing, theirs)
    assert api.ok("GET", "/api/v1/applicants")["total"] == 0  # and never listed
    assert other.ok("GET", f"/api/v1/applicants/{theirs}")["name"] == "Theirs"  # nor changed
    # the same address may be an applicant of each organisation
    api.ok("POST", "/api/v1/applicants", 201, json={"name": "Mine", "emails": ["t@other.example"]})


# ---------------------------------------------------------------------------- templates


def test_templates_add_list_get_replace_and_results(api: ApiClient) -> None:
    body = {"name": "Invite", "subject": "Interview on {{ day }}", "body": "Dear {{ applicant.name }},\n\nsee you."}
    response = api.post("/api/v1/templates", json=body)
    assert response.status_code == 201
    template = response.get_json()["id"]
    assert response.headers["Location"] == f"/api/v1/templates/{template}"
    got = api.ok("GET", f"/api/v1/templates/{template}")
    assert {k: got[k] for k in ("id", "name", "subject", "body", "json_part")} == {
        "id": template,
        **body,
        "json_part": False,
    }
    listed = api.ok("GET", "/api/v1/templates")
    assert listed["total"] == 1 and listed["items"][0]["name"] == "Invite" and "body" not in listed["items"][0]
    replaced = api.ok(
        "PUT",
        f"/api/v1/templates/{template}",
        json={"name": "Invite v2", "subject": "Hi", "body": "x", "json_part": True},
    )
    assert (replaced["name"], replaced["subject"], replaced["json_part"]) == ("Invite v2", "Hi", True)
    assert replaced["updated_at"] >= got["updated_at"]
    results = api.ok("GET", f"/api/v1/templates/{template}/results")
    assert results == {
        "template_id": template,
        "messages": 0,
        "sent": 0,
        "tracked": 0,
        "opened": 0,
        "clicked": 0,
        "replied": 0,
        "machine_opened": 0,
        "buckets": [],
    }


def test_template_errors_name_the_field(api: ApiClient) -> None:
    says = assert_error(
        api.post("/api/v1/templates", json={"name": "T", "subject": "Hi", "body": "{{ oops"}), 400, "body"
    )
    assert "line 1" in says
    api.ok("POST", "/api/v1/templates", 201, json={"name": "T", "subject": "Hi", "body": "x"})
    other = api.ok("POST", "/api/v1/templates", 201, json={"name": "U", "subject": "Hi", "body": "x"})["id"]
    assert_error(api.post("/api/v1/templates", json={"name": "T", "subject": "Hi", "body": "y"}), 400, "name")
    assert_error(api.put(f"/api/v1/templates/{other}", json={"name": "T", "subject": "Hi", "body": "y"}), 400, "name")
    assert_error(api.put(f"/api/v1/templates/{other}", json={"name": "U"}), 422, "subject")
    assert api.ok("GET", f"/api/v1/templates/{other}")["body"] == "x"


def test_another_organisations_template_is_missing(api: ApiClient, other: ApiClient) -> None:
    theirs = other.ok("POST", "/api/v1/templates", 201, json={"name": "T", "subject": "Hi", "body": "x"})["id"]
    change = {"json": {"name": "Mine", "subject": "s", "body": "b"}}
    for method, suffix, kwargs in (("GET", "", {}), ("PUT", "", change), ("GET", "/results", {})):
        mine = api.call(method, f"/api/v1/templates/{theirs}{suffix}", **kwargs)
        assert_same_404(mine, api.call(method, f"/api/v1/templates/{MISSING}{suffix}", **kwargs), theirs)
    assert api.ok("GET", "/api/v1/templates")["total"] == 0
    assert other.ok("GET", f"/api/v1/templates/{theirs}")["name"] == "T"


# ---------------------------------------------------------------------------- outbox, tracking, threads, messages


def test_ids_that_do_not_exist_answer_404_on_every_resource(api: ApiClient) -> None:
    for url in (
        f"/api/v1/threads/{MISSING}",
        f"/api/v1/messages/{MISSING}",
        "/api/v1/tracking?message_id=%3Cnobody%40example.org%3E",
    ):
        assert_error(api.get(url), 404)
    assert_error(api.post(f"/api/v1/outbox/{MISSING}/retry"), 404)


def test_outbox_and_tracking_queries_are_checked(api: ApiClient) -> None:
    assert api.ok("GET", "/api/v1/outbox") == {"items": [], "total": 0, "offset": 0, "limit": 50}
    assert api.ok("GET", "/api/v1/outbox?status=uncertain")["items"] == []
    assert_error(api.get("/api/v1/outbox?status=lost"), 422, "status")
    assert_error(api.get("/api/v1/tracking"), 422, "message_id")
    assert_error(api.post(f"/api/v1/outbox/{MISSING}/retry", json={"force": "maybe"}), 422, "force")


def test_sending_refuses_what_cannot_be_sent_before_queueing_anything(api: ApiClient, other: ApiClient) -> None:
    theirs = other.ok("POST", "/api/v1/accounts", 201, json=imap_body("them@other.example"))["id"]
    mine = api.ok("POST", "/api/v1/accounts", 201, json=imap_body("rita@example.test"))["id"]
    message = {"to": ["ann@example.org"], "subject": "Hi", "body": "Hello"}
    # another organisation's mailbox is no mailbox at all
    says_theirs = assert_error(api.post("/api/v1/messages", json={**message, "account_id": theirs}), 400, "account_id")
    says_missing = assert_error(
        api.post("/api/v1/messages", json={**message, "account_id": MISSING}), 400, "account_id"
    )
    assert says_theirs.replace(str(theirs), "ID") == says_missing.replace(str(MISSING), "ID")
    for body, status, field in (
        ({"to": ["ann@example.org"], "subject": "Hi"}, 422, "body"),
        ({"to": ["ann@example.org"], "template": "T", "subject": "Hi", "body": "x"}, 422, "template"),
        ({"to": [], "subject": "Hi", "body": "x"}, 422, "to"),
        ({"to": ["not an address"], "subject": "Hi", "body": "x"}, 400, "to"),
        ({"to": ["a@x.org\r\nBcc: evil@example.net"], "subject": "Hi", "body": "x"}, 400, "to"),
        ({"to": ["a@x.org"], "subject": "Hi\r\nBcc: evil@example.net", "body": "x"}, 400, "subject"),
        ({"to": ["a@x.org"], "template": "No such template"}, 400, "template"),
        ({"to": ["a@x.org"], "subject": "Hi", "body": "x", "applicant_id": MISSING}, 400, "applicant_id"),
        ({"to": ["a@x.org"], "subject": "Hi", "body": "x", "data": {"a": 1}}, 422, "data"),
        (
            {"to": ["a@x.org"], "subject": "Hi", "body": "x", "invite_start": "2027-01-12T10:00+01:00"},
            422,
            "invite_end",
        ),
        ({"to": ["a@x.org"], "subject": "Hi", "body": "x", "invite_start": "2027-01-12T10:00"}, 422, "invite_start"),
        (
            {
                "to": ["a@x.org"],
                "subject": "Hi",
                "body": "x",
                "invite_start": "2027-01-12T10:00+01:00",
                "invite_end": "2027-01-12T09:00+01:00",
            },
            400,
            "invite_end",
        ),
    ):
        assert_error(api.post("/api/v1/messages", json={**body, "account_id": mine}), status, field)
    assert api.ok("GET", "/api/v1/outbox")["total"] == 0  # nothing was queued
    assert other.ok("GET", "/api/v1/outbox")["total"] == 0
