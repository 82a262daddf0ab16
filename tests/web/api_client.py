"""Calling the JSON API as an integrating system does: a Flask test client that sends
``Authorization: Bearer <token>`` with a token made by :func:`services.users.create_token`
for a user of the organisation asked for (created when they do not exist yet)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from postroom.models import User
from services.orgs import add_org
from services.users import create_token
from tests.web.signin import ensure_user

MISSING = 987654  # an id no test creates


@dataclass
class ApiClient:
    client: FlaskClient
    token: str
    org_id: int

    def call(self, method: str, url: str, **kwargs: Any) -> TestResponse:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return self.client.open(url, method=method, headers=headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.call("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> TestResponse:
        return self.call("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> TestResponse:
        return self.call("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> TestResponse:
        return self.call("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> TestResponse:
        return self.call("DELETE", url, **kwargs)

    def ok(self, method: str, url: str, status: int = 200, **kwargs: Any) -> Any:
        """The JSON of a call that must answer ``status``."""
        response = self.call(method, url, **kwargs)
        assert response.status_code == status, (method, url, response.status_code, response.get_data(as_text=True))
        return response.get_json()


def new_org(app: Flask, name: str = "Other Org") -> int:
    with app.extensions["postroom"]["sessions"].begin() as s:
        return add_org(s, name).id


def api_client(
    app: Flask, email: str = "integration@example.test", org_id: int | None = None, role: str = "recruiter"
) -> ApiClient:
    """A client with an API token of user ``email`` (made with ``role``) of organisation
    ``org_id`` (default: the default one)."""
    user_id = ensure_user(app, email, org_id, role)
    with app.extensions["postroom"]["sessions"].begin() as s:
        token = create_token(s, user_id)
        org = s.get_one(User, user_id).org_id
    return ApiClient(app.test_client(), token, org)


def imap_body(email: str, **overrides: Any) -> dict[str, Any]:
    """``POST /api/v1/accounts`` for a mailbox on this machine (nothing connects when it is added)."""
    return {
        "email": email,
        "username": email,
        "password": "secret password",
        "imap_host": "127.0.0.1",
        "imap_port": 143,
        "imap_security": "none",
        "smtp_host": "127.0.0.1",
        "smtp_port": 587,
        "smtp_security": "none",
        **overrides,
    }


def assert_error(response: TestResponse, status: int, field: str | None = None) -> str:
    """The response is the API's error shape with ``status``; returns its sentence."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "field"} and body["field"] == field, body
    assert isinstance(body["error"], str) and body["error"].endswith("."), body
    return str(body["error"])


def assert_same_404(
    mine: TestResponse, missing: TestResponse, my_id: int | str, missing_id: int | str = MISSING
) -> None:
    """Another organisation's id answers as an id that does not exist: the same status, headers
    and body (but for the id itself, which the caller sent)."""
    assert mine.status_code == missing.status_code == 404
    assert mine.headers.get("Content-Type") == missing.headers.get("Content-Type") == "application/json"
    assert mine.get_json()["field"] is None and missing.get_json()["field"] is None
    assert mine.get_json()["error"].replace(str(my_id), "ID") == missing.get_json()["error"].replace(
        str(missing_id), "ID"
    )
