"""The Flask web layer: app factory and blueprints.

It serves a health endpoint, Prometheus metrics read from the database, and
the Gmail and Microsoft 365 connect flows (:mod:`web.blueprints.google_connect`,
:mod:`web.blueprints.microsoft_connect`); the recruiter UI
and the JSON API arrive with later issues and use the same services as the CLI.

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
from urllib.parse import urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Flask, Response, has_request_context, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from werkzeug.middleware.proxy_fix import ProxyFix

from postroom import db
from postroom.config import Config
from sync.metrics import UNAUTHORIZED_BODY, UNAUTHORIZED_HEADERS, DatabaseCollector, bearer_ok
from web.tracking import mount_tracking


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

    from web.blueprints.google_connect import bp as google_connect
    from web.blueprints.microsoft_connect import bp as microsoft_connect

    app.register_blueprint(google_connect)
    app.register_blueprint(microsoft_connect)
    return app


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
