"""No email can stop a mailbox: hostile and odd headers, interleaved with normal mail,
synced from a real Dovecot into SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from postroom.config import Config
from postroom.models import Email, Folder, MailAccount, MessageCopy
from sync.history import add_applicant
from sync.quarantine import list_quarantined
from tests.rig.corpus import Item
from tests.rig.fixtures import Mailbox, make_message
from tests.rig.poison import normal_messages, poison_cases
from tests.sync.helpers import connect, copies, sync_ok

WHEN = dt.datetime(2026, 3, 3, 9, 0, tzinfo=dt.UTC)


def _item(raw: bytes, mid: str = "") -> Item:
    return Item(raw=raw, date=WHEN, flags=(), msgid=mid, thread=0)


def test_poison_headers_are_indexed_or_quarantined_and_every_folder_syncs(
    config: Config, sessions, mailbox: Mailbox
) -> None:
    poison = list(poison_cases())
    normal = list(normal_messages(len(poison) + 1))
    inbox: list[Item] = []
    for i, case in enumerate(poison):  # every poison message between two normal ones
        inbox.append(_item(normal[i][1], normal[i][0]))
        inbox.append(_item(case.raw))
    inbox.append(_item(normal[-1][1], normal[-1][0]))
    mailbox.seed(inbox)
    sent = list(normal_messages(3, prefix="sent"))
    archive = list(normal_messages(3, prefix="archived"))
    mailbox.seed([_item(raw, mid) for mid, raw in sent], folder="Sent")
    mailbox.seed([_item(raw, mid) for mid, raw in archive], folder="Archive")
    account_id = connect(config, sessions, mailbox)
    with sessions.begin() as s:  # bodies of Ann's mail are wanted, poison included
        add_applicant(s, "Ann", ["ann@example.org"])

    result = sync_ok(config, sessions, account_id)  # headers, then the bodies the policy wants

    assert result.status == "active"
    indexed = copies(sessions, account_id)
    assert all(mid in indexed for mid, _ in normal)
    assert sorted(copies(sessions, account_id, "sent")) == sorted(mid for mid, _ in sent)
    assert sorted(copies(sessions, account_id, "archive")) == sorted(mid for mid, _ in archive)
    with sessions() as s:
        inbox_copies = s.execute(
            select(MessageCopy.remote_id, MessageCopy.email_id)
            .join(Folder, Folder.id == MessageCopy.folder_id)
            .where(Folder.role == "inbox")
        ).all()
        quarantined = {q.remote_id for q in list_quarantined(s, account_id=account_id)}
        status = s.get(MailAccount, account_id).status
    assert len(inbox_copies) == len(inbox)  # every message is accounted for, none twice
    for remote_id, email_id in inbox_copies:
        assert email_id is not None or remote_id in quarantined, remote_id
    assert status == "active"

    # The cursor moved past the poison: the next pass is idle, new mail still arrives.
    again = sync_ok(config, sessions, account_id)
    assert again.new == 0
    mailbox.append(make_message(message_id="<after-the-poison@x.test>"))
    third = sync_ok(config, sessions, account_id)
    assert third.new == 1 and "<after-the-poison@x.test>" in copies(sessions, account_id)
    with sessions() as s:
        stored = {m: b for m, b in s.execute(select(Email.message_id, Email.body_id))}
    assert stored["<normal-0@x.test>"] is not None  # bodies after the poison were stored too
