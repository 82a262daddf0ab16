"""`postroom webhooks add|list|rotate|delete|deliveries` as the contract spells them: the secret
shown once (and usable to verify a delivery), wrong input named by its flag, the delivery log's
JSON shape. SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import select

from postroom import db
from postroom.config import load_config
from postroom.models import WebhookSubscription
from postroom.webhook_signing import headers, verify
from services.webhooks import emit
from tests.cli.harness import Cli

LOG_KEYS = {
    "id", "subscription_id", "url", "event", "msg_id", "status", "attempts", "next_attempt_at",
    "last_status_code", "last_error", "created_at", "delivered_at",
}  # fmt: skip


def test_webhooks_add_and_deliveries_as_the_contract_spells_them(cli: Cli, env: dict[str, str]) -> None:
    added = cli.json("webhooks", "add", "--url", "https://hooks.example.com/postroom", "--events",
                     "message.opened,message.bounced")  # fmt: skip
    assert isinstance(added, dict) and set(added) == {"id", "secret"} and added["secret"].startswith("whsec_")
    signed = headers(added["secret"], "msg_1", int(time.time()), b"{}")
    verify(added["secret"], signed, b"{}", now=time.time())  # a usable Standard Webhooks secret

    assert cli.json("webhooks", "deliveries") == []
    engine = db.make_engine(load_config(env=env).database)
    sessions = db.make_sessionmaker(engine)
    with sessions.begin() as s:
        sub = s.scalars(select(WebhookSubscription)).one()
        assert sub.events == ["message.opened", "message.bounced"] and added["secret"].encode() not in sub.secret
        emit(s, sub.org_id, "message.bounced", {"address": "ann@example.com"})
    engine.dispose()
    log = cli.json("webhooks", "deliveries")
    assert isinstance(log, list) and len(log) == 1 and set(log[0]) == LOG_KEYS
    assert (log[0]["event"], log[0]["status"], log[0]["attempts"]) == ("message.bounced", "pending", 0)
    assert "message.bounced" in cli("webhooks", "deliveries")[1]


def test_wrong_input_is_named_by_its_flag(cli: Cli) -> None:
    code, _, err = cli("webhooks", "add", "--url", "https://hooks.example.com/x", "--events", "message.sent", ok=False)
    assert code != 0 and "--events" in err and "message.sent" in err
    code, _, err = cli("webhooks", "add", "--url", "http://127.0.0.1:8000/x", "--events", "message.opened", ok=False)
    assert code != 0 and "--url" in err and "allow_private" in err
    code, _, err = cli("webhooks", "deliveries", "--org", "999", ok=False)
    assert code != 0 and "999" in err


def test_list_rotate_and_delete(cli: Cli) -> None:
    added = cli.json("webhooks", "add", "--url", "https://hooks.example.com/r", "--events", "message.replied")
    assert isinstance(added, dict)
    listed = cli.json("webhooks", "list")
    assert isinstance(listed, list) and [(v["id"], v["url"], v["events"]) for v in listed] == [
        (added["id"], "https://hooks.example.com/r", ["message.replied"])
    ]
    assert added["secret"] not in cli("webhooks", "list")[1]
    rotated = cli.json("webhooks", "rotate", str(added["id"]))
    assert isinstance(rotated, dict) and set(rotated) == {"secret"} and rotated["secret"] != added["secret"]
    [after] = cli.json("webhooks", "list")  # type: ignore[misc]
    assert after["rotating_until"] is not None
    code, _, err = cli("webhooks", "rotate", "999", ok=False)
    assert code != 0 and err.strip() == "postroom: error: There is no webhook subscription 999."
    assert "is deleted" in cli("webhooks", "delete", str(added["id"]))[1]
    assert cli.json("webhooks", "list") == []
    code, _, err = cli("webhooks", "delete", str(added["id"]), ok=False)
    assert code != 0 and "no webhook subscription" in err and "Traceback" not in err
