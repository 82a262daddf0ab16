"""The sync engine's contract: what a recruiter sees after syncing an account is the same on every
backend: the in-memory fake, IMAP against a real Dovecot, and Gmail, Microsoft Graph and EWS against
their stand-ins driven by the real client libraries, each on SQLite and on PostgreSQL.

Threads across the inbox and Sent, applicant history (also of an applicant added later, whose bodies
the next pass fetches), incremental passes (new mail, flag changes, removals), an expired cursor
resynced without duplicates, refused credentials, and a reply sent through the outbox with exactly
one copy in Sent. Each backend's side of it (deliver, flag, remove, move, expire the cursor, ...) is
in engine_env.py; what only one backend does (the cost of an idle pass in requests, OAuth tokens,
throttling, Gmail's labels, IMAP without CONDSTORE) is in test_*_specific.py and test_engine_imap.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy

from sqlalchemy import select

from postroom.models import Body, Email, Folder, HistoryEntry, MailAccount, MessageCopy, OutboxMessage, Thread
from providers.base import FolderRole
from services.applicants import add_applicant, applicant_history
from services.outbox import SendRequest, send_message
from services.threads import account_threads
from sync.engine import AccountResult
from sync.scheduler import Scheduler, sync_all
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.engine_env import BACKENDS, EngineEnv, env_fixture
from tests.sync.helpers import bodies, by_role, connect, copies, count, history_ids, sync_ok

JANE = "jane.doe@gmail.com"
JANE_AT_WORK = "jane.doe@contoso.test"
KEN = "ken.applicant@example.org"
INBOX, SENT, TRASH = FolderRole.INBOX, FolderRole.SENT, FolderRole.TRASH


def _at(days: int) -> datetime:
    return datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(days=days)


env = env_fixture(*BACKENDS)


def _sync(env: EngineEnv) -> AccountResult:
    return sync_ok(env.config, env.sessions, env.account_id)


def _by_role(env: EngineEnv, result: AccountResult, what: str) -> dict[str, int]:
    return by_role(env.sessions, env.account_id, result, what)


def _threads(env: EngineEnv) -> list[list[str]]:
    with env.sessions() as s:
        return sorted(t["message_ids"] for t in account_threads(s, env.account_id))  # type: ignore[misc]


def _flags(env: EngineEnv, message_id: str, role: str = "inbox") -> list[str]:
    """The stored flags of the account's copies of the message in the folder with ``role``."""
    with env.sessions() as s:
        return list(
            s.scalars(
                select(MessageCopy.flags)
                .join(Email, Email.id == MessageCopy.email_id)
                .join(Folder, Folder.id == MessageCopy.folder_id)
                .where(MessageCopy.account_id == env.account_id, Email.message_id == message_id, Folder.role == role)
            )
        )


