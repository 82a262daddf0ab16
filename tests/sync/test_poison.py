"""No email can stop a mailbox: hostile and odd headers, interleaved with normal mail,
synced from a real Dovecot into SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from postroom.config import Config
from postroom.models import Email, Folder, MailAccount, MessageCopy
from services.applicants import add_applicant
from services.quarantine import list_quarantined
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
    assert quarantined == set()  # cleaned where they were parsed, every one of them could be indexed
    assert status == "active"
    with sessions() as s:
        subjects = dict(s.execute(select(Email.message_id, Email.subject)).tuples().all())
    # (Dovecot serves a raw NUL as 0x80, which the cp1252 fallback reads as "€")
    assert subjects["<poison-nul-raw-subject@x.test>"] in ("helloworld", "hello€world")
    assert subjects["<poison-nul-encoded-subject@x.test>"] == "ab"
    assert subjects["<poison-utf7-lone-surrogate-subject@x.test>"] == "\ufffd"
    assert len(subjects["<poison-subject-1mb@x.test>"]) == 1000

    # The cursor moved past the poison: the next pass is idle, new mail still arrives.
    again = sync_ok(config, sessions, account_id)
    assert again.new == 0
    mailbox.append(make_message(message_id="<after-the-poison@x.test>"))
    third = sync_ok(config, sessions, account_id)
    assert third.new == 1 and "<after-the-poison@x.test>" in copies(sessions, account_id)
    with sessions() as s:
        stored = {m: b for m, b in s.execute(select(Email.message_id, Email.body_id))}
    assert stored["<normal-0@x.test>"] is not None  # bodies after the poison were stored too


def test_a_reused_message_id_never_hides_an_applicants_message(config: Config, sessions, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    """Two different messages with one Message-ID (a careless mailer, or a sender doing it on
    purpose) stay two emails, both marked; the same message seen in two mailboxes stays one."""
    first, second = new_mailbox(), new_mailbox()
    # Mallory's message arrives first, in the second recruiter's mailbox, with the id Jane's will have.
    second.append(make_message(message_id="<dup@x.test>", subject="Cheap watches", from_="mallory@spam.test"))
    janes = make_message(
        message_id="<dup@x.test>", subject="My application", from_="Jane <jane.doe@gmail.com>", date=WHEN
    )
    first.append(janes)
    second.append(janes)  # and the same message of Jane's, in the second mailbox too
    with sessions.begin() as s:
        jane, _ = add_applicant(s, "Jane", ["jane.doe@gmail.com"])
        jane_id = jane.id
    b = connect(config, sessions, second)
    sync_ok(config, sessions, b)
    a = connect(config, sessions, first)
    sync_ok(config, sessions, a)

    with sessions() as s:
        emails = s.execute(
            select(Email.subject, Email.from_addr, Email.id_reused).where(Email.message_id == "<dup@x.test>")
        ).all()
        from services.applicants import applicant_history

        history = applicant_history(s, jane_id)
    assert sorted(emails) == [
        ("Cheap watches", "mallory@spam.test", True),
        ("My application", "jane.doe@gmail.com", True),
    ]
    assert [(h.subject, h.account_ids) for h in history] == [("My application", sorted([a, b]))]


def test_poison_through_the_gmail_api_never_stops_the_account(config: Config, sessions) -> None:  # type: ignore[no-untyped-def]
    """The same hostile messages through the Gmail API (stand-in, google-api-python-client): raw
    NUL bytes and all arrive as they were sent, and every one is indexed."""

    from providers.base import FolderRole
    from services.accounts import add_gmail_account
    from tests.standins.gmail_rig import ADDRESS, gmail_rig

    with gmail_rig() as rig:
        config = rig.config(config)
        poison = list(poison_cases())
        normal = list(normal_messages(len(poison)))
        for (_, raw), case in zip(normal, poison, strict=True):  # interleaved
            rig.deliver(raw)
            rig.deliver(case.raw)
        sent = list(normal_messages(3, prefix="sent"))
        for _, raw in sent:
            rig.deliver(raw, FolderRole.SENT)
        with sessions.begin() as s:
            account_id = add_gmail_account(s, config, ADDRESS, rig.refresh_token).id
            add_applicant(s, "Ann", ["ann@example.org"])
        result = sync_ok(config, sessions, account_id)
        assert result.status == "active"
        with sessions() as s:
            assert list_quarantined(s) == []
            unlinked = s.scalar(select(MessageCopy.id).where(MessageCopy.email_id.is_(None)))
            subject = s.scalar(select(Email.subject).where(Email.message_id == "<poison-nul-raw-subject@x.test>"))
        assert unlinked is None and subject == "helloworld"
        assert all(mid in copies(sessions, account_id) for mid, _ in normal)
        assert sorted(copies(sessions, account_id, "sent")) == sorted(mid for mid, _ in sent)
