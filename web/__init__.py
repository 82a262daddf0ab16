"""The Flask web layer: app factory and blueprints.

It serves the recruiter web app (one blueprint per area under :mod:`web.blueprints`, templates
under ``web/templates/<area>/``, one stylesheet and a vendored htmx under ``web/static``), the
JSON API under ``/api/v1`` (:mod:`web.api`), the Gmail and Microsoft 365 connect flows, the
tracking endpoints (:mod:`web.tracking`, answered before Flask), a health endpoint and
Prometheus metrics read from the database. Views are thin: they call :mod:`services`, as the
CLI does. Who may ask what is decided in one place, :mod:`web.auth`: every route needs a
signed-in user unless it is listed public there.

Where the app is reached (``[web]``): behind ``trusted_proxies`` reverse proxies,
werkzeug's ``ProxyFix`` takes the client's scheme and host from their
``X-Forwarded-*`` headers; with ``base_url`` set, every request is taken to have
arrived at that address, so the OAuth redirect URIs are built from it whatever the
``Host`` header says. The session cookie is ``Secure`` whenever the request came
over HTTPS (or ``base_url`` is https). ``[metrics]`` ``token`` makes ``/metrics``
answer 401 without ``Authorization: Bearer <token>``; ``web_endpoint = false``
turns it off here (the workers' own port still serves it).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Blueprint, Flask, Response, has_request_context, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from werkzeug.middleware.proxy_fix import ProxyFix

from postroom import db
from postroom.config import Config
from sync.metrics import UNAUTHORIZED_BODY, UNAUTHORIZED_HEADERS, DatabaseCollector, bearer_ok
from web import api, auth
from web.blueprints import (
    applicants,
    compose,
    connect,
    dashboard,
    google_connect,
    images,
    inbound_ui,
    mailboxes,
    messages,
    microsoft_connect,
    outbox_ui,
    templates_ui,
    threads,
    webhooks_ui,
)
from web.blueprints import (
    auth as sign_in,
)
from web.tracking import mount_tracking

# the navigation, in order
NAV = (
    ("dashboard.index", "Dashboard"),
    ("mailboxes.index", "Mailboxes"),
    ("applicants.index", "Applicants"),
    ("compose.index", "Compose"),
    ("templates_ui.index", "Templates"),
    ("outbox_ui.index", "Outbox"),
    ("inbound_ui.index", "Processing"),
    ("webhooks_ui.index", "Webhooks"),
)


def create_app(config: Config) -> Flask:
    """Build the app for ``config``; no module-level app, no global config."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = session_key(config.security.key())
    # cookies signed under a previous key stay valid while `postroom keys rotate` runs its course
    app.config["SECRET_KEY_FALLBACKS"] = [session_key(k) for k in config.security.previous_keys]
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"  # sent on the top-level redirect back from Google/Microsoft
    app.session_interface = SessionInterface()
    engine = db.make_engine(config.database)
    sessions = db.make_sessionmaker(engine)
    if config.web.base_url:
        scheme = urlsplit(config.web.base_url).scheme
        app.config["SESSION_COOKIE_SECURE"] = scheme == "https"
        app.config["PREFERRED_URL_SCHEME"] = scheme
        app.wsgi_app = PublicAddress(app.wsgi_app, config.web.base_url)  # type: ignore[method-assign]
    hits = mount_tracking(app, config, sessions)  # /t/o and /t/c, answered before Flask (web.tracking)
    if config.web.trusted_proxies:
        n = config.web.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)  # type: ignore[method-assign]
    # What background work borrows through the app context (web.celery_app, Flask's Celery pattern).
    app.extensions["postroom"] = {"config": config, "sessions": sessions, "hits": hits}

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # report, do not crash: this endpoint exists to say what is wrong
            return jsonify(status="error", database=str(exc.__class__.__name__)), 503
        return jsonify(status="ok", database="ok")

    if config.metrics.web_endpoint:
        metrics_registry = CollectorRegistry()
        metrics_registry.register(DatabaseCollector(sessions))
        token = config.metrics.token

        @app.get("/metrics")
        def metrics():  # type: ignore[no-untyped-def]
            """Account states, sync lag and queue depth from the database (Prometheus text format)."""
            if token and not bearer_ok(request.headers.get("Authorization"), token):
                return Response(UNAUTHORIZED_BODY, 401, UNAUTHORIZED_HEADERS)
            return Response(generate_latest(metrics_registry), mimetype=CONTENT_TYPE_LATEST)

    auth.init_app(app)
    api.init_app(app)
    for blueprint in _blueprints():
        app.register_blueprint(blueprint)
    _errors(app)

    @app.context_processor
    def _nav() -> dict[str, object]:
        return {"nav_items": NAV, "demo_org": _is_demo()}

    return app


def _blueprints() -> list[Blueprint]:
    """Every blueprint of the pages, one per area (the API's are registered by :mod:`web.api`)."""
    areas = (
        sign_in,
        dashboard,
        mailboxes,
        connect,
        applicants,
        threads,
        messages,
        compose,
        templates_ui,
        outbox_ui,
        inbound_ui,
        webhooks_ui,
    )
    return [m.bp for m in (*areas, images, google_connect, microsoft_connect)]


def _is_demo() -> bool:
    """Whether the signed-in user's organisation is the demo one (the layout says so on every page)."""
    return bool(getattr(current_user, "is_authenticated", False) and getattr(current_user, "demo", False))


def _errors(app: Flask) -> None:
    """403, 404, 405 and 500 as a page, or as ``{"error": ...}`` under /api/."""
    sentences = {
        403: ("Admins only", "Only an admin of your organisation may do this."),
        404: ("Not found", "There is nothing here, or it belongs to another organisation."),
        405: ("Not allowed", "This address does not take that kind of request."),
        500: ("Something went wrong", "Postroom hit an unexpected error; it has been logged."),
    }

    def handler(code: int) -> Any:
        def handle(exc: Exception) -> Any:
            title, sentence = sentences[code]
            if auth.is_api():
                response = jsonify(error=sentence, field=None)
                response.status_code = code
                return response
            return render_template("errors/error.html", title=title, sentence=sentence), code

        return handle

    for code in sentences:
        app.register_error_handler(code, handler(code))


def session_key(secret_key: str) -> str:
    """Flask's cookie-signing key, derived from ``security.secret_key`` under a label of its
    own, so neither key (nor the Fernet key of stored secrets) reveals another."""
    return hmac.new(secret_key.encode("utf-8"), b"postroom flask session key v1", hashlib.sha256).hexdigest()


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, whose cookie is ``Secure`` whenever the request came
    over HTTPS (directly, through ``ProxyFix``, or by ``web.base_url``), not only when
    ``SESSION_COOKIE_SECURE`` says so."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


class PublicAddress:
    """WSGI middleware: every request is taken to have arrived at ``base_url`` (its scheme
    and host), so external URLs are built from it and never from a client's ``Host`` header."""

    def __init__(self, app: WSGIApplication, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.app, self.scheme, self.host = app, parts.scheme, parts.netloc

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.url_scheme"] = self.scheme
        environ["HTTP_HOST"] = self.host
        return self.app(environ, start_response)
