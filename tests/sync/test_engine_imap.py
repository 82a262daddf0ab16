"""What only an IMAP account does, synced by the real engine against a real Dovecot, on SQLite and
on PostgreSQL: a server without CONDSTORE/QRESYNC, a message no cloud service would store (not MIME at
all), a server that does not answer. What every backend does is in test_engine_contract.py."""

from __future__ import annotations

from sqlalchemy import select

from postroom.config import Config
from postroom.models import Email, Folder, MailAccount, MessageCopy
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, copies, sync_account, sync_ok


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
