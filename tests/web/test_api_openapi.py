"""The OpenAPI document at ``/api/v1/openapi.json``: generated from the code, valid OpenAPI 3,
and complete — every ``/api/v1`` route of the URL map is in it with each of its methods, so a
route added without its schema fails here."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from openapi_spec_validator import validate

from postroom.config import Config
from web import create_app


@pytest.fixture
def app(config: Config) -> Flask:
    return create_app(config)


def test_the_document_validates_and_documents_every_api_route(app: Flask) -> None:
    response = app.test_client().get("/api/v1/openapi.json")  # no token: it holds no data
    assert response.status_code == 200 and response.mimetype == "application/json"
    doc = response.get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "Postroom" and doc["info"]["version"] == "v1"

    documented = {
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method in operations
        if method != "parameters"
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api-docs.openapi_json":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routed |= {(method, path) for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert routed == documented
    assert {
        ("GET", "/api/v1/accounts"),
        ("POST", "/api/v1/accounts"),
        ("GET", "/api/v1/accounts/{account_id}"),
        ("DELETE", "/api/v1/accounts/{account_id}"),
        ("GET", "/api/v1/applicants"),
        ("POST", "/api/v1/applicants"),
        ("GET", "/api/v1/applicants/{applicant_id}"),
        ("PATCH", "/api/v1/applicants/{applicant_id}"),
        ("GET", "/api/v1/applicants/{applicant_id}/timeline"),
        ("GET", "/api/v1/threads/{thread_id}"),
        ("GET", "/api/v1/messages/{email_id}"),
        ("POST", "/api/v1/messages"),
        ("GET", "/api/v1/templates"),
        ("POST", "/api/v1/templates"),
        ("GET", "/api/v1/templates/{template_id}"),
        ("PUT", "/api/v1/templates/{template_id}"),
        ("GET", "/api/v1/tracking"),
        ("GET", "/api/v1/outbox"),
        ("POST", "/api/v1/outbox/{outbox_id}/retry"),
        ("GET", "/api/v1/inbound/mailboxes"),
        ("POST", "/api/v1/inbound/mailboxes"),
        ("GET", "/api/v1/inbound/items"),
        ("GET", "/api/v1/inbound/items/{item_id}"),
        ("POST", "/api/v1/inbound/items/{item_id}/retry"),
        ("POST", "/api/v1/inbound/run"),
        ("GET", "/api/v1/inbound/attachments/{attachment_id}"),
    } <= documented
    download = doc["paths"]["/api/v1/inbound/attachments/{attachment_id}"]["get"]["responses"]["200"]["content"]
    assert download == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    items = doc["paths"]["/api/v1/inbound/items"]["get"]
    assert {p["name"] for p in items["parameters"]} == {"offset", "limit", "status"}


def test_the_document_says_how_to_authenticate_and_what_errors_and_pages_look_like(app: Flask) -> None:
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token from `postroom tokens create`.",
    }
    assert doc["security"] == [{"bearerAuth": []}]
    error = doc["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error", "field"} and set(error["required"]) == {"error", "field"}
    page = doc["components"]["schemas"]["ApplicantPage"]
    assert set(page["properties"]) == {"items", "total", "offset", "limit"}
    listing = doc["paths"]["/api/v1/applicants"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"offset", "limit", "q"}
    assert "422" in listing["responses"] and "default" in listing["responses"]
    send = doc["paths"]["/api/v1/messages"]["post"]
    assert {"201", "202", "502"} <= set(send["responses"])
    body = doc["components"]["schemas"]["SendBody"]
    assert {"account_id", "to", "cc", "bcc", "subject", "body", "template", "data", "applicant_id", "track"} <= set(
        body["properties"]
    )
    assert {"in_reply_to", "invite_start", "invite_end", "invite_location", "invite_timezone"} <= set(
        body["properties"]
    )


def test_two_apps_in_one_process_each_document_the_whole_api(config: Config) -> None:
    first = create_app(config).test_client().get("/api/v1/openapi.json").get_json()
    second = create_app(config).test_client().get("/api/v1/openapi.json").get_json()
    assert first == second


def test_the_document_says_which_operations_need_an_admin(app: Flask) -> None:
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    admins_only = {
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if method != "parameters" and "403" in operation["responses"]
    }
    assert admins_only == {
        ("POST", "/api/v1/inbound/mailboxes"),
        ("POST", "/api/v1/webhooks"),
        ("DELETE", "/api/v1/webhooks/{subscription_id}"),
        ("POST", "/api/v1/webhooks/{subscription_id}/rotate"),
    }
    refused = doc["paths"]["/api/v1/inbound/mailboxes"]["post"]["responses"]["403"]
    assert "recruiter" in refused["description"]
    assert refused["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
