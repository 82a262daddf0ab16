"""The sync engine end to end against a real Dovecot, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from postroom.config import Config
from postroom.models import Body, Email, Folder, HistoryEntry, MailAccount, MessageCopy, Thread
from sync.history import add_applicant, applicant_history
from sync.scheduler import sync_account
from sync.threads import account_threads
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, copies, count, history_ids, sync_ok

JANE = "Jane Applicant <jane.doe@gmail.com>"


def _at(days: int) -> datetime:
    return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=days)


def test_initial_then_incremental_sync_reflects_new_flags_and_expunges(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    uids = [mailbox.append(make_message(message_id=f"<m{i}@x.test>", subject=f"Hello {i}")) for i in range(5)]
    account_id = connect(config, sessions, mailbox)

    first = sync_ok(config, sessions, account_id)
    assert first.new == 5
    assert copies(sessions, account_id) == sorted(f"<m{i}@x.test>" for i in range(5))

    again = sync_ok(config, sessions, account_id)
    assert again.new == 0 and sum(f.changed + f.removed for f in again.folders) == 0

    mailbox.append(make_message(message_id="<m5@x.test>"))
    mailbox.set_flags(uids[0], ["\\Seen", "\\Flagged"])
    mailbox.expunge(uids[1])
    third = sync_ok(config, sessions, account_id)
    assert third.new == 1
    assert copies(sessions, account_id) == sorted(f"<m{i}@x.test>" for i in (0, 2, 3, 4, 5))
    with sessions() as s:
        flags = s.scalar(select(MessageCopy.flags).where(MessageCopy.remote_id == str(uids[0])))
    assert flags == "\\Flagged \\Seen"


def test_fallback_without_condstore_reflects_the_same_changes(config: Config, sessions, mailbox: Mailbox) -> None:
    uids = [mailbox.append(make_message(message_id=f"<f{i}@x.test>")) for i in range(4)]
    account_id = connect(config, sessions, mailbox, disable_extensions=["CONDSTORE", "QRESYNC"])
    sync_ok(config, sessions, account_id)
    mailbox.expunge(uids[2])
    mailbox.set_flags(uids[3], ["\\Answered"])
    mailbox.append(make_message(message_id="<f4@x.test>"))
    result = sync_ok(config, sessions, account_id)
    assert result.new == 1
    assert sum(f.changed for f in result.folders) == 1  # only the message whose flags changed
    assert copies(sessions, account_id) == ["<f0@x.test>", "<f1@x.test>", "<f3@x.test>", "<f4@x.test>"]
    with sessions() as s:
        assert s.scalar(select(MessageCopy.flags).where(MessageCopy.remote_id == str(uids[3]))) == "\\Answered"


def test_uidvalidity_change_resyncs_without_duplicates(config: Config, sessions, mailbox: Mailbox) -> None:
    for i in range(3):
        mailbox.append(make_message(message_id=f"<u{i}@x.test>", from_=JANE), folder="Archive")
    account_id = connect(config, sessions, mailbox)
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane", ["jane.doe@gmail.com"])
    sync_ok(config, sessions, account_id)
    assert len(history_ids(sessions, applicant.id)) == 3

    # Recreate the folder on the server: same messages, new UIDVALIDITY and new UIDs.
    raws = list(mailbox.fetch_raw("Archive").values())
    mailbox.rig.doveadm("mailbox", "delete", "-u", mailbox.address, "Archive")
    mailbox.rig.doveadm("mailbox", "create", "-u", mailbox.address, "Archive")
    for raw in raws:
        mailbox.append(raw, folder="Archive")

    result = sync_ok(config, sessions, account_id)
    assert [f.resynced for f in result.folders if f.name == "Archive"] == [True]
    assert copies(sessions, account_id, "archive") == ["<u0@x.test>", "<u1@x.test>", "<u2@x.test>"]
    assert count(sessions, Email) == 3
    assert history_ids(sessions, applicant.id) == ["<u0@x.test>", "<u1@x.test>", "<u2@x.test>"]


def test_threads_join_children_before_parents_and_never_merge_on_subject_alone(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    # The reply arrives (and is synced) before the message it answers.
    mailbox.append(
        make_message(
            message_id="<reply@x.test>",
            subject="Re: Interview",
            in_reply_to="<root@x.test>",
            references=["<root@x.test>"],
            date=_at(1),
        )
    )
    account_id = connect(config, sessions, mailbox)
    sync_ok(config, sessions, account_id)
    mailbox.append(make_message(message_id="<root@x.test>", subject="Interview", date=_at(0)), folder="Sent")
    # Two unrelated conversations that both say "Re: Hello".
    mailbox.append(make_message(message_id="<h1@x.test>", subject="Re: Hello", from_="a@one.test", date=_at(2)))
    mailbox.append(make_message(message_id="<h2@x.test>", subject="Re: Hello", from_="b@two.test", date=_at(2)))
    sync_ok(config, sessions, account_id)

    with sessions() as s:
        threads = {tuple(t["message_ids"]): t for t in account_threads(s, account_id)}  # type: ignore[arg-type]
    assert ("<root@x.test>", "<reply@x.test>") in threads
    assert ("<h1@x.test>",) in threads and ("<h2@x.test>",) in threads
    assert threads[("<root@x.test>", "<reply@x.test>")]["subject"] in ("Interview", "Re: Interview")


def test_a_message_linking_two_threads_merges_them(config: Config, sessions, mailbox: Mailbox) -> None:
    mailbox.append(make_message(message_id="<a@x.test>", subject="A", date=_at(0)))
    mailbox.append(make_message(message_id="<b@x.test>", subject="B", date=_at(0)))
    account_id = connect(config, sessions, mailbox)
    sync_ok(config, sessions, account_id)
    assert count(sessions, Thread) == 2
    mailbox.append(
        make_message(message_id="<c@x.test>", subject="Re: A", references=["<a@x.test>", "<b@x.test>"], date=_at(1))
    )
    sync_ok(config, sessions, account_id)
    with sessions() as s:
        (only,) = account_threads(s, account_id)
    assert sorted(only["message_ids"]) == ["<a@x.test>", "<b@x.test>", "<c@x.test>"]  # type: ignore[arg-type]
    assert count(sessions, Thread) == 1


def test_same_message_in_two_mailboxes_is_one_thread_and_one_history_entry(
    config: Config, sessions, new_mailbox
) -> None:
    boxes = [new_mailbox(), new_mailbox()]
    raw = make_message(
        message_id="<shared@x.test>", subject="Application", from_=JANE, to=f"{boxes[0].address}, {boxes[1].address}"
    )
    for box in boxes:
        box.append(raw)
    ids = [connect(config, sessions, box) for box in boxes]
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane", ["Jane.Doe+jobs@googlemail.com"])  # canonical: janedoe@gmail.com
    for account_id in ids:
        sync_ok(config, sessions, account_id)

    assert count(sessions, Email) == 1 and count(sessions, Thread) == 1 and count(sessions, HistoryEntry) == 1
    with sessions() as s:
        (item,) = applicant_history(s, applicant.id)
        t1 = account_threads(s, ids[0])
        t2 = account_threads(s, ids[1])
    assert item.message_id == "<shared@x.test>" and item.direction == "inbound"
    assert item.account_ids == sorted(ids)
    assert t1[0]["id"] == t2[0]["id"]


def test_history_direction_and_backfill_when_applicant_added_later(config: Config, sessions, mailbox: Mailbox) -> None:
    mailbox.append(make_message(message_id="<in@x.test>", from_=JANE, to=mailbox.address, date=_at(0)))
    mailbox.append(
        make_message(
            message_id="<out@x.test>",
            from_=mailbox.address,
            to="jane.doe@gmail.com",
            in_reply_to="<in@x.test>",
            date=_at(1),
        ),
        folder="Sent",
    )
    mailbox.append(make_message(message_id="<other@x.test>", from_="someone@else.test", date=_at(2)))
    account_id = connect(config, sessions, mailbox)
    sync_ok(config, sessions, account_id)
    assert count(sessions, Body) == 0  # no applicant yet: headers only, private mail not hoarded

    # Added later: history comes from the header index at once, no server needed.
    mailbox.rig.doveadm("kick", mailbox.address, check=False)
    with sessions.begin() as s:
        applicant, backfilled = add_applicant(s, "Jane", ["JANE.DOE@gmail.com"])
    assert backfilled == 2
    with sessions() as s:
        items = applicant_history(s, applicant.id)
    assert [(i.message_id, i.direction) for i in items] == [("<in@x.test>", "inbound"), ("<out@x.test>", "outbound")]
    assert items[0].thread_id == items[1].thread_id

    # The next pass fetches exactly the bodies that now involve an applicant.
    result = sync_ok(config, sessions, account_id)
    assert sum(f.bodies for f in result.folders) == 2
    with sessions() as s:
        stored = sorted(s.scalars(select(Email.message_id).where(Email.body_id.is_not(None))))
    assert stored == ["<in@x.test>", "<out@x.test>"]


def test_malformed_message_is_quarantined_and_does_not_block_the_folder(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    from dataclasses import replace

    config = replace(config, sync=replace(config.sync, body_policy="all"))
    mailbox.append(make_message(message_id="<ok1@x.test>"))
    mailbox.append(b"\x00\x01\x02 not a mail message at all \xff\xfe" * 20)
    mailbox.append(make_message(message_id="<cs@x.test>", subject="=?x-unknown-charset?Q?Caf=E9?=", body="caf\u00e9"))
    mailbox.append(make_message(message_id="<ok2@x.test>"))
    account_id = connect(config, sessions, mailbox)
    result = sync_ok(config, sessions, account_id)
    inbox = next(f for f in result.folders if f.name == "INBOX")
    assert inbox.new == 4
    with sessions() as s:
        reasons = [r for r in s.scalars(select(MessageCopy.quarantine_reason)) if r]
        subject = s.scalar(select(Email.subject).where(Email.message_id == "<cs@x.test>"))
        bodies = s.scalar(select(Email.body_id).where(Email.message_id == "<ok2@x.test>"))
    assert len(reasons) == 1 and "malformed" in reasons[0]
    assert subject is not None and subject.startswith("Caf")  # unknown charset decoded with a fallback
    assert bodies is not None  # the message after the broken one was stored


def test_wrong_password_marks_only_that_account_reconnect_needed(config: Config, sessions, new_mailbox) -> None:
    mailbox = new_mailbox()
    good = connect(config, sessions, mailbox)
    mailbox.append(make_message(message_id="<g@x.test>"))
    other = new_mailbox()
    other.append(make_message(message_id="<never-seen@x.test>"))  # the account exists and has mail
    other.password = "wrong-password"
    bad = connect(config, sessions, other)

    from sync.scheduler import sync_all

    results = {r.account_id: r for r in sync_all(config, sessions)}
    assert results[good].ok and results[good].new == 1
    assert not results[bad].ok and results[bad].status == "reconnect-needed"
    with sessions() as s:
        account = s.get(MailAccount, bad)
        assert account.status == "reconnect-needed" and "Login failed" in (account.last_error or "")


def test_unreachable_server_is_reported_not_raised(config: Config, sessions, mailbox: Mailbox) -> None:
    account_id = connect(config, sessions, mailbox)
    with sessions.begin() as s:
        account = s.get(MailAccount, account_id)
        account.settings = {**account.settings, "imap_port": _closed_port()}
    result = sync_account(config, sessions, account_id)
    assert not result.ok and result.status == "backing-off" and "unavailable" in (result.error or "")
    with sessions() as s:
        assert s.get(MailAccount, account_id).last_error == result.error
        assert s.scalars(select(Folder)).first() is None


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
