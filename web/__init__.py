"""The Flask web layer: app factory and blueprints.

It serves a health endpoint, Prometheus metrics read from the database, and
the Gmail and Microsoft 365 connect flows (:mod:`web.blueprints.google_connect`,
:mod:`web.blueprints.microsoft_connect`); the recruiter UI
and the JSON API arrive with later issues and use the same services as the CLI.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from postroom import db
from postroom.config import Config
from sync.metrics import DatabaseCollector


def create_app(config: Config) -> Flask:
    """Build the app for ``config``; no module-level app, no global config."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = session_key(config.security.secret_key)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"  # sent on the top-level redirect back from Google/Microsoft
    engine = db.make_engine(config.database)
    sessions = db.make_sessionmaker(engine)
    # What background work borrows through the app context (web.celery_app, Flask's Celery pattern).
    app.extensions["postroom"] = {"config": config, "sessions": sessions}

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # report, do not crash: this endpoint exists to say what is wrong
            return jsonify(status="error", database=str(exc.__class__.__name__)), 503
        return jsonify(status="ok", database="ok")

    metrics_registry = CollectorRegistry()
    metrics_registry.register(DatabaseCollector(sessions))

    @app.get("/metrics")
    def metrics():  # type: ignore[no-untyped-def]
        """Account states, sync lag and queue depth from the database (Prometheus text format)."""
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
