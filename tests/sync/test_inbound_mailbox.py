"""The processing mailbox against the rig's Dovecot, on SQLite and PostgreSQL: folders created,
JSON/YAML/HTML-only mail processed and moved, malformed mail moved to failed/ with its reason
while the rest goes on, hostile strings stored cleaned, exactly once across a SIGKILL, the
copy-delete path (also on a server without MOVE), mail fixed by hand and moved back, retry, and
the inbound.processed webhooks queued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, load_config
from postroom.models import MailAccount, WebhookDelivery
from postroom.models_inbound import InboundItem
from providers.base import Capability, RemoteFolder
from providers.imap import ImapProvider
from services.inbound import add_mailbox, get_item, list_items, retry_item, run_once
from services.webhooks import add_subscription
from sync.inbound import ensure_targets, load_mailboxes, open_mailbox
from tests.rig.connect_proxy import ConnectProxy
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect

ROOT = Path(__file__).resolve().parents[2]


def _json_part(message_id: str, payload: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Partner System <partner@agency.example>"
    msg["To"] = "jobs@example.test"
    msg["Subject"] = "New candidate"
    msg["Message-ID"] = message_id
    msg.set_content("A candidate for you, data attached.")
    msg.add_alternative(payload.encode(), maintype="application", subtype="json")
    msg.add_attachment(b"%PDF-1.4 cv", maintype="application", subtype="pdf", filename="cv.pdf")
    return msg.as_bytes()


def _text(message_id: str, body: str, subject: str = "Application", html: bool = False) -> bytes:
    ctype = "text/html" if html else "text/plain"
    return (
        f"From: Ann Applicant <ann@example.org>\r\nTo: jobs@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Mon, 02 Jun 2025 09:30:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {ctype}; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


GOOD = {
    "<json@agency.example>": _json_part("<json@agency.example>", '{"Name": "Ada Lovelace", "Role": "Engineer"}'),
    "<yaml@example.org>": _text("<yaml@example.org>", "Name: Grace Hopper\r\nRole: Admiral\r\n---\r\nThanks!"),
    "<html@example.org>": _text(
        "<html@example.org>", "<html><body><p>I would like to apply.</p><script>x()</script></body></html>", html=True
    ),
    # NUL and a lone surrogate inside the data: stored cleaned, never refused by the database
    "<hostile@agency.example>": _json_part("<hostile@agency.example>", '{"name": "Bad\\u0000Name\\ud800", "k": 1}'),
}
BAD_JSON = _json_part("<badjson@agency.example>", '{"name": "unterminated')
NOT_MAIL = b"\x00\x01 this is not a header line at all\r\n\r\nbody"


def _designate(config: Config, sessions: sessionmaker[Session], box: Mailbox, **kw: object) -> int:
    account_id = connect(config, sessions, box, **kw.pop("account", {}))  # type: ignore[arg-type]
    with sessions.begin() as s:
        return add_mailbox(s, config, None, account_id, **kw)  # type: ignore[arg-type]


def _folders(box: Mailbox) -> set[str]:
    with box.imap() as conn:
        _, data = conn.list()
    return {line.decode().rsplit(" ", 1)[-1].strip('"') for line in data if isinstance(line, bytes)}


def test_mail_is_parsed_moved_and_announced(config: Config, sessions: sessionmaker[Session], mailbox: Mailbox) -> None:
    _designate(config, sessions, mailbox)
    with sessions.begin() as s:
        org = s.scalar(select(InboundItem.org_id)) or 1
        add_subscription(s, config, org, "https://hooks.example.com/in", ["inbound.processed", "inbound.failed"])
    for raw in (*GOOD.values(), BAD_JSON, NOT_MAIL):
        mailbox.append(raw)

    result = run_once(config, sessions)

    assert (result.processed, result.failed, result.errors) == (4, 2, [])
    assert {"processed", "failed"} <= _folders(mailbox)
    assert mailbox.uids("INBOX") == []
    assert len(mailbox.uids("processed")) == 4 and len(mailbox.uids("failed")) == 2
    with sessions() as s:
        items = {i.message_id: i for i in list_items(s, 1)}
        deliveries = s.execute(select(WebhookDelivery.event, WebhookDelivery.payload)).all()
    assert items["<json@agency.example>"].data == {"name": "Ada Lovelace", "role": "Engineer"}
    assert [a.filename for a in items["<json@agency.example>"].attachments] == ["cv.pdf"]
    assert items["<yaml@example.org>"].data == {"name": "Grace Hopper", "role": "Admiral"}
    assert items["<yaml@example.org>"].data_source == "yaml"
    assert (
        "I would like to apply." in items["<html@example.org>"].text and "x()" not in items["<html@example.org>"].text
    )
    assert items["<hostile@agency.example>"].data["name"] == "BadName\ufffd"
    bad = items["<badjson@agency.example>"]
    assert bad.status == "failed" and bad.reason and "json" in bad.reason.lower() and bad.reason.endswith(".")
    not_mail = next(i for i in items.values() if i.message_id is None)
    assert not_mail.status == "failed" and "not an email message" in (not_mail.reason or "")
    shape = items["<json@agency.example>"].as_json()
    assert {"id", "message_id", "status", "reason", "data", "text", "attachments", "routed_to"} <= set(shape)
    assert shape["attachments"] == [{"id": shape["attachments"][0]["id"], "filename": "cv.pdf",
                                     "content_type": "application/pdf", "size": 11}]  # fmt: skip
    assert sorted(e for e, _ in deliveries) == ["inbound.failed"] * 2 + ["inbound.processed"] * 4
    assert {p["message_id"] for e, p in deliveries if e == "inbound.processed"} == set(GOOD)

    # nothing new: a second run takes nothing and moves nothing
    again = run_once(config, sessions)
    assert (again.processed, again.failed, again.moved) == (0, 0, 0)


def test_copy_delete_even_where_move_is_announced(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    box_id = _designate(config, sessions, mailbox, move="copy-delete", processed="Done", failed="Broken")
    for raw in GOOD.values():
        mailbox.append(raw)
    with sessions() as s:
        (info,) = load_mailboxes(s, mailbox_id=box_id)
    provider = open_mailbox(config, sessions, info)
    try:
        provider.list_ids(RemoteFolder("INBOX"))
        assert Capability.MOVE not in provider.capabilities  # Dovecot announces it; this mailbox does not use it
    finally:
        provider.close()

    assert run_once(config, sessions).processed == 4
    moved = mailbox.fetch_raw("Done")
    assert mailbox.uids("INBOX") == [] and len(moved) == 4  # moved, none lost, none twice
    assert {raw.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() for raw in moved.values()} == set(GOOD)


def test_target_folders_are_created_once_then_found_by_one_list(mailbox: Mailbox) -> None:
    provider = ImapProvider.open(mailbox.settings())
    try:
        first = ensure_targets(provider, ("processed", "failed"))
        assert set(first) == {"processed", "failed"} and {"processed", "failed"} <= _folders(mailbox)
        with mailbox.imap() as conn:
            _, subscribed = conn.lsub()
        assert {"processed", "failed"} <= {x.decode().rsplit(" ", 1)[-1].strip('"') for x in subscribed if x}

        before = provider.command_count
        assert ensure_targets(provider, ("processed", "failed")) == first
        assert provider.command_count - before == 1  # one LIST: no CREATE, no SUBSCRIBE on every run

        with mailbox.imap() as conn:  # an operator deleted failed/: the next run creates it again
            assert conn.delete("failed")[0] == "OK"
        ensure_targets(provider, ("processed", "failed"))
        assert "failed" in _folders(mailbox)
    finally:
        provider.close()


def test_a_server_without_move(config: Config, sessions: sessionmaker[Session], mailbox: Mailbox) -> None:
    _designate(config, sessions, mailbox, account={"disable_extensions": ["MOVE"]})
    for raw in (*GOOD.values(), NOT_MAIL):
        mailbox.append(raw)
    result = run_once(config, sessions)
    assert (result.processed, result.failed) == (4, 1)
    assert mailbox.uids("INBOX") == [] and len(mailbox.uids("processed")) == 4 and len(mailbox.uids("failed")) == 1


def test_fixed_by_hand_and_moved_back_updates_the_same_item(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    _designate(config, sessions, mailbox)
    mailbox.append(BAD_JSON)
    assert run_once(config, sessions).failed == 1
    with sessions() as s:
        (failed,) = list_items(s, 1, "failed")
    # the operator fixes the message in a mail client and moves it back into the source folder
    (uid,) = mailbox.uids("failed")
    mailbox.expunge(uid, "failed")
    mailbox.append(_json_part("<badjson@agency.example>", '{"name": "Fixed"}'))

    assert run_once(config, sessions).processed == 1
    with sessions() as s:
        items = list_items(s, 1)
    assert [(i.id, i.status, i.data) for i in items] == [(failed.id, "processed", {"name": "Fixed"})]
    assert mailbox.uids("INBOX") == [] and len(mailbox.uids("processed")) == 1 and mailbox.uids("failed") == []


def test_retry_after_the_size_limit_was_raised(env: dict[str, str], tmp_path: Path, mailbox: Mailbox) -> None:
    from postroom import db

    small = tmp_path / "small.toml"
    small.write_text("[inbound]\nmax_message_size = 2048\n")
    strict = load_config(small, env=env)
    engine = db.make_engine(strict.database)
    sessions = db.make_sessionmaker(engine)
    try:
        _designate(strict, sessions, mailbox)
        big = _text("<big@example.org>", "Name: Big\r\n---\r\n" + "lorem ipsum " * 400)
        mailbox.append(big)
        assert run_once(strict, sessions).failed == 1
        with sessions() as s:
            (item,) = list_items(s, 1)
        assert item.status == "failed" and "max_message_size" in (item.reason or "")
        assert len(mailbox.uids("failed")) == 1

        relaxed = load_config(env=env)  # the operator raised the limit
        view = retry_item(relaxed, sessions, 1, item.id)
        assert view.status == "processed" and view.data == {"name": "Big"} and view.id == item.id
        assert mailbox.uids("failed") == [] and len(mailbox.uids("processed")) == 1
        with sessions() as s:
            assert get_item(s, 1, item.id).status == "processed"
            assert s.scalar(select(func.count()).select_from(InboundItem)) == 1
    finally:
        engine.dispose()


def _bulk(n: int) -> list[bytes]:
    return [_text(f"<bulk-{i}@example.org>", f"Name: Person {i}\r\nNumber: {i}\r\n") for i in range(n)]


def test_exactly_once_across_a_sigkill(env: dict[str, str], tmp_path: Path, mailbox: Mailbox) -> None:
    """A `postroom inbound run --once` killed mid-run, then run again: every message processed
    once, none skipped, all moved."""
    from postroom import db

    conf = tmp_path / "batches.toml"
    conf.write_text("[inbound]\nbatch_size = 5\n")
    config = load_config(conf, env=env)
    engine = db.make_engine(config.database)
    sessions = db.make_sessionmaker(engine)
    n = 300
    try:
        _designate(config, sessions, mailbox)
        with mailbox.imap() as conn:
            for raw in _bulk(n):
                conn.append("INBOX", None, None, raw)
        child_env = {**os.environ, **env, "POSTROOM_CONFIG": str(conf), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "inbound", "run", "--once", "--json"],
            cwd=ROOT,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sessions() as s:
                taken = s.scalar(select(func.count()).select_from(InboundItem)) or 0
            if taken >= 40 or proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with sessions() as s:  # the killed run may have committed a few more before the signal landed
            taken = s.scalar(select(func.count()).select_from(InboundItem)) or 0
        assert 0 < taken < n, f"the run was not interrupted mid-way ({taken} taken)"

        result = run_once(config, sessions)
        with sessions() as s:
            rows = s.execute(select(InboundItem.message_id, InboundItem.status, InboundItem.moved)).all()
        assert len(rows) == n and {m for m, _, _ in rows} == {f"<bulk-{i}@example.org>" for i in range(n)}
        assert all(status == "processed" and moved for _, status, moved in rows)
        assert result.processed == n - taken  # the rest, none twice
        assert mailbox.uids("INBOX") == [] and len(mailbox.uids("processed")) == n
    finally:
        engine.dispose()


def test_unsupported_backend_and_bad_input_are_one_sentence(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    import pytest

    from services.inbound import InboundError

    account_id = connect(config, sessions, mailbox)
    with sessions.begin() as s:
        add_mailbox(s, config, None, account_id)
    with sessions.begin() as s, pytest.raises(InboundError, match="processing mailbox already"):
        add_mailbox(s, config, None, account_id)
    with sessions.begin() as s, pytest.raises(InboundError, match="must be one of auto, copy-delete"):
        add_mailbox(s, config, None, account_id, move="sideways")
    with sessions.begin() as s, pytest.raises(InboundError, match="no mail account 999"):
        add_mailbox(s, config, None, 999)
    with sessions.begin() as s:
        other = MailAccount(org_id=1, email="hr@pop.example", provider="pop3", settings={}, secret=b"sealed")
        s.add(other)
        s.flush()
        other_id = other.id
    with sessions.begin() as s, pytest.raises(InboundError) as refused:
        add_mailbox(s, config, None, other_id)
    assert str(refused.value) == (
        f"Account {other_id} (pop3) cannot be a processing mailbox: its backend does not support it "
        "(IMAP, Gmail, Microsoft 365 and Exchange accounts can)."
    )
    assert json.loads(json.dumps(run_once(config, sessions).as_json()))["errors"] == []


def test_the_embedded_worker_runs_the_processing_mailboxes(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    from sync.worker import Worker

    _designate(config, sessions, mailbox)
    mailbox.append(GOOD["<yaml@example.org>"])
    Worker(config, sessions).run(max_passes=1)
    assert mailbox.uids("INBOX") == [] and len(mailbox.uids("processed")) == 1
    with sessions() as s:
        assert [i.data for i in list_items(s, 1)] == [{"name": "Grace Hopper", "role": "Admiral"}]


def test_the_celery_beat_schedules_the_inbound_task(config: Config) -> None:
    from sync.tasks import INBOUND_TASK, celery_settings

    entry = celery_settings(config)["beat_schedule"][INBOUND_TASK]
    assert entry["task"] == INBOUND_TASK and entry["schedule"] == config.inbound.interval


def test_the_accounts_http_connect_proxy_is_used_and_its_connection_closed(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    proxy = ConnectProxy()
    try:
        _designate(config, sessions, mailbox, account={"proxy": f"http://127.0.0.1:{proxy.port}"})
        mailbox.append(GOOD["<yaml@example.org>"])

        assert run_once(config, sessions).processed == 1

        assert proxy.tunnels == [f"127.0.0.1:{mailbox.rig.ports['imap']}"]  # one connection, through the proxy
        deadline = time.monotonic() + 5
        while proxy.open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.open == 0 and b" LOGOUT\r\n" in proxy.sent[0]  # logged out and closed after the run
    finally:
        proxy.close()
