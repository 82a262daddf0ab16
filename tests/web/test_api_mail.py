"""The JSON API over real mail: a mailbox on the test rig (Dovecot) connected through
``POST /api/v1/accounts`` and synced by the real engine, read back through the timeline, thread
and message endpoints; sends through ``POST /api/v1/messages`` to an SMTP server that captures
every transaction (and refuses, drops or delays the recipients asked to), answering the JSON of
``postroom send --json``; retries and tracking of what was sent. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from typing import Any

import pytest
from flask import Flask

from postroom.config import Config, load_config
from sync.scheduler import sync_all
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox, make_message
from tests.web.api_client import MISSING, ApiClient, assert_error, assert_same_404
from web import create_app

# the keys of `postroom send --json` (services.sending.SendOutcome.as_json)
SEND_KEYS = {
    "message_id", "outbox_id", "reply_to", "short_id", "recipients", "id", "status", "tracked", "mode", "refused",
    "error",
}  # fmt: skip


@pytest.fixture
def tracked_config(env: dict[str, str]) -> Config:
    return load_config(env={**env, "POSTROOM_TRACKING_BASE_URL": "https://t.example.com"})


@pytest.fixture
def app(tracked_config: Config) -> Flask:
    return create_app(tracked_config)


def connect(api: ApiClient, box: Mailbox, smtp_port: int | None = None) -> int:
    """The rig mailbox connected through the API (plain IMAP/SMTP on loopback)."""
    box.ensure_folders()
    body = {
        "email": box.address,
        "username": box.address,
        "password": box.password,
        "imap_host": "127.0.0.1",
        "imap_port": box.rig.ports["imap"],
        "imap_security": "none",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port or box.rig.ports["smtp_submission"],
        "smtp_security": "none",
    }
    return int(api.ok("POST", "/api/v1/accounts", 201, json=body)["id"])


def rcpt(kind: str = "ann") -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.org"


def received(smtp: FaultySmtp, message_id: str) -> list[tuple[list[str], Message]]:
    return [
        (meta["rcpt_tos"], message_from_bytes(raw, policy=default_policy)) for meta, raw in smtp.received(message_id)
    ]


# ---------------------------------------------------------------------------- reading synced mail

HTML = (
    '<p onclick="steal()">We would love to talk.</p><script>alert(1)</script>'
    '<img src="https://tracker.example.net/p.gif" alt="logo"><a href="javascript:alert(2)">cv</a>'
)


def test_a_synced_applicants_timeline_thread_and_messages(
    app: Flask, api: ApiClient, other: ApiClient, mailbox: Mailbox
) -> None:
    account = connect(api, mailbox)
    ann = api.ok("POST", "/api/v1/applicants", 201, json={"name": "Ann Applicant", "emails": ["ann@example.org"]})
    mailbox.append(
        make_message(message_id="<apply@ann.test>", subject="Application: designer", html=HTML, body="Hello, text.")
    )
    mailbox.append(
        make_message(
            message_id="<answer@ann.test>",
            subject="Re: Application: designer",
            from_="Ann Applicant <ann@example.org>",
            in_reply_to="<apply@ann.test>",
            references=["<apply@ann.test>"],
            body="One more thing.",
        )
    )
    mailbox.append(make_message(message_id="<noise@corp.test>", subject="Lunch?", from_="colleague@corp.test"))
    (result,) = sync_all(app.extensions["postroom"]["config"], app.extensions["postroom"]["sessions"], account)
    assert result.ok, result.error

    timeline = api.ok("GET", f"/api/v1/applicants/{ann['id']}/timeline")
    assert timeline["total"] == 2 and timeline["offset"] == 0
    first, second = timeline["items"]
    assert [first["message_id"], second["message_id"]] == ["<apply@ann.test>", "<answer@ann.test>"]
    assert first["direction"] == "in" and first["from"] == {"name": "Ann Applicant", "address": "ann@example.org"}
    assert first["accounts"] == [{"id": account, "email": mailbox.address}] and first["tracking"] is None
    assert first["thread_id"] == second["thread_id"] is not None
    assert api.ok("GET", f"/api/v1/applicants/{ann['id']}/timeline?offset=1&limit=1")["items"] == [second]
    assert api.ok("GET", f"/api/v1/applicants/{ann['id']}")["messages"] == 2

    thread = api.ok("GET", f"/api/v1/threads/{first['thread_id']}")
    assert [m["message_id"] for m in thread["messages"]] == ["<apply@ann.test>", "<answer@ann.test>"]
    assert thread["messages"][0]["applicant_ids"] == [ann["id"]]
    assert thread["applicants"] == [{"id": ann["id"], "name": "Ann Applicant"}]

    message = api.ok("GET", f"/api/v1/messages/{first['email_id']}")
    assert message["message_id"] == "<apply@ann.test>" and message["body_state"] == "stored"
    assert "Hello, text." in message["text"]
    html = message["html"]
    assert "We would love to talk." in html
    for unsafe in ("<script", "onclick", "javascript:", "tracker.example.net"):
        assert unsafe not in html, unsafe
    assert message["blocked_images"] == 1
    shown = api.ok("GET", f"/api/v1/messages/{first['email_id']}?show_images=true")
    assert "/img/" in shown["html"] and shown["blocked_images"] == 0
    assert "https://tracker.example.net" not in shown["html"].split("?u=")[0]  # through the proxy, never direct

    # another organisation sees none of it, exactly as if it did not exist
    for url, suffix in (
        (f"/api/v1/threads/{first['thread_id']}", ""),
        (f"/api/v1/messages/{first['email_id']}", ""),
        (f"/api/v1/applicants/{ann['id']}", "/timeline"),
        (f"/api/v1/accounts/{account}", ""),
    ):
        my_id = int(url.rsplit("/", 1)[1])
        missing = url.rsplit("/", 1)[0] + f"/{MISSING}"
        assert_same_404(other.get(url + suffix), other.get(missing + suffix), my_id)


# ---------------------------------------------------------------------------- sending


def test_send_answers_the_cli_contract_and_the_message_goes_out(
    api: ApiClient, other: ApiClient, smtp: FaultySmtp, mailbox: Mailbox
) -> None:
    account = connect(api, mailbox, smtp.port)
    ann, bob, carl = rcpt("ann"), rcpt("bob"), rcpt("carl")
    response = api.post(
        "/api/v1/messages",
        json={"account_id": account, "to": [ann], "cc": [bob], "bcc": [carl], "subject": "Your application",
              "body": "Thank you for **applying**."},
    )  # fmt: skip
    assert response.status_code == 201, response.get_data(as_text=True)
    data = response.get_json()
    assert set(data) == SEND_KEYS
    assert data["status"] == "sent" and data["recipients"] == [ann, bob, carl] and data["id"] == data["outbox_id"]
    assert data["tracked"] is False and data["refused"] == {} and data["error"] is None
    ((envelope, msg),) = received(smtp, data["message_id"])
    assert sorted(envelope) == sorted([ann, bob, carl])
    assert msg["Subject"] == f"[{data['short_id']}] Your application" and msg["Reply-To"] == data["reply_to"]
    assert msg["To"] == ann and msg["Cc"] == bob and msg["Bcc"] is None
    assert "<strong>applying</strong>" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]

    outbox = api.ok("GET", "/api/v1/outbox?status=sent")
    assert outbox["total"] == 1 and outbox["items"][0]["message_id"] == data["message_id"]
    assert outbox["items"][0]["subject"] == msg["Subject"]
    assert other.ok("GET", "/api/v1/outbox")["total"] == 0  # another organisation's outbox is its own

    again = api.ok("POST", f"/api/v1/outbox/{data['outbox_id']}/retry", 200)
    assert again["already_sent"] is True and again["status"] == "sent"
    assert len(received(smtp, data["message_id"])) == 1  # not sent twice
    assert_same_404(
        other.post(f"/api/v1/outbox/{data['outbox_id']}/retry"),
        other.post(f"/api/v1/outbox/{MISSING}/retry"),
        data["outbox_id"],
    )


def test_a_tracked_templated_send_to_an_applicant_and_its_tracking_report(
    api: ApiClient, other: ApiClient, smtp: FaultySmtp, mailbox: Mailbox
) -> None:
    account = connect(api, mailbox, smtp.port)
    ann, bob = rcpt("ann"), rcpt("bob")
    applicant = api.ok("POST", "/api/v1/applicants", 201, json={"name": "Ann Lee", "emails": [ann]})["id"]
    template = api.ok(
        "POST",
        "/api/v1/templates",
        201,
        json={"name": "Invite", "subject": "Interview on {{ day }}", "body": "Dear {{ applicant.name }}, see you."},
    )["id"]
    data = api.ok(
        "POST",
        "/api/v1/messages",
        201,
        json={"account_id": account, "to": [ann, bob], "template": "Invite", "data": {"day": "Tuesday"},
              "applicant_id": applicant, "track": True},
    )  # fmt: skip
    assert data["tracked"] is True and data["mode"] == "smtp" and data["status"] == "sent"
    copies = smtp.transactions()[-2:]
    assert sorted(meta["rcpt_tos"][0] for meta, _ in copies) == sorted([ann, bob])  # one copy each
    first = message_from_bytes(copies[0][1], policy=default_policy)
    assert first["Subject"] == f"[{data['short_id']}] Interview on Tuesday"
    assert "Dear Ann Lee, see you." in first.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    report = api.ok("GET", "/api/v1/tracking", query_string={"message_id": data["message_id"]})
    assert report["message_id"] == data["message_id"]
    assert [(r["address"], r["opened"], r["clicked"], r["replied"]) for r in report["recipients"]] == [
        (ann, False, False, False),
        (bob, False, False, False),
    ]
    bare = data["message_id"].strip("<>")  # the id without its angle brackets finds it too
    assert api.ok("GET", "/api/v1/tracking", query_string={"message_id": bare}) == report
    assert_same_404(
        other.get("/api/v1/tracking", query_string={"message_id": data["message_id"]}),
        other.get("/api/v1/tracking", query_string={"message_id": f"<{MISSING}@nowhere.example>"}),
        data["message_id"],
        f"<{MISSING}@nowhere.example>",
    )
    results = api.ok("GET", f"/api/v1/templates/{template}/results")
    assert (results["messages"], results["sent"], results["tracked"], results["opened"]) == (1, 2, 2, 0)


def test_an_interview_invitation_is_sent_as_a_calendar_event(
    api: ApiClient, smtp: FaultySmtp, mailbox: Mailbox
) -> None:
    account = connect(api, mailbox, smtp.port)
    ann = rcpt("ann")
    data = api.ok(
        "POST",
        "/api/v1/messages",
        201,
        json={"account_id": account, "to": [ann], "subject": "Interview", "body": "See you.",
              "invite_start": "2027-01-12T10:00+01:00", "invite_end": "2027-01-12T11:00+01:00",
              "invite_location": "https://meet.example.com/x", "invite_timezone": "Europe/Berlin"},
    )  # fmt: skip
    ((_, msg),) = received(smtp, data["message_id"])
    (ics,) = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    text = ics.get_payload(decode=True).decode()
    assert "METHOD:REQUEST" in text and "TZID=Europe/Berlin" in text and f"mailto:{ann}" in text


@pytest.mark.parametrize(
    ("local", "status", "state"),
    [("permfail", 502, "failed"), ("tempfail", 202, "queued"), ("dropdata", 202, "uncertain")],
)
def test_a_send_that_did_not_go_out_says_so_in_its_status(
    api: ApiClient, smtp: FaultySmtp, mailbox: Mailbox, local: str, status: int, state: str
) -> None:
    account = connect(api, mailbox, smtp.port)
    response = api.post(
        "/api/v1/messages", json={"account_id": account, "to": [rcpt(local)], "subject": "Hi", "body": "Hello"}
    )
    assert response.status_code == status, response.get_data(as_text=True)
    data: dict[str, Any] = response.get_json()
    assert data["status"] == state and isinstance(data["error"], str) and data["error"]
    if status == 502:  # an error answer: it has the error shape too
        assert data["field"] is None and set(data) == SEND_KEYS | {"field"}
    else:
        assert set(data) == SEND_KEYS
    assert api.ok("GET", f"/api/v1/outbox?status={state}")["items"][0]["message_id"] == data["message_id"]


def test_an_uncertain_send_is_retried_only_when_forced(api: ApiClient, smtp: FaultySmtp, mailbox: Mailbox) -> None:
    account = connect(api, mailbox, smtp.port)
    ann = rcpt("dropfirst")  # the first delivery's answer is lost; the second is accepted
    data = api.ok(
        "POST", "/api/v1/messages", 202, json={"account_id": account, "to": [ann], "subject": "Hi", "body": "Hello"}
    )
    assert data["status"] == "uncertain"
    says = assert_error(api.post(f"/api/v1/outbox/{data['outbox_id']}/retry"), 400, "force")
    assert "may already have gone out" in says
    retried = api.ok("POST", f"/api/v1/outbox/{data['outbox_id']}/retry", 200, json={"force": True})
    assert retried["status"] == "sent" and retried["found_in_sent"] is False and retried["already_sent"] is False
    assert len(received(smtp, data["message_id"])) == 2
