"""The web app factory builds an app whose health check reflects the database."""

from __future__ import annotations

from pathlib import Path

from postroom.config import Config, load_config
from web import create_app


def test_health_ok_with_database(config: Config) -> None:
    client = create_app(config).test_client()
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok", "database": "ok"}


def test_health_reports_unreachable_database(tmp_path: Path) -> None:
    cfg = load_config(
        env={
            "HOME": str(tmp_path),
            "POSTROOM_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "POSTROOM_SECRET_KEY": "k" * 20,
        }
    )
    resp = create_app(cfg).test_client().get("/healthz")
    assert resp.status_code == 503 and resp.get_json()["status"] == "error"
