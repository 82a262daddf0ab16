"""An applicant's timeline, thread and message as a recruiter reads them, after a real sync of two
recruiters' Dovecot mailboxes (tests/services/scenario.py), on SQLite and PostgreSQL: a message
both mailboxes hold shows once, answers thread and point the right way, tracking tells people
from machines, bodies are shown safely, and another organisation's ids answer like missing ones.
The last test holds the timeline of 1,000 messages to a fixed, small number of queries."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import event, insert, select

from postroom.bounces import Bounce, BouncedRecipient
from postroom.errors import ApplicantError
from postroom.models import (
    Applicant,
    Body,
    Email,
    Folder,
    HistoryEntry,
    MailAccount,
    MessageCopy,
    OutboxMessage,
    OutboxRecipient,
    Thread,
    TrackingEvent,
)
from services.accounts import NoSuchAccount, delete_account, get_account
from services.applicants import (
    add_applicant,
    applicant_timeline,
    get_applicant,
    list_applicants,
    update_applicant,
)
from services.messages import MessageError, get_attachment, get_message
from services.orgs import add_org
from services.threads import ThreadError, get_thread
from sync.inbound_routing import record_bounce
from tests.services.scenario import ANN, ANN_WORK, PDF, T0, build


@pytest.fixture
def scenario(config, sessions, new_mailbox):  # type: ignore[no-untyped-def]
    return build(config, sessions, new_mailbox)


def _org(sessions, scenario) -> int:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return int(s.scalar(select(Applicant.org_id).where(Applicant.id == scenario.applicant_id)))


def test_a_message_two_mailboxes_hold_shows_once_with_both(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    org = _org(sessions, scenario)
    with sessions() as s:
        items = applicant_timeline(s, org, scenario.applicant_id)
    ids = scenario.ids
    assert [i.message_id for i in items] == [ids["apply"], ids["answer"], ids["reply"]]  # oldest first, each once
    apply, answer, reply = items
    assert sorted(a.id for a in apply.accounts) == sorted([scenario.rita_id, scenario.sam_id])
    assert [a.email for a in answer.accounts] == [scenario.rita.address]
    assert [i.direction for i in items] == ["in", "out", "in"]
    assert apply.thread_id == answer.thread_id == reply.thread_id is not None
    assert apply.date == T0 and apply.from_address == ANN and apply.from_name == "Ann Applicant"
    assert apply.snippet.startswith("Dear Rita, please find my CV attached.")
    assert answer.snippet == "Thanks Ann, could you do an interview on Tuesday at 10?"  # quoted line left out
    assert apply.has_attachments is True and answer.has_attachments is False
    assert ids["other"] not in [i.message_id for i in items]


def test_the_sent_message_carries_each_recipients_state(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        items = applicant_timeline(s, _org(sessions, scenario), scenario.applicant_id)
    tracking = items[1].tracking
    assert tracking is not None and tracking.tracked and tracking.outbox_id == scenario.outbox_id
    state = {r.address: r for r in tracking.recipients}
    assert state[ANN].state == "replied"  # indexing her answer marked it
    assert state[ANN].replied_at == T0 + timedelta(hours=5)
    assert (state["carol@example.org"].state, state["carol@example.org"].opens) == ("clicked", 1)
    assert state["carol@example.org"].machine_opens == 1
    # only a machine (an image proxy) fetched Dave's pixel: not opened, the hits counted apart
    assert (state["dave@example.org"].state, state["dave@example.org"].opens) == ("sent", 0)
    assert state["dave@example.org"].machine_opens == 3
    assert state["bob@gone.example"].state == "bounced" and "550" in (state["bob@gone.example"].error or "")
    assert items[0].tracking is None and items[2].tracking is None
    as_json = items[1].as_json()
    assert as_json["tracking"]["recipients"][0]["state"] == "replied" and as_json["direction"] == "out"


def test_another_organisations_ids_answer_like_missing_ones(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        other = add_org(s, "Other Ltd").id
    missing = 10**6
    with sessions() as s:
        thread_id = s.scalar(select(Email.thread_id).where(Email.message_id == scenario.ids["apply"]))
        email_id = s.scalar(select(Email.id).where(Email.message_id == scenario.ids["apply"]))
        calls = [
            (lambda i: applicant_timeline(s, other, i), scenario.applicant_id),
            (lambda i: get_applicant(s, other, i), scenario.applicant_id),
            (lambda i: update_applicant(s, other, i, name="Mallory"), scenario.applicant_id),
            (lambda i: get_thread(s, other, i), thread_id),
            (lambda i: get_message(s, config, other, i), email_id),
            (lambda i: get_attachment(s, config, other, i, 0), email_id),
            (lambda i: get_account(s, other, i, T0), scenario.rita_id),
            (lambda i: delete_account(s, other, i), scenario.rita_id),
        ]
        for call, theirs in calls:
            with pytest.raises((ApplicantError, ThreadError, MessageError, NoSuchAccount)) as refused:
                call(theirs)
            with pytest.raises(type(refused.value)) as absent:
                call(missing)
            assert refused.value.field == absent.value.field
            assert str(refused.value).replace(str(theirs), "N") == str(absent.value).replace(str(missing), "N")
        assert list_applicants(s, other).total == 0
        s.rollback()
    with sessions() as s:  # nothing was changed or removed on the way
        assert s.get(MailAccount, scenario.rita_id) is not None
        assert s.get(Applicant, scenario.applicant_id).name == "Ann Applicant"


def test_the_thread_shows_every_message_once_oldest_first(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    org = _org(sessions, scenario)
    with sessions() as s:
        thread_id = s.scalar(select(Email.thread_id).where(Email.message_id == scenario.ids["apply"]))
        thread = get_thread(s, org, thread_id)
    ids = scenario.ids
    assert [m.message_id for m in thread.messages] == [ids["apply"], ids["answer"], ids["reply"]]
    assert [m.direction for m in thread.messages] == ["in", "out", "in"]
    assert all(m.applicant_ids == [scenario.applicant_id] for m in thread.messages)
    assert thread.applicants == {scenario.applicant_id: "Ann Applicant"}
    assert thread.subject == "Application for the data engineer role"
    assert scenario.sam.address in thread.messages[0].cc


def test_editing_addresses_brings_in_and_takes_out_their_messages(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    org = _org(sessions, scenario)
    with sessions.begin() as s:
        detail = update_applicant(s, org, scenario.applicant_id, name="Ann A. Applicant", addresses=[ANN, ANN_WORK])
    assert detail.name == "Ann A. Applicant" and detail.addresses == [ANN, ANN_WORK] and detail.messages == 4
    with sessions() as s:
        assert scenario.ids["work"] in [i.message_id for i in applicant_timeline(s, org, scenario.applicant_id)]
        assert [a.id for a in list_applicants(s, org, query="WORK.example").items] == [scenario.applicant_id]
        assert list_applicants(s, org, query="nobody%").total == 0  # LIKE wildcards are literal
    with sessions.begin() as s:
        detail = update_applicant(s, org, scenario.applicant_id, addresses=[ANN_WORK])
    with sessions() as s:
        left = [i.message_id for i in applicant_timeline(s, org, scenario.applicant_id)]
    # Ann's first address is gone: her messages go, but the answer Postroom sent for her stays
    assert left == [scenario.ids["answer"], scenario.ids["work"]]
    with sessions.begin() as s:
        add_applicant(s, "Zed", ["zed@z.example"], org)
        with pytest.raises(ApplicantError, match=r"zed@z\.example already belongs to applicant 'Zed'") as exc:
            update_applicant(s, org, scenario.applicant_id, addresses=[ANN_WORK, "Zed@Z.example"])
        assert exc.value.field == "addresses"
        with pytest.raises(ApplicantError) as exc:
            update_applicant(s, org, scenario.applicant_id, name="  ")
        assert exc.value.field == "name"


def test_a_message_is_shown_safely_with_its_attachment(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    org = _org(sessions, scenario)
    with sessions() as s:
        reply_id = s.scalar(select(Email.id).where(Email.message_id == scenario.ids["reply"]))
        apply_id = s.scalar(select(Email.id).where(Email.message_id == scenario.ids["apply"]))
        blocked = get_message(s, config, org, reply_id)
        shown = get_message(s, config, org, reply_id, show_images=True)
        apply = get_message(s, config, org, apply_id)
        cv = get_attachment(s, config, org, apply_id, 0)
        with pytest.raises(MessageError) as exc:
            get_attachment(s, config, org, apply_id, 1)
    assert blocked.body_state == "stored" and blocked.text == "Tuesday works for me.\n"
    assert blocked.html is not None and "<b>works</b>" in blocked.html
    for bad in ("<script", "onclick", "javascript:", "tracker.example"):
        assert bad not in blocked.html
    assert blocked.blocked_images == 1
    assert shown.html is not None and 'src="/img/' in shown.html and shown.blocked_images == 0
    assert apply.html is None and "please find my CV attached" in apply.text_html
    assert [(a.index, a.filename, a.content_type, a.size) for a in apply.attachments] == [
        (0, "Ann CV 2026.pdf", "application/pdf", len(PDF))
    ]
    assert (cv.filename, cv.content_type, cv.data) == ("Ann CV 2026.pdf", "application/pdf", PDF)
    assert exc.value.field == "attachment"


def test_deleting_a_mailbox_keeps_what_another_one_holds(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    org = _org(sessions, scenario)
    with sessions.begin() as s:
        update_applicant(s, org, scenario.applicant_id, addresses=[ANN, ANN_WORK])
    with sessions.begin() as s:
        delete_account(s, org, scenario.sam_id)
    with sessions() as s:
        items = applicant_timeline(s, org, scenario.applicant_id)
        assert s.get(MailAccount, scenario.sam_id) is None
        with pytest.raises(NoSuchAccount):
            get_account(s, org, scenario.sam_id, T0)
    # the application stays (Rita holds it too), only in Rita's mailbox now; Sam's own message goes
    assert [i.message_id for i in items] == [scenario.ids[n] for n in ("apply", "answer", "reply")]
    assert [a.id for a in items[0].accounts] == [scenario.rita_id]


# --------------------------------------------------------------------------- 1,000 messages


def seed_busy_applicant(sessions, n: int = 1000) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """An applicant with ``n`` messages, each held by two mailboxes, with stored previews; (org, applicant)."""
    with sessions.begin() as s:
        org = add_org(s, "Big").id
        accounts = [MailAccount(org_id=org, email=f"r{i}@big.example", provider="imap", secret=b"") for i in (1, 2)]
        applicant = Applicant(org_id=org, name="Busy Applicant")
        s.add_all([*accounts, applicant])
        s.flush()
        folders = [Folder(account_id=a.id, name="INBOX", role="inbox") for a in accounts]
        thread = Thread(org_id=org, subject="Many")
        s.add_all([*folders, thread])
        s.flush()
        bodies = [
            {"sha256": f"{i:064x}", "size": 100, "path": f"x/{i}", "snippet": f"text {i}", "attachments": i % 2}
            for i in range(n)
        ]
        s.execute(insert(Body), bodies)
        body_ids = dict(s.execute(select(Body.sha256, Body.id)).tuples().all())
        emails = [
            {"org_id": org, "message_id": f"<m{i}@big>", "thread_id": thread.id, "subject": f"Message {i}",
             "from_addr": "a@b.example", "sent_at": T0 + timedelta(minutes=i), "body_id": body_ids[f"{i:064x}"]}
            for i in range(n)
        ]  # fmt: skip
        s.execute(insert(Email), emails)
        email_ids = dict(s.execute(select(Email.message_id, Email.id).where(Email.org_id == org)).tuples().all())
        when = {mid: sent for mid, sent in ((e["message_id"], e["sent_at"]) for e in emails)}
        direction = lambda mid: "outbound" if int(mid[2:-5]) % 10 == 0 else "inbound"  # noqa: E731
        s.execute(
            insert(HistoryEntry),
            [
                {"applicant_id": applicant.id, "email_id": eid, "direction": direction(mid), "occurred_at": when[mid]}
                for mid, eid in email_ids.items()
            ],
        )
        s.execute(
            insert(MessageCopy),
            [
                {"account_id": f.account_id, "folder_id": f.id, "remote_id": str(eid), "email_id": eid}
                for f in folders
                for eid in email_ids.values()
            ],
        )
        # every tenth message was sent from Postroom, tracked, and opened by a person and a machine
        outbox = [
            {"account_id": accounts[0].id, "message_id": f"<m{i}@big>", "raw": b"", "status": "sent", "tracked": True}
            for i in range(0, n, 10)
        ]
        s.execute(insert(OutboxMessage), outbox)
        sent = s.execute(select(OutboxMessage.id).where(OutboxMessage.account_id == accounts[0].id)).scalars().all()
        s.execute(
            insert(OutboxRecipient),
            [
                {"outbox_id": oid, "address": "busy@b.example", "kind": "to", "message_id": f"<c{oid}@big>"}
                for oid in sent
            ],
        )
        recipients = s.execute(select(OutboxRecipient.id).where(OutboxRecipient.outbox_id.in_(sent))).scalars().all()
        s.execute(
            insert(TrackingEvent),
            [
                {"recipient_id": rid, "kind": "open", "at": T0, "method": "GET", "machine": machine}
                for rid in recipients
                for machine in (False, True)
            ],
        )
        return org, applicant.id


def test_a_timeline_of_1000_messages_takes_six_queries(sessions) -> None:  # type: ignore[no-untyped-def]
    org, applicant_id = seed_busy_applicant(sessions)
    engine = sessions.kw["bind"]
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    timings = []
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            statements.clear()
            start = time.perf_counter()
            with sessions() as s:
                items = applicant_timeline(s, org, applicant_id)
            timings.append(time.perf_counter() - start)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(items) == 1000 and items[0].message_id == "<m0@big>" and items[-1].snippet == "text 999"
    assert items[0].tracking is not None and items[0].tracking.recipients[0].state == "opened"
    assert items[0].tracking.recipients[0].machine_opens == 1 and items[1].tracking is None
    assert all(len(i.accounts) == 2 for i in items)
    assert len(statements) <= 6, statements
    assert min(timings) < 1.0  # generous here; docs/benchmarks.md has the measured p50/p95


def test_a_delivery_status_notification_shows_as_bounced_with_its_code(config, sessions, scenario) -> None:  # type: ignore[no-untyped-def]
    org = _org(sessions, scenario)
    notice = Bounce(
        scenario.ids["answer"],
        (BouncedRecipient("dave@example.org", "failed", "5.1.1", "550 5.1.1 User unknown", True),),
        "mx.example.org",
    )
    with sessions.begin() as s:
        assert len(record_bounce(s, org, notice, T0 + timedelta(hours=1))) == 1
    with sessions() as s:
        items = applicant_timeline(s, org, scenario.applicant_id)
    assert items[1].tracking is not None
    dave = {r.address: r for r in items[1].tracking.recipients}["dave@example.org"]
    assert (dave.state, dave.bounce_status, dave.error) == ("bounced", "5.1.1", "550 5.1.1 User unknown")
    (as_json,) = [r for r in items[1].as_json()["tracking"]["recipients"] if r["address"] == "dave@example.org"]
    assert as_json["bounced_at"] == (T0 + timedelta(hours=1)).isoformat() and as_json["bounce_status"] == "5.1.1"