def _wait_for(received: Callable[[], list[bytes]], timeout: float = 10.0) -> list[bytes]:
    """The recipient's inbox once something is in it (an SMTP server delivers a moment later)."""
    deadline = time.monotonic() + timeout
    while not (got := received()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


# ------------------------------------------------------------------ threads and history
def test_threads_and_applicant_history_across_inbox_and_sent_and_an_applicant_added_later(env: EngineEnv) -> None:
    applied = env.deliver(
        make_message(message_id="<apply@x.test>", subject="Application", from_=f"Jane <{JANE}>", date=_at(0))
    )
    answered = env.deliver(
        make_message(  # Jane wrote from one address and is answered at another: both are hers
            message_id="<answer@x.test>",
            subject="Re: Application",
            from_=env.address,
            to=JANE_AT_WORK,
            in_reply_to="<apply@x.test>",
            references=["<apply@x.test>"],
            date=_at(1),
        ),
        SENT,
    )
    env.deliver(make_message(message_id="<lunch@x.test>", subject="Lunch?", from_="colleague@corp.test", date=_at(1)))
    cv = env.deliver(
        make_message(
            message_id="<cv@x.test>", subject="Lebenslauf – Jürgen", from_=f'"Müller, Ken" <{KEN}>', date=_at(2)
        )
    )
    thanks = env.deliver(
        make_message(
            message_id="<thanks@x.test>",
            subject="Re: Lebenslauf – Jürgen",
            from_=env.address,
            to=KEN,
            in_reply_to="<cv@x.test>",
            date=_at(3),
        ),
        SENT,
    )
    with env.sessions.begin() as s:  # Gmail ignores dots; case and +tag are ignored everywhere
        jane, _ = add_applicant(s, "Jane Doe", ["janedoe@gmail.com", "Jane.Doe+jobs@contoso.test"])

    first = _sync(env)
    assert _by_role(env, first, "new") == env.per_role(inbox=3, sent=2)
    assert count(env.sessions, Email) == 5  # a message in the inbox and All Mail is one email with two copies
    assert _threads(env) == [
        ["<apply@x.test>", "<answer@x.test>"],
        ["<cv@x.test>", "<thanks@x.test>"],
        ["<lunch@x.test>"],
    ]
    with env.sessions() as s:
        history = applicant_history(s, jane.id)
    assert [(h.message_id, h.direction) for h in history] == [
        ("<apply@x.test>", "inbound"),
        ("<answer@x.test>", "outbound"),
    ]
    assert history[0].thread_id == history[1].thread_id
    assert copies(env.sessions, env.account_id, "sent") == ["<answer@x.test>", "<thanks@x.test>"]
    assert bodies(env.sessions) == ["<answer@x.test>", "<apply@x.test>"]  # private and unknown mail: headers only
    fetched = env.bodies_fetched()
    if fetched is not None:  # the others were not even asked for
        assert sorted(fetched) == sorted([applied, answered])

    # Ken is added after the sync: his history comes from the header index at once, without the server...
    with env.sessions.begin() as s:
        ken, backfilled = add_applicant(s, "Ken", [KEN.upper()])
    assert backfilled == 2
    with env.sessions() as s:
        items = applicant_history(s, ken.id)
        decoded = s.execute(select(Email.subject, Email.from_name).where(Email.message_id == "<cv@x.test>")).one()
    assert [(i.message_id, i.direction) for i in items] == [("<cv@x.test>", "inbound"), ("<thanks@x.test>", "outbound")]
    assert items[0].thread_id == items[1].thread_id
    assert tuple(decoded) == ("Lebenslauf – Jürgen", "Müller, Ken")

    # ...and the next pass fetches exactly the bodies that now involve an applicant, and nothing twice.
    env.reset_calls()
    later = _sync(env)
    assert later.new == 0 and sum(f.bodies for f in later.folders) == 2
    fetched = env.bodies_fetched()
    if fetched is not None:
        assert sorted(fetched) == sorted([cv, thanks])
    assert bodies(env.sessions) == ["<answer@x.test>", "<apply@x.test>", "<cv@x.test>", "<thanks@x.test>"]
    assert count(env.sessions, Body) == 4
    assert count(env.sessions, HistoryEntry) == 4  # each message once in the history
    assert history_ids(env.sessions, jane.id) == ["<answer@x.test>", "<apply@x.test>"]
    assert sum(f.bodies for f in _sync(env).folders) == 0


def test_threads_join_children_before_parents_merge_when_linked_and_never_on_subject_alone(env: EngineEnv) -> None:
    # The reply arrives (and is synced) before the message it answers.
    reply = make_message(
        message_id="<reply@x.test>",
        subject="Re: Interview",
        in_reply_to="<root@x.test>",
        references=["<root@x.test>"],
        date=_at(1),
    )
    env.deliver(reply)
    env.deliver(make_message(message_id="<a@x.test>", subject="A", date=_at(0)))
    env.deliver(make_message(message_id="<b@x.test>", subject="B", date=_at(0)))
    _sync(env)
    assert count(env.sessions, Thread) == 3
    env.deliver(make_message(message_id="<root@x.test>", subject="Interview", from_=env.address, date=_at(0)), SENT)
    # Two unrelated conversations that both say "Re: Hello".
    env.deliver(make_message(message_id="<h1@x.test>", subject="Re: Hello", from_="a@one.test", date=_at(2)))
    env.deliver(make_message(message_id="<h2@x.test>", subject="Re: Hello", from_="b@two.test", date=_at(2)))
    # A message that refers to both A and B joins their threads.
    env.deliver(
        make_message(message_id="<c@x.test>", subject="Re: A", references=["<a@x.test>", "<b@x.test>"], date=_at(1))
    )
    _sync(env)

    with env.sessions() as s:
        threads = {frozenset(t["message_ids"]): t for t in account_threads(s, env.account_id)}  # type: ignore[arg-type]
    assert set(threads) == {
        frozenset({"<root@x.test>", "<reply@x.test>"}),
        frozenset({"<h1@x.test>"}),
        frozenset({"<h2@x.test>"}),
        frozenset({"<a@x.test>", "<b@x.test>", "<c@x.test>"}),
    }
    interview = threads[frozenset({"<root@x.test>", "<reply@x.test>"})]
    assert interview["message_ids"] == ["<root@x.test>", "<reply@x.test>"]
    assert interview["subject"] in ("Interview", "Re: Interview")
    assert count(env.sessions, Thread) == 4  # the merged thread's row is gone


def test_the_same_message_in_two_accounts_is_one_email_one_thread_and_one_history_entry(
    env: EngineEnv, new_mailbox: Callable[[], Mailbox]
) -> None:
    other = new_mailbox()
    raw = make_message(
        message_id="<shared@x.test>", subject="Application", from_=JANE, to=f"{env.address}, {other.address}"
    )
    env.deliver(raw)
    other.append(raw)
    ids = [env.account_id, connect(env.config, env.sessions, other)]
    with env.sessions.begin() as s:
        applicant, _ = add_applicant(s, "Jane", ["Jane.Doe+jobs@googlemail.com"])  # canonical: janedoe@gmail.com
    for account_id in ids:
        sync_ok(env.config, env.sessions, account_id)

    assert count(env.sessions, Email) == 1 and count(env.sessions, Thread) == 1
    assert count(env.sessions, HistoryEntry) == 1
    with env.sessions() as s:
        (item,) = applicant_history(s, applicant.id)
        (t1,), (t2,) = (account_threads(s, a) for a in ids)
    assert item.message_id == "<shared@x.test>" and item.direction == "inbound"
    assert item.account_ids == sorted(ids)
    assert t1["id"] == t2["id"]


# ------------------------------------------------------------------ incremental passes
def test_incremental_passes_pick_up_new_mail_flags_and_removals_and_an_expired_cursor_loses_and_doubles_nothing(
    env: EngineEnv,
) -> None:
    with env.sessions.begin() as s:
        jane, _ = add_applicant(s, "Jane", [JANE])
    ids = [env.deliver(make_message(message_id=f"<m{i}@x.test>", subject=f"Hello {i}", from_=JANE)) for i in range(5)]
    env.deliver(make_message(message_id="<s0@x.test>", from_=env.address, to=JANE), SENT)
    first = _sync(env)
    assert _by_role(env, first, "new") == env.per_role(inbox=5, sent=1)
    assert copies(env.sessions, env.account_id) == [f"<m{i}@x.test>" for i in range(5)]

    again = _sync(env)
    assert again.new == 0 and sum(f.changed + f.removed for f in again.folders) == 0

    env.deliver(make_message(message_id="<m5@x.test>", from_=JANE))
    env.set_flags(ids[0], {"\\Seen", "\\Flagged"})  # read in another client and flagged for follow-up
    env.remove(ids[1])  # deleted for good
    env.move(ids[2], INBOX, TRASH)  # deleted into the trash
    later = _sync(env)
    assert _by_role(env, later, "new") == env.per_role(inbox=1, trash=1)  # the newcomer, and the binned one
    assert _by_role(env, later, "removed") == env.per_role(inbox=2)
    assert _by_role(env, later, "changed") == env.per_role(inbox=1)  # only the message whose flags changed
    assert copies(env.sessions, env.account_id) == ["<m0@x.test>", "<m3@x.test>", "<m4@x.test>", "<m5@x.test>"]
    assert copies(env.sessions, env.account_id, "trash") == ["<m2@x.test>"]
    assert _flags(env, "<m0@x.test>") == ["\\Flagged \\Seen"]

    # The server forgets every sync state it handed out: the folders are indexed afresh.
    emails, entries, stored = count(env.sessions, Email), count(env.sessions, HistoryEntry), count(env.sessions, Body)
    history = history_ids(env.sessions, jane.id)
    assert (emails, entries, stored, len(history)) == (7, 7, 7, 7)  # m0-m5 and s0 (deleted mail keeps its history)
    env.deliver(make_message(message_id="<m6@x.test>", from_=JANE))
    env.expire_cursors()
    result = _sync(env)
    resynced = {role for role, n in _by_role(env, result, "resynced").items() if n}
    assert {"inbox", "sent", "trash"} <= resynced
    assert _by_role(env, result, "new") == env.per_role(inbox=5, sent=1, trash=1)  # the newcomer among them
    assert copies(env.sessions, env.account_id) == [f"<m{i}@x.test>" for i in (0, 3, 4, 5, 6)]
    assert copies(env.sessions, env.account_id, "sent") == ["<s0@x.test>"]
    assert copies(env.sessions, env.account_id, "trash") == ["<m2@x.test>"]
    assert _flags(env, "<m0@x.test>") == ["\\Flagged \\Seen"]
    # no duplicates, nothing lost: one more email, history entry and body, for the newcomer
    assert count(env.sessions, Email) == emails + 1
    assert history_ids(env.sessions, jane.id) == sorted([*history, "<m6@x.test>"])
    assert count(env.sessions, HistoryEntry) == entries + 1
    assert count(env.sessions, Body) == stored + 1  # bodies already stored were not stored again
    assert _sync(env).new == 0  # the new cursors hold


# ------------------------------------------------------------------ credentials
def test_refused_credentials_stop_that_account_until_it_is_reconnected_while_others_sync(
    env: EngineEnv, new_mailbox: Callable[[], Mailbox]
) -> None:
    other = new_mailbox()
    other_id = connect(env.config, env.sessions, other)
    other.append(make_message(message_id="<imap1@x.test>"))
    env.deliver(make_message(message_id="<mine1@x.test>"))
    assert all(r.ok for r in sync_all(env.config, env.sessions))
    env.refuse_credentials()
    other.append(make_message(message_id="<imap2@x.test>"))
    env.deliver(make_message(message_id="<mine2@x.test>"))

    results = {r.account_id: r for r in sync_all(env.config, env.sessions)}
    assert results[other_id].ok and results[other_id].new == 1
    refused = results[env.account_id]
    assert not refused.ok and refused.status == "reconnect-needed" and env.auth_error in (refused.error or "")
    with env.sessions() as s:
        account = s.get_one(MailAccount, env.account_id)
        assert (account.status, account.last_error_class) == ("reconnect-needed", "AuthError")
        assert env.auth_error in (account.last_error or "")
        assert s.get_one(MailAccount, other_id).status == "active"
    assert copies(env.sessions, env.account_id) == ["<mine1@x.test>"]
    # the worker does not come back to it (no retry storm, no lock-out) until it is reconnected
    due = Scheduler(env.config, env.sessions).due(datetime.now(UTC) + timedelta(days=1), 10)
    assert env.account_id not in due and other_id in due


# ------------------------------------------------------------------ sending
def test_a_reply_sent_through_the_outbox_reaches_the_applicant_with_one_copy_in_sent(env: EngineEnv) -> None:
    jane = env.recipient(JANE_AT_WORK)
    env.deliver(make_message(message_id="<ask@x.test>", subject="Question", from_=jane.address, to=env.address))
    _sync(env)

    row = send_message(
        env.config,
        env.sessions,
        SendRequest(env.account_id, [jane.address], "Re: Question", "Happy to help.", in_reply_to="<ask@x.test>"),
    )
    assert row.status == "sent" and row.error is None
    (received,) = _wait_for(jane.received)
    headers = message_from_bytes(received, policy=default_policy)
    assert headers["Message-ID"] == row.message_id
    assert headers["In-Reply-To"] == "<ask@x.test>" and headers["References"] == "<ask@x.test>"
    assert b"Happy to help." in received
    sent = env.sent_copies(row.message_id)
    assert len(sent) == 1  # the provider's own copy or Postroom's, never both
    if env.knows_sent_copy_id:
        assert sent == [row.sent_copy_id]
    threads = env.server_threads(row.message_id)
    if threads is not None:  # the reply joined the applicant's conversation on the server too
        assert len(threads) == 1 and threads == env.server_threads("<ask@x.test>")

    _sync(env)
    assert copies(env.sessions, env.account_id, "sent") == [row.message_id]
    assert _threads(env) == [["<ask@x.test>", row.message_id]]
    with env.sessions() as s:
        assert s.scalar(select(OutboxMessage.status).where(OutboxMessage.id == row.id)) == "sent"
