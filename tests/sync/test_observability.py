"""What an operator sees: `postroom status`, Prometheus metrics, JSON logs with account ids."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.main import main
from postroom.config import Config
from sync.metrics import DatabaseCollector, SyncMetrics, quantile
from sync.scheduler import Scheduler
from tests.rig.fixtures import make_message
from tests.sync.helpers import connect

POSTROOM = [sys.executable, "-m", "cli"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_queue_depth_counts_an_account_whose_worker_died(config: Config, sessions, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    """An account left ``syncing`` by a worker that died is due again once its lease runs out:
    the queue-depth gauge counts it, as the scheduler and the Celery dispatcher do."""
    from datetime import timedelta

    from prometheus_client import CollectorRegistry, generate_latest
    from sqlalchemy import update

    from postroom.models import MailAccount

    account_id = connect(config, sessions, new_mailbox())
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions))
    assert _samples(generate_latest(registry).decode())[("postroom_queue_depth", ())] == 1  # new: due at once
    with sessions.begin() as s:  # a worker claimed it, then died; its lease ran out a minute ago
        s.execute(
            update(MailAccount)
            .where(MailAccount.id == account_id)
            .values(
                status="syncing",
                lease_owner="gone:1:dead",
                lease_expires_at=datetime.now(UTC) - timedelta(minutes=1),
                next_sync_at=datetime.now(UTC) - timedelta(minutes=2),
            )
        )
    assert _samples(generate_latest(registry).decode())[("postroom_queue_depth", ())] == 1
    assert Scheduler(config, sessions).due(datetime.now(UTC), 10) == [account_id]  # the same clause


def test_metrics_count_syncs_messages_errors_and_lag(config: Config, sessions, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import generate_latest

    good, bad = new_mailbox(), new_mailbox()
    for i in range(3):
        good.append(make_message(message_id=f"<obs{i}@x.test>"))
    good_id = connect(config, sessions, good)
    bad.password = "wrong"
    connect(config, sessions, bad)

    metrics = SyncMetrics()
    metrics.registry.register(DatabaseCollector(sessions))
    scheduler = Scheduler(config, sessions, sink=metrics)
    for account_id in scheduler.due(datetime.now(UTC), 10):
        scheduler.sync(account_id)
    values = _samples(generate_latest(metrics.registry).decode())

    assert values[("postroom_syncs_total", (("outcome", "ok"),))] == 1
    assert values[("postroom_syncs_total", (("outcome", "failed"),))] == 1
    assert values[("postroom_messages_synced_total", ())] == 3
    assert values[("postroom_sync_errors_total", (("error_class", "AuthError"),))] == 1
    assert values[("postroom_accounts", (("status", "active"),))] == 1
    assert values[("postroom_accounts", (("status", "reconnect-needed"),))] == 1
    assert values[("postroom_queue_depth", ())] == 0  # nothing due: one synced, one waits for the user
    # lag: the synced account is fresh, the other has never synced (its age counts)
    assert values[("postroom_sync_lag_seconds", (("quantile", "0.5"),))] < 60
    assert values[("postroom_sync_duration_seconds_count", ())] == 2
    assert good_id


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, 0.0),
        ([1.0], 0.99, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
    ],
)
def test_lag_quantiles_use_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == expected


def test_status_shows_state_lag_and_last_error(
    config: Config,
    sessions,
    new_mailbox,
    env,
    monkeypatch,  # type: ignore[no-untyped-def]
    capsys,
) -> None:
    good, bad = new_mailbox(), new_mailbox()
    good_id = connect(config, sessions, good)
    bad.password = "wrong"
    bad_id = connect(config, sessions, bad)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["sync", "--once"]) == 1
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[good_id]["status"] == "active" and rows[good_id]["lag_seconds"] < 30
    assert rows[good_id]["last_error"] is None and rows[good_id]["next_sync_at"]
    assert rows[bad_id]["status"] == "reconnect-needed" and rows[bad_id]["last_error_class"] == "AuthError"
    assert rows[bad_id]["failure_count"] == 1 and rows[bad_id]["next_sync_at"] is None
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert f"{bad.address}" in text and "reconnect-needed" in text and "AuthError" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_serves_metrics_and_logs_json_with_account_ids(env, mailbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mailbox.append(make_message(message_id="<m1@x.test>"))
    mailbox.append(make_message(message_id="<m2@x.test>"))
    port = _free_port()
    full = {
        **os.environ,
        **env,
        "BOX_PASSWORD": mailbox.password,
        "POSTROOM_METRICS_PORT": str(port),
        "POSTROOM_LOG_FORMAT": "json",
        "POSTROOM_LOG_LEVEL": "INFO",
        "POSTROOM_SYNC_INTERVAL": "1",
    }
    subprocess.run([*POSTROOM, *mailbox.add_imap_args("BOX_PASSWORD")], env=full, check=True, capture_output=True)
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([*POSTROOM, "worker"], env=full, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.monotonic() + 30
        values: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                values = _samples(body)
                if values.get(("postroom_messages_synced_total", ())) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert values.get(("postroom_messages_synced_total", ())) == 2
        assert (
            values[("postroom_accounts", (("status", "active"),))]
            + values[("postroom_accounts", (("status", "syncing"),))]
            == 1
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    about_account = [line for line in lines if line["msg"].startswith("account ")]  # per-account summaries
    assert about_account and all(line.get("account_id") == 1 for line in about_account), about_account
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
