"""Signing in to the web app: every page needs a signed-in user, passwords are checked against
argon2id hashes, failures are rate limited across processes (in the database), forms carry CSRF
tokens, a password change ends older sessions, and ``next`` never leaves the site. SQLite and
PostgreSQL."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient

from postroom.config import Config
from services.users import set_password
from tests.web.signin import PASSWORD, csrf_token, ensure_user, signed_in
from web import create_app


def _login(client: FlaskClient, email: str, password: str, next_: str = "") -> tuple[int, str, str]:
    token = csrf_token(client.get("/login").get_data(as_text=True))
    resp = client.post(
        "/login" + (f"?next={next_}" if next_ else ""), data={"csrf_token": token, "email": email, "password": password}
    )
    return resp.status_code, resp.headers.get("Location", ""), resp.get_data(as_text=True)


def test_pages_need_a_signed_in_user_and_sign_in_takes_you_back(config: Config) -> None:
    app = create_app(config)
    ensure_user(app, "rita@acme.test")
    client = app.test_client()
    resp = client.get("/")
    assert resp.status_code == 302 and urlsplit(resp.headers["Location"]).path == "/login"
    assert client.post("/logout").status_code in (400, 401)  # no session, no CSRF token: refused
    status, location, _ = _login(client, "RITA@acme.test", PASSWORD, next_="/applicants")
    assert status == 302 and location == "/applicants"
    page = client.get("/")
    assert page.status_code == 200 and "rita@acme.test" in page.get_data(as_text=True)
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"


def test_next_never_leaves_the_site(config: Config) -> None:
    app = create_app(config)
    ensure_user(app, "rita@acme.test")
    for target in ("https://evil.test/", "//evil.test/x", "/\\evil.test", "javascript:alert(1)"):
        status, location, _ = _login(app.test_client(), "rita@acme.test", PASSWORD, next_=target)
        assert status == 302 and location == "/", target


def test_a_wrong_password_says_so_and_the_sixth_try_is_refused_even_when_right(config: Config) -> None:
    app = create_app(config)
    ensure_user(app, "rita@acme.test")
    client = app.test_client()
    for _ in range(5):
        status, _, body = _login(client, "rita@acme.test", "wrong password!")
        assert status == 401 and "do not match an account" in body
    status, _, body = _login(client, "rita@acme.test", PASSWORD)
    assert status == 401 and "Too many failed sign-ins" in body
    # an unknown address answers exactly like a wrong password
    status, _, body = _login(app.test_client(), "nobody@acme.test", "wrong password!")
    assert status == 401 and "do not match an account" in body
    # the limit lives in the database: a second web process sees it too
    other_process = create_app(config).test_client()
    assert "Too many failed sign-ins" in _login(other_process, "rita@acme.test", PASSWORD)[2]


def test_forms_without_a_valid_csrf_token_are_refused(config: Config) -> None:
    app = create_app(config)
    ensure_user(app, "rita@acme.test")
    client = app.test_client()
    client.get("/login")
    resp = client.post("/login", data={"email": "rita@acme.test", "password": PASSWORD})
    assert resp.status_code == 400 and "did not come from Postroom" in resp.get_data(as_text=True)
    resp = client.post("/login", data={"csrf_token": "forged", "email": "rita@acme.test", "password": PASSWORD})
    assert resp.status_code == 400
    signed = signed_in(app, "sam@acme.test")
    assert signed.post("/logout").status_code == 400  # signing out is a form too
    assert signed.get("/").status_code == 200


def test_signing_out_and_a_password_change_end_the_session(config: Config) -> None:
    app: Flask = create_app(config)
    client = signed_in(app, "rita@acme.test")
    token = csrf_token(client.get("/").get_data(as_text=True))
    resp = client.post("/logout", data={"csrf_token": token})
    assert resp.status_code == 302 and client.get("/").status_code == 302

    client = signed_in(app, "rita@acme.test")
    other_browser = signed_in(app, "rita@acme.test")
    assert other_browser.get("/").status_code == 200
    with app.extensions["postroom"]["sessions"].begin() as s:
        set_password(s, ensure_user(app, "rita@acme.test"), "a brand new password")
    assert client.get("/").status_code == 302 and other_browser.get("/").status_code == 302


def test_the_session_cookie_is_httponly_and_samesite(config: Config) -> None:
    app = create_app(config)
    ensure_user(app, "rita@acme.test")
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"csrf_token": token, "email": "rita@acme.test", "password": PASSWORD})
    cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
