"""The Flask web layer: app factory and blueprints.

For now it serves only a health endpoint; the recruiter UI, OAuth connect and
the JSON API arrive with later issues and use the same services as the CLI.
"""

from __future__ import annotations

from flask import Flask, jsonify
from sqlalchemy import text

from postroom import db
from postroom.config import Config


def create_app(config: Config) -> Flask:
    """Build the app for ``config``; no module-level app, no global config."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = config.security.secret_key
    engine = db.make_engine(config.database)
    app.extensions["postroom.sessions"] = db.make_sessionmaker(engine)

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # report, do not crash: this endpoint exists to say what is wrong
            return jsonify(status="error", database=str(exc.__class__.__name__)), 503
        return jsonify(status="ok", database="ok")

    return app
