"""Issue 9, item 5: the session cookie is Secure whenever the app is served over HTTPS (directly,
through trusted proxies, or by web.base_url), and /metrics can require a token or be switched off.

The cookie is the one a recruiter's browser gets from /connect/google (the connect flow keeps its
PKCE verifier in the session); the Flask test client sends the requests. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from postroom.config import load_config
from tests.web.signin import signed_in
from web import create_app

TOKEN = "metrics-token-0123456789abcdef"


def _client(env: dict[str, str], base_url: str = "http://localhost", **settings: str) -> FlaskClient:
    google = {"POSTROOM_GOOGLE_CLIENT_ID": "cid.apps.googleusercontent.com", "POSTROOM_GOOGLE_CLIENT_SECRET": "cs"}
    return signed_in(create_app(load_config(env={**env, **google, **settings})), base_url=base_url)


def _toml(env: dict[str, str], text: str) -> str:
    """A config file with ``text``, for settings that have no environment variable."""
    path = Path(env["HOME"]) / "postroom.toml"
    path.write_text(text)
    return str(path)


def _session_cookie(resp: TestResponse) -> dict[str, str | bool]:
    """The attributes of the session cookie the response sets (``secure`` is True or "")."""
    (header,) = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session=")]
    morsel = SimpleCookie(header)["session"]
    return {"secure": morsel["secure"], "httponly": morsel["httponly"], "samesite": morsel["samesite"]}


def _redirect_uri(resp: TestResponse) -> str:
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return parse_qs(urlsplit(resp.headers["Location"]).query)["redirect_uri"][0]


def test_cookie_is_not_secure_over_plain_http_without_settings(env: dict[str, str]) -> None:
    resp = _client(env).get("/connect/google")
    assert _redirect_uri(resp) == "http://localhost/connect/google/callback"
    assert _session_cookie(resp) == {"secure": "", "httponly": True, "samesite": "Lax"}


def test_cookie_is_secure_when_the_request_came_over_https(env: dict[str, str]) -> None:
    client = _client(env, base_url="https://postroom.example.com")
    resp = client.get("/connect/google", base_url="https://postroom.example.com")
    assert _session_cookie(resp)["secure"] is True


def test_trusted_proxy_https_makes_the_cookie_secure_and_the_redirect_uri_public(env: dict[str, str]) -> None:
    client = _client(env, POSTROOM_CONFIG=_toml(env, "[web]\ntrusted_proxies = 1\n"))
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "postroom.example.com",
        "X-Forwarded-For": "203.0.113.9",
    }
    resp = client.get("/connect/google", headers=forwarded)  # TLS ended at the proxy; plain http to us
    assert _session_cookie(resp)["secure"] is True
    assert _redirect_uri(resp) == "https://postroom.example.com/connect/google/callback"


def test_forwarded_headers_are_ignored_without_trusted_proxies(env: dict[str, str]) -> None:
    resp = _client(env).get("/connect/google", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test"})
    assert _session_cookie(resp)["secure"] == ""
    assert _redirect_uri(resp) == "http://localhost/connect/google/callback"


def test_https_base_url_makes_the_cookie_secure_and_fixes_the_redirect_uri(env: dict[str, str]) -> None:
    client = _client(env, "https://postroom.example.com", POSTROOM_BASE_URL="https://postroom.example.com/")
    signed = client.get_cookie("session", domain="postroom.example.com")
    assert signed is not None
    client.set_cookie("session", signed.value, domain="evil.test")  # a proxy that passes Host through
    resp = client.get("/connect/google", base_url="https://evil.test")
    assert _session_cookie(resp)["secure"] is True
    assert _redirect_uri(resp) == "https://postroom.example.com/connect/google/callback"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token-0123456789abcdef", 401),
        (f"Basic {TOKEN}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),  # the scheme is case-insensitive (RFC 7235)
    ],
)
def test_metrics_token_is_required_when_set(env: dict[str, str], authorization: str | None, status: int) -> None:
    client = _client(env, POSTROOM_METRICS_TOKEN=TOKEN)
    resp = client.get("/metrics", headers={"Authorization": authorization} if authorization else {})
    assert resp.status_code == status
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"postroom_accounts" not in resp.data
    else:
        assert b"postroom_accounts" in resp.data


def test_metrics_can_be_switched_off_in_the_web_app(env: dict[str, str]) -> None:
    client = _client(env, POSTROOM_CONFIG=_toml(env, "[metrics]\nweb_endpoint = false\n"))
    assert client.get("/metrics").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_a_connect_flow_started_before_a_key_change_survives_it(env: dict[str, str]) -> None:
    """The session cookie signed under the old key is still read while it is in security.previous_keys."""
    before = _client(env).get("/connect/google")
    state = parse_qs(urlsplit(before.headers["Location"]).query)["state"][0]
    cookie = SimpleCookie(before.headers["Set-Cookie"])["session"].value
    new_key = {"POSTROOM_SECRET_KEY": "the-new-secret-key-fedcba9876543210"}

    def back(client: FlaskClient) -> TestResponse:
        client.set_cookie("session", cookie)
        return client.get(f"/connect/google/callback?state={state}", headers={"Accept": "application/json"})

    rotating = _client(env, **new_key, POSTROOM_PREVIOUS_SECRET_KEYS=env["POSTROOM_SECRET_KEY"])
    still = back(rotating)  # still signed in, and the flow's state still there
    assert still.get_json()["error"] == "Google sent no authorization code; please start again from Connect Gmail."
    gone = back(_client(env, **new_key))  # the old key gone: so is the session, sign-in and flow alike
    assert gone.status_code == 302 and urlsplit(gone.headers["Location"]).path == "/login"
