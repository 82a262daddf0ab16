"""The Flask web layer: app factory and blueprints.

For now it serves a health endpoint and Prometheus metrics read from the
database; the recruiter UI, OAuth connect and the JSON API arrive with later
issues and use the same services as the CLI.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from postroom import db
from postroom.config import Config
from sync.metrics import DatabaseCollector


def create_app(config: Config) -> Flask:
    """Build the app for ``config``; no module-level app, no global config."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = config.security.secret_key
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

    return app
