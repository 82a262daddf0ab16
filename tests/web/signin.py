"""Signing in a Flask test client the way a browser does: GET /login for the CSRF token, POST
the address and password. The user is created in the organisation asked for (default: the
default one) when they do not exist yet."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from postroom.models import User
from services.orgs import resolve_org
from services.users import add_user

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_token(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "no CSRF token on the page"
    return found.group(1) or found.group(2)


def ensure_user(app: Flask, email: str, org_id: int | None = None, role: str = "recruiter") -> int:
    with app.extensions["postroom"]["sessions"].begin() as s:
        user = s.scalar(select(User).where(User.email == email))
        if user is None:
            user = add_user(s, resolve_org(s, org_id), email, PASSWORD, role)
        return user.id


def signed_in(
    app: Flask,
    email: str = "recruiter@example.test",
    org_id: int | None = None,
    role: str = "recruiter",
    base_url: str = "http://localhost",
) -> FlaskClient:
    """A test client signed in as ``email`` at ``base_url`` (the cookie's host; over https the
    CSRF check wants the Referer a browser sends)."""
    ensure_user(app, email, org_id, role)
    client = app.test_client()
    token = csrf_token(client.get("/login", base_url=base_url).get_data(as_text=True))
    resp = client.post(
        "/login",
        base_url=base_url,
        data={"csrf_token": token, "email": email, "password": PASSWORD},
        headers={"Referer": base_url + "/login"},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client
