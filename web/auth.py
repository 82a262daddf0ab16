"""Who is asking: the signed-in user of the pages, the bearer token of the API, and the rules
every request passes.

* **Pages** use Flask-Login over Flask's signed session cookie (``HttpOnly``, ``SameSite=Lax``
  — Lax, not Strict, because the OAuth connect flows come back to us as a top-level redirect
  from Google or Microsoft and must find their pending state — and ``Secure`` whenever the
  request came over HTTPS). The id kept in the session is ``"<user id>:<session epoch>"``: a
  password change bumps the epoch and every older session ends. Sessions last 12 hours.
* **Every route requires a signed-in user** unless its endpoint is in :data:`PUBLIC` (the
  sign-in page, static files, ``/healthz``, ``/metrics`` with its own token). A new route is
  therefore private by default; ``tests/web/test_access.py`` calls every route in the URL map
  as nobody and as another organisation's user. ``/api/`` answers 401 JSON, never a redirect
  (:mod:`web.api` authenticates bearer tokens only, so a cookie never acts on the API and the
  API needs no CSRF token).
* **Admins only**: a few changes send the organisation's mail or events elsewhere (webhook
  subscriptions, designating a processing mailbox); their views call :func:`require_admin`,
  which answers a recruiter ``403``, and their pages show the forms to admins only.
* **CSRF**: Flask-WTF's ``CSRFProtect`` checks every POST/PUT/PATCH/DELETE outside ``/api/``.
* **Security headers** on every answer: a Content-Security-Policy with no inline script
  (``script-src 'self'``), ``frame-ancestors 'none'``, ``nosniff``, ``Referrer-Policy``. A view
  may widen ``style-src`` for its page (the message page's sandboxed mail frame) by setting
  ``g.csp_inline_styles``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, jsonify, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect

from postroom.states import UserRole
from services.users import SignedIn, load_user

# The Microsoft callback is a cross-site POST that carries no session cookie: it is bound to the
# user who started the flow by its own signed cookie (web.blueprints.microsoft_connect). The image
# proxy is asked by the sandboxed mail frame, whose requests carry no cookie (it has no origin):
# the URL's HMAC signature, made only for images of mail a signed-in user opened, is its permission.
PUBLIC = frozenset({"static", "auth.login", "healthz", "metrics", "microsoft_connect.callback", "images.image"})
SESSION_LIFETIME = timedelta(hours=12)
csrf = CSRFProtect()
login_manager = LoginManager()


class WebUser(UserMixin):
    """The signed-in user as Flask-Login holds them."""

    def __init__(self, who: SignedIn) -> None:
        self.who = who
        self.org_id = who.org_id
        self.email = who.email
        self.name = who.name or who.email
        self.role = who.role
        self.demo = who.demo

    def get_id(self) -> str:
        return f"{self.who.id}:{self.who.session_epoch}"

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN


def init_app(app: Flask) -> None:
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", SESSION_LIFETIME)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid for the session's life
    app.config.setdefault("WTF_CSRF_SSL_STRICT", True)
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    csrf.init_app(app)
    app.before_request(_require_sign_in)
    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_failed)


@login_manager.user_loader
def _load(user_key: str) -> WebUser | None:
    user_id, _, epoch = user_key.partition(":")
    if not user_id.isdigit() or not epoch.isdigit():
        return None
    with current_app.extensions["postroom"]["sessions"]() as s:
        who = load_user(s, int(user_id))
    if who is None or who.session_epoch != int(epoch):
        return None
    return WebUser(who)


def org_id() -> int:
    """The signed-in user's organisation: every page reads and writes only its data."""
    return int(current_user.org_id)


def require_admin() -> None:
    """``403`` unless the signed-in user is an admin of their organisation. A view that
    addresses an id checks it is the organisation's first, so that another organisation's id
    answers ``404`` as everywhere."""
    if not current_user.is_admin:
        abort(403)


def is_api(path: str | None = None) -> bool:
    return (path if path is not None else request.path).startswith("/api/")


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path on this site (``/applicants/3``), else None: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _require_sign_in() -> Any:
    if request.endpoint in PUBLIC or is_api() or request.endpoint is None:
        return None  # unknown URLs answer 404 below; the API authenticates itself
    if current_user.is_authenticated:
        return None
    if request.method == "GET":
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return Response("Please sign in first.", 401, {"Content-Type": "text/plain; charset=utf-8"})


def _csrf_failed(exc: CSRFError) -> Response:
    if is_api():
        return Response('{"error": "CSRF token missing or invalid."}', 400, {"Content-Type": "application/json"})
    return Response(
        "This form has expired or did not come from Postroom; please go back, reload the page and try again.",
        400,
        {"Content-Type": "text/plain; charset=utf-8"},
    )


def _security_headers(response: Response) -> Response:
    style = "'self' 'unsafe-inline'" if g.get("csp_inline_styles") else "'self'"
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        f"form-action 'self'; img-src 'self' data:; style-src {style}; frame-src 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if current_user and getattr(current_user, "is_authenticated", False):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def unauthorized_json(message: str = "Sign in with an API token: Authorization: Bearer <token>.") -> Response:
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="postroom"'
    return response
