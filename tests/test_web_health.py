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


def test_metrics_endpoint_reports_account_states(config: Config) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    from sqlalchemy import update

    from postroom.models import MailAccount
    from services.accounts import ImapAccountRequest, add_imap_account

    app = create_app(config)
    sessions = app.extensions["postroom"]["sessions"]
    with sessions.begin() as s:
        for i in range(3):
            add_imap_account(
                s,
                config,
                ImapAccountRequest(f"r{i}@example.test", "u", "pw", "127.0.0.1", 143, "none", "127.0.0.1", 25, "none"),
            )
        s.execute(update(MailAccount).where(MailAccount.id == 1).values(status="reconnect-needed"))
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    values = {
        (s.name, tuple(s.labels.items())): s.value
        for f in text_string_to_metric_families(resp.get_data(as_text=True))
        for s in f.samples
    }
    assert values[("postroom_accounts", (("status", "active"),))] == 2
    assert values[("postroom_accounts", (("status", "reconnect-needed"),))] == 1
    assert values[("postroom_queue_depth", ())] == 2  # never synced: due now, nobody holds them
