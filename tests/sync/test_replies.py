"""Replies to messages sent from Postroom, as the index meets them (sync.replies, sync.threads),
on SQLite and PostgreSQL: an answer is found through exact identifiers only — the Message-ID
of the message or of a recipient's own copy, the reply token in a plus-address, the short id
in the subject — and marks that recipient ``replied`` (``auto_replied`` for an auto-reply),
joins the message's thread and the applicant's history, whatever address it came from.

The messages here are indexed as a sync pass indexes them (``Indexer.index`` with header
blocks as a server returns them); tests/sync/test_tracked_send.py does the same end to end
through real servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.models import (
    Applicant,
    Email,
    Folder,
    HistoryEntry,
    MailAccount,
    OutboxMessage,
    OutboxRecipient,
)
from postroom.reply_ids import REPLY_KEY, SHORT_KEY, new_reply_token, plus_address
from providers.base import RemoteMessage
from sync.indexer import Indexer
from sync.store import default_org
from sync.threads import reserve_thread

RECRUITER = "rita@hiring.example"
SENT_AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class Sent:
    account_id: int
    folder_id: int
    org_id: int
    outbox_id: int
    message_id: str
    token: str
    short_id: str
    thread_id: int
    applicant_id: int
    copies: dict[str, str]  # recipient -> their copy's Message-ID
    recipients: dict[str, int]  # recipient -> recipient row id


def send(sessions: sessionmaker[Session], *to: str, tracked: bool = True, short_id: str = "k3x9q2") -> Sent:
    """What services.sending records for a message it sends (an outbox row, its recipients,
    its thread with every key an answer may name)."""
    with sessions.begin() as s:
        org = default_org(s)
        account = MailAccount(org_id=org.id, email=RECRUITER, provider="imap", settings={}, secret=b"")
        applicant = Applicant(org_id=org.id, name="Ann Example")
        s.add_all([account, applicant])
        s.flush()
        folder = Folder(account_id=account.id, name="INBOX", role="inbox")
        s.add(folder)
        s.flush()
        mid, token = "<main.1@hiring.example>", new_reply_token()
        copies = {a: (f"<copy.{i}@hiring.example>" if tracked else mid) for i, a in enumerate(to)}
        tid = reserve_thread(
            s,
            org.id,
            [mid, *copies.values(), REPLY_KEY + token, SHORT_KEY + short_id],
            parent=None,
            subject=f"[{short_id}] Your interview",
            date=SENT_AT,
        )
        row = OutboxMessage(
            account_id=account.id,
            message_id=mid,
            raw=b"",
            recipients=list(to),
            status="sent",
            refused={},
            reply_token=token,
            short_id=short_id,
            reply_to=plus_address(RECRUITER, token),
            thread_id=tid,
            applicant_id=applicant.id,
            tracked=tracked,
        )
        s.add(row)
        s.flush()
        rows = {a: OutboxRecipient(outbox_id=row.id, address=a, kind="to", message_id=copies[a]) for a in to}
        s.add_all(rows.values())
        s.flush()
        return Sent(
            account.id,
            folder.id,
            org.id,
            row.id,
            mid,
            token,
            short_id,
            tid,
            applicant.id,
            copies,
            {a: r.id for a, r in rows.items()},
        )


_uid = iter(range(1, 10_000))


def arrive(sessions: sessionmaker[Session], sent: Sent, *headers: str) -> tuple[int, int | None]:
    """Index one message with these header lines as a sync pass would; returns (email id, thread id)."""
    block = "\r\n".join(headers) + "\r\n"
    uid = str(next(_uid))
    message = RemoteMessage(remote_id=uid, headers=block.encode(), flags=frozenset(), size=len(block))
    Indexer(sessions, sent.org_id, sent.account_id, use_thread_hints=False).index(sent.folder_id, [message])
    mid = next(h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("message-id:"))
    with sessions() as s:
        email_id, thread_id = s.execute(select(Email.id, Email.thread_id).where(Email.message_id == mid)).one()
        return email_id, thread_id


def marks(sessions: sessionmaker[Session], sent: Sent) -> dict[str, tuple[bool, bool]]:
    """recipient -> (replied, auto_replied)"""
    with sessions() as s:
        rows = s.execute(
            select(OutboxRecipient.address, OutboxRecipient.replied_at, OutboxRecipient.auto_replied_at).where(
                OutboxRecipient.outbox_id == sent.outbox_id
            )
        )
        return {a: (r is not None, ar is not None) for a, r, ar in rows}


def in_history(sessions: sessionmaker[Session], sent: Sent, email_id: int) -> str | None:
    with sessions() as s:
        return s.scalar(
            select(HistoryEntry.direction).where(
                HistoryEntry.applicant_id == sent.applicant_id, HistoryEntry.email_id == email_id
            )
        )


def reply(mid: str, sender: str, subject: str = "Re: [k3x9q2] Your interview", *extra: str) -> list[str]:
    return [
        f"Message-ID: {mid}",
        f"From: {sender}",
        f"To: {RECRUITER}",
        f"Subject: {subject}",
        f"Date: {(SENT_AT + timedelta(hours=1)).strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        *extra,
    ]


def test_an_answer_to_a_recipients_own_copy_marks_that_recipient_whatever_address_it_came_from(
    sessions: sessionmaker[Session],
) -> None:
    sent = send(sessions, "ann@example.org", "bob@example.org")
    email_id, thread = arrive(
        sessions,
        sent,
        *reply("<r1@example.org>", "Ann (phone) <ann.mobile@example.net>", "Re: Your interview"),
        f"In-Reply-To: {sent.copies['ann@example.org']}",
    )
    assert marks(sessions, sent) == {"ann@example.org": (True, False), "bob@example.org": (False, False)}
    assert thread == sent.thread_id
    assert in_history(sessions, sent, email_id) == "inbound"


def test_a_reply_that_lost_its_references_still_finds_the_message_through_the_reply_token(
    sessions: sessionmaker[Session],
) -> None:
    sent = send(sessions, "ann@example.org", "bob@example.org")
    email_id, thread = arrive(
        sessions,
        sent,
        "Message-ID: <fwd@example.net>",
        "From: Bob <bob@example.org>",
        f"To: {plus_address(RECRUITER, sent.token.upper())}",  # a mail client may change the case
        "Subject: Fwd: my availability",
        "Date: Tue, 01 Dec 2026 11:00:00 +0000",
    )
    assert marks(sessions, sent)["bob@example.org"] == (True, False)
    assert thread == sent.thread_id and in_history(sessions, sent, email_id) == "inbound"


def test_the_short_id_in_the_subject_alone_finds_the_message(sessions: sessionmaker[Session]) -> None:
    sent = send(sessions, "ann@example.org")
    email_id, thread = arrive(sessions, sent, *reply("<phone@example.net>", "ann.new@example.net"))
    # from an address nobody knows, but the message had one recipient: it is theirs
    assert marks(sessions, sent) == {"ann@example.org": (True, False)}
    assert thread == sent.thread_id and in_history(sessions, sent, email_id) == "inbound"


def test_an_answer_from_an_unknown_address_to_a_message_with_several_recipients_marks_nobody(
    sessions: sessionmaker[Session],
) -> None:
    sent = send(sessions, "ann@example.org", "bob@example.org")
    email_id, thread = arrive(sessions, sent, *reply("<who@example.net>", "someone@example.net"))
    assert marks(sessions, sent) == {"ann@example.org": (False, False), "bob@example.org": (False, False)}
    assert thread == sent.thread_id  # still the message's thread and the applicant's history
    assert in_history(sessions, sent, email_id) == "inbound"


@pytest.mark.parametrize(
    "marker",
    ["Auto-Submitted: auto-replied", "X-Autoreply: yes", "X-Autorespond: vacation", "Precedence: auto_reply"],
)
def test_an_auto_reply_is_marked_as_such_and_never_as_a_reply(sessions: sessionmaker[Session], marker: str) -> None:
    sent = send(sessions, "ann@example.org")
    arrive(
        sessions,
        sent,
        *reply("<ooo@example.org>", "ann@example.org", "Out of office: [k3x9q2] Your interview"),
        f"In-Reply-To: {sent.copies['ann@example.org']}",
        marker,
    )
    assert marks(sessions, sent) == {"ann@example.org": (False, True)}


def test_x_auto_response_suppress_is_a_request_not_an_auto_reply(sessions: sessionmaker[Session]) -> None:
    sent = send(sessions, "ann@example.org")
    arrive(
        sessions,
        sent,
        *reply("<list@example.org>", "ann@example.org"),
        "X-Auto-Response-Suppress: All",
        f"In-Reply-To: {sent.copies['ann@example.org']}",
    )
    assert marks(sessions, sent) == {"ann@example.org": (True, False)}


def test_a_later_auto_reply_does_not_undo_a_reply(sessions: sessionmaker[Session]) -> None:
    sent = send(sessions, "ann@example.org")
    copy = sent.copies["ann@example.org"]
    arrive(sessions, sent, *reply("<yes@example.org>", "ann@example.org"), f"In-Reply-To: {copy}")
    arrive(sessions, sent, *reply("<ooo2@example.org>", "ann@example.org"), f"In-Reply-To: {copy}", "X-Autoreply: yes")
    assert marks(sessions, sent) == {"ann@example.org": (True, True)}


def test_identifiers_postroom_never_gave_out_join_nothing(sessions: sessionmaker[Session]) -> None:
    sent = send(sessions, "ann@example.org")
    unknown_token = new_reply_token()
    first, t1 = arrive(
        sessions,
        sent,
        *reply("<x1@example.org>", "ann@example.org", "[zz9zz9] Lunch?"),
        f"Cc: {plus_address('rita@hiring.example', unknown_token)}",
    )
    second, t2 = arrive(sessions, sent, *reply("<x2@example.org>", "carl@example.net", "[zz9zz9] Dinner?"))
    assert marks(sessions, sent) == {"ann@example.org": (False, False)}
    assert sent.thread_id not in (t1, t2)
    assert t1 != t2  # an unknown short id does not become a key that links strangers' mail
    assert in_history(sessions, sent, first) is None and in_history(sessions, sent, second) is None


def test_the_copy_indexed_from_sent_joins_the_thread_and_the_applicants_history(
    sessions: sessionmaker[Session],
) -> None:
    sent = send(sessions, "ann.other@example.org")  # an address the applicant does not have
    email_id, thread = arrive(
        sessions,
        sent,
        f"Message-ID: {sent.message_id}",
        f"From: {RECRUITER}",
        "To: ann.other@example.org",
        f"Reply-To: {plus_address(RECRUITER, sent.token)}",
        "Subject: [k3x9q2] Your interview",
        "Date: Tue, 01 Dec 2026 09:00:00 +0000",
    )
    assert thread == sent.thread_id
    assert in_history(sessions, sent, email_id) == "outbound"
    assert marks(sessions, sent) == {"ann.other@example.org": (False, False)}  # our own copy is no reply


def test_an_untracked_message_is_answered_through_its_own_message_id(sessions: sessionmaker[Session]) -> None:
    sent = send(sessions, "ann@example.org", "bob@example.org", tracked=False)
    arrive(sessions, sent, *reply("<b@example.org>", "bob@example.org"), f"In-Reply-To: {sent.message_id}")
    assert marks(sessions, sent) == {"ann@example.org": (False, False), "bob@example.org": (True, False)}
