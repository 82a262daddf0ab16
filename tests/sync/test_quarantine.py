"""One message the database refuses, or the server refuses or garbles on every fetch, is quarantined
with the reason; the rest of its batch, its folder and its account carry on, and `postroom quarantine
retry` brings it back once the cause is gone. Real Dovecot, the Gmail stand-in, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select, text

from postroom import db
from postroom.config import Config
from postroom.models import Email, Folder, MailAccount, MessageCopy
from services.accounts import add_gmail_account
from services.applicants import add_applicant
from services.quarantine import list_quarantined
from tests.cli.harness import Cli
from tests.rig.chaos import ChaosProxy
from tests.rig.corpus import Item
from tests.rig.fixtures import Mailbox, make_message
from tests.rig.poison import normal_messages
from tests.standins.gmail_rig import ADDRESS, gmail_rig
from tests.sync.helpers import connect, copies, sync_ok

SECRET_SUBJECT = "refuse-me: the salary we offered Jane"


@pytest.fixture
def cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(env, monkeypatch, capsys)


@contextmanager
def refusing(config: Config, table: str, condition: str) -> Iterator[None]:
    """Make the database itself refuse rows of ``table`` matching ``condition`` (SQL on NEW),
    as a stricter server or a constraint added later would: a trigger that raises."""
    engine = db.make_engine(config.database)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for op in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER refuse_{op.lower()} BEFORE {op} ON {table} WHEN {condition} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
                )
        else:
            condition = condition.replace("%", "%%")  # psycopg: % starts a placeholder
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF {condition} THEN RAISE EXCEPTION 'refused by the test trigger' USING ERRCODE = 'check_violation'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    try:
        yield
    finally:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER refuse_insert")
                conn.exec_driver_sql("DROP TRIGGER refuse_update")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER refuse ON {table}")
        engine.dispose()


def _item(raw: bytes) -> Item:
    import datetime as dt

    return Item(raw=raw, date=dt.datetime(2026, 3, 3, tzinfo=dt.UTC), flags=(), msgid="", thread=0)


def test_a_message_the_database_refuses_is_quarantined_and_the_rest_of_its_batch_is_indexed(
    config: Config, sessions, mailbox: Mailbox, cli: Cli
) -> None:
    normal = list(normal_messages(600))  # two header batches of 500
    refused = {3: "<refused-a@x.test>", 250: "<refused-b@x.test>", 555: "<refused-c@x.test>"}
    items = []
    for i, (_mid, raw) in enumerate(normal):
        items.append(_item(raw))
        if i in refused:
            items.append(_item(make_message(message_id=refused[i], subject=SECRET_SUBJECT)))
    mailbox.seed(items)
    mailbox.seed([_item(raw) for _, raw in normal_messages(2, prefix="sent")], folder="Sent")
    account_id = cli.add_imap(mailbox)

    with refusing(config, "emails", "NEW.subject LIKE 'refuse-me%'"):
        _, out, _ = cli("sync", "--once")
        assert "600 new" not in out and "3 quarantined" in out, out
        listed = cli.json("quarantine", "list")
        again = cli.json("sync", "--once")

    assert sorted(q["message_id"] for q in listed) == sorted(refused.values())  # type: ignore[union-attr]
    for q in listed:  # type: ignore[union-attr]
        assert (q["account"], q["folder"], q["stage"]) == (account_id, "INBOX", "headers")
        assert re.fullmatch(
            r"cannot be stored: (IntegrityError|CheckViolation): refused by the test trigger", q["reason"]
        )
        assert q["when"]
    assert sorted(copies(sessions, account_id)) == sorted(mid for mid, _ in normal)
    assert sorted(copies(sessions, account_id, "sent")) == ["<sent-0@x.test>", "<sent-1@x.test>"]
    assert [(r["ok"], r["status"], r["new"]) for r in again] == [(True, "active", 0)]  # type: ignore[index]
    with sessions() as s:
        account = s.get(MailAccount, account_id)
        assert account.status == "active" and account.last_error is None
        # nothing of the message itself reached an error text: no subject, no SQL, no parameters
        reasons = " ".join(q.reason for q in list_quarantined(s))
    assert "salary" not in reasons and "INSERT" not in reasons and "parameters" not in reasons

    # The cause is gone (an upgrade): retry brings every one of them in, and the list is empty.
    retried = cli.json("quarantine", "retry")
    assert retried["requested"] == 3 and retried["still_quarantined"] == []  # type: ignore[index]
    assert sorted(copies(sessions, account_id)) == sorted([mid for mid, _ in normal] + list(refused.values()))
    assert cli.json("quarantine", "list") == []
    _, out, _ = cli("quarantine", "list")
    assert out.strip() == "No quarantined messages."


def test_a_retry_that_fails_again_keeps_the_entry_with_the_new_attempt(
    config: Config, sessions, mailbox: Mailbox, cli: Cli
) -> None:
    mailbox.append(make_message(message_id="<ok@x.test>"))
    mailbox.append(make_message(message_id="<bad@x.test>", subject=SECRET_SUBJECT))
    account_id = cli.add_imap(mailbox)
    with refusing(config, "emails", "NEW.subject LIKE 'refuse-me%'"):
        cli("sync", "--once")
        code, out, _ = cli("quarantine", "retry", ok=False)
        listed = cli.json("quarantine", "list", "--account", str(account_id))
    assert code == 0 and "1 message(s) retried: 0 indexed or stored, 1 still quarantined." in out
    assert [(q["message_id"], q["attempts"], q["retry_requested"]) for q in listed] == [("<bad@x.test>", 2, False)]  # type: ignore[index]
    code, _, err = cli("quarantine", "retry", "999999", ok=False)
    assert (
        code == 1
        and err.strip() == "postroom: error: No quarantined message with id 999999; see 'postroom quarantine list'."
    )


def test_a_failure_in_one_folder_fails_that_folder_only(config: Config, sessions, mailbox: Mailbox) -> None:
    mailbox.append(make_message(message_id="<in@x.test>"))
    mailbox.append(make_message(message_id="<archived@x.test>"), folder="Archive")
    mailbox.append(make_message(message_id="<sent@x.test>"), folder="Sent")
    account_id = connect(config, sessions, mailbox)
    # The database refuses to save the Archive folder's state: not a provider error, an exception
    # the engine did not expect. The other folders (those after it too) sync; the account is fine.
    with refusing(config, "folders", "NEW.name = 'Archive' AND NEW.cursor IS NOT NULL"):
        from tests.sync.helpers import sync_account

        result = sync_account(config, sessions, account_id)
    assert result.ok and result.status == "active"
    failed = {f.name: f.error for f in result.folders if f.error}
    assert list(failed) == ["Archive"] and re.match(
        r"Internal error: (IntegrityError|CheckViolation): refused", failed["Archive"]
    )
    assert copies(sessions, account_id) == ["<in@x.test>"]
    assert copies(sessions, account_id, "sent") == ["<sent@x.test>"]
    with sessions() as s:
        assert s.scalar(select(Folder.last_error).where(Folder.name == "Archive")) == failed["Archive"]
    # With the cause gone, the next pass syncs the folder; nothing was doubled.
    result = sync_ok(config, sessions, account_id)
    assert copies(sessions, account_id, "archive") == ["<archived@x.test>"]


def test_an_account_backs_off_only_when_every_folder_failed(config: Config, sessions, mailbox: Mailbox) -> None:
    mailbox.append(make_message(message_id="<in@x.test>"))
    account_id = connect(config, sessions, mailbox)
    with refusing(config, "folders", "NEW.cursor IS NOT NULL"):
        from tests.sync.helpers import sync_account

        result = sync_account(config, sessions, account_id)
    assert not result.ok and result.status == "backing-off"
    assert re.match(r"Every folder failed: Internal error: (IntegrityError|CheckViolation)", result.error or "")


def _garble_uid(uid: int):  # type: ignore[no-untyped-def]
    """What a broken server sends for one message: its FETCH answer (headers or body) unreadable,
    every time, while the connection and every other message stay fine."""
    pattern = re.compile(rb"\(UID %d (?=.*BODY\[)" % uid)
    return lambda data: pattern.sub(b"(UID %dx " % uid, data) if b"BODY[" in data else data


def test_a_message_the_server_garbles_on_every_fetch_is_quarantined(
    config: Config, sessions, mailbox: Mailbox, cli: Cli
) -> None:
    uids = [mailbox.append(make_message(message_id=f"<m{i}@x.test>", from_="Ann <ann@example.org>")) for i in range(5)]
    with ChaosProxy(mailbox.rig.ports["imap"]) as proxy:
        account_id = connect(config, sessions, mailbox, imap_port=proxy.port)
        proxy.rewrite(_garble_uid(uids[2]))
        result = sync_ok(config, sessions, account_id)  # no folder error at all
        assert result.new == 4 and sum(f.quarantined for f in result.folders) == 1
        assert copies(sessions, account_id) == ["<m0@x.test>", "<m1@x.test>", "<m3@x.test>", "<m4@x.test>"]
        with sessions() as s:
            (entry,) = list_quarantined(s)
        assert (entry.remote_id, entry.stage, entry.folder) == (str(uids[2]), "headers", "INBOX")
        assert entry.reason.startswith("the server refused or garbled it on every fetch: ProtocolError")
        assert sync_ok(config, sessions, account_id).new == 0  # the cursor moved past it

        proxy.rewrite(None)  # the server is fixed
        retried = cli.json("quarantine", "retry")
        assert retried["still_quarantined"] == []  # type: ignore[index]
        assert copies(sessions, account_id) == [f"<m{i}@x.test>" for i in range(5)]

        # Bodies: Ann becomes an applicant, so her bodies are wanted; one of them is garbled.
        with sessions.begin() as s:
            add_applicant(s, "Ann", ["ann@example.org"])
        proxy.rewrite(_garble_uid(uids[4]))
        result = sync_ok(config, sessions, account_id)
        assert sum(f.bodies for f in result.folders) == 4 and sum(f.quarantined for f in result.folders) == 1
        with sessions() as s:
            (entry,) = list_quarantined(s)
            body_error = s.scalar(select(Email.body_error).where(Email.message_id == "<m4@x.test>"))
        assert (entry.stage, entry.message_id) == ("body", "<m4@x.test>") and body_error == entry.reason
        assert sum(f.bodies for f in sync_ok(config, sessions, account_id).folders) == 0  # not fetched again
        proxy.rewrite(None)
        cli.json("quarantine", "retry")
    with sessions() as s:
        assert s.scalar(select(Email.body_id).where(Email.message_id == "<m4@x.test>")) is not None
        assert list_quarantined(s) == []


def test_a_server_that_refuses_every_message_fails_the_folder_and_quarantines_nothing(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    uids = [mailbox.append(make_message(message_id=f"<m{i}@x.test>")) for i in range(4)]
    with ChaosProxy(mailbox.rig.ports["imap"]) as proxy:
        account_id = connect(config, sessions, mailbox, imap_port=proxy.port)
        garblers = [_garble_uid(u) for u in uids]

        def garble_all(data: bytes) -> bytes:
            for g in garblers:
                data = g(data)
            return data

        proxy.rewrite(garble_all)
        from tests.sync.helpers import sync_account

        result = sync_account(config, sessions, account_id)
        inbox = next(f for f in result.folders if f.name == "INBOX")
        assert inbox.error and "unreadable response" in inbox.error
        assert result.ok  # the other folders synced
        with sessions() as s:
            assert list_quarantined(s) == []
        proxy.rewrite(None)
        sync_ok(config, sessions, account_id)
    assert copies(sessions, account_id) == [f"<m{i}@x.test>" for i in range(4)]


@pytest.fixture
def gmail_config(config: Config) -> Iterator[tuple[Config, object]]:
    with gmail_rig() as rig:
        yield rig.config(config), rig


@pytest.mark.parametrize("status", [400, 500])
def test_one_bad_part_of_a_gmail_batch_is_quarantined(gmail_config, sessions, status: int) -> None:  # type: ignore[no-untyped-def]
    config, rig = gmail_config
    ids = [rig.deliver(make_message(message_id=f"<g{i}@x.test>")) for i in range(6)]
    rig.standin.break_message(ids[3], status)
    with sessions.begin() as s:
        account = add_gmail_account(s, config, ADDRESS, rig.refresh_token)
        account.settings = {**account.settings, "retry_base": 0.01, "retry_budget": 0.5}
        account_id = account.id
    result = sync_ok(config, sessions, account_id)
    assert sorted(copies(sessions, account_id)) == sorted(f"<g{i}@x.test>" for i in range(6) if i != 3)
    with sessions() as s:
        entries = list_quarantined(s)
        status_now = s.get(MailAccount, account_id).status
    assert {e.remote_id for e in entries} == {ids[3]} and status_now == "active"
    assert all(f"{status}" in e.reason for e in entries)
    assert result.ok
    rig.standin.mend_message(ids[3])
    with sessions.begin() as s:
        from services.quarantine import request_retry

        request_retry(s)
    sync_ok(config, sessions, account_id)
    assert len(copies(sessions, account_id)) == 6
    with sessions() as s:
        assert list_quarantined(s) == []
        assert s.scalar(select(text("count(*)")).select_from(MessageCopy).where(MessageCopy.email_id.is_(None))) == 0


def test_a_body_over_the_size_limit_is_recorded_not_fetched_and_retried_after_raising_it(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    small = dataclasses.replace(config, sync=dataclasses.replace(config.sync, max_message_size=8192))
    mailbox.append(make_message(message_id="<small@x.test>", from_="Ann <ann@example.org>"))
    mailbox.append(make_message(message_id="<big@x.test>", from_="Ann <ann@example.org>", body="x" * 20000))
    account_id = connect(small, sessions, mailbox)
    with sessions.begin() as s:
        add_applicant(s, "Ann", ["ann@example.org"])
    result = sync_ok(small, sessions, account_id)
    assert sum(f.bodies for f in result.folders) == 1 and sum(f.quarantined for f in result.folders) == 1
    with sessions() as s:
        (entry,) = list_quarantined(s)
        stored = dict(s.execute(select(Email.message_id, Email.body_id)).tuples().all())
    assert (entry.message_id, entry.stage) == ("<big@x.test>", "body")
    assert re.fullmatch(
        r"larger than sync\.max_message_size \(\d+ bytes, the limit is 8192\); not stored", entry.reason
    )
    assert stored["<small@x.test>"] is not None and stored["<big@x.test>"] is None
    again = sync_ok(small, sessions, account_id)  # recorded: not fetched again every pass
    assert sum(f.bodies + f.quarantined for f in again.folders) == 0

    with sessions.begin() as s:  # the limit is raised (config), and the operator asks for a retry
        from services.quarantine import request_retry

        request_retry(s)
    sync_ok(config, sessions, account_id)
    with sessions() as s:
        assert s.scalar(select(Email.body_id).where(Email.message_id == "<big@x.test>")) is not None
        assert list_quarantined(s) == []


@pytest.mark.parametrize(
    ("sizes", "chunks"),
    [
        ([100] * 120, [50, 50, 20]),  # at most 50 a chunk
        ([400_000] * 6, [2, 2, 2]),  # and at most body_chunk_bytes (1 MB here) by the index's sizes
        ([2_000_000, 10, 10], [1, 2]),  # a message larger than a chunk goes alone
        ([None, 10, None], [1, 1, 1]),  # a size the index does not know counts as a whole chunk
        ([], []),
    ],
)
def test_bodies_are_fetched_in_chunks_bounded_by_count_and_size(config: Config, sizes, chunks) -> None:  # type: ignore[no-untyped-def]
    from sync.bodies import BodyFetcher

    cfg = dataclasses.replace(config, sync=dataclasses.replace(config.sync, body_chunk_bytes=1_000_000))
    fetcher = BodyFetcher(None, cfg, 1)  # type: ignore[arg-type]
    wanted = [(str(i), i, size) for i, size in enumerate(sizes)]
    assert [len(c) for c in fetcher._chunks(wanted)] == chunks
