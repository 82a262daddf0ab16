"""The processing mailbox's routing, answers and bounces (sync.inbound_routing), on SQLite and
PostgreSQL, for messages really sent through the rig's SMTP server (the way `postroom send`
sends them, tracked or not): inbound mail is built as raw bytes, read by the real parsers
(:func:`postroom.inbound.parse_inbound`, :func:`postroom.bounces.parse_bounce`) and routed in a
transaction as the processing loop does.

* the reply token, In-Reply-To (a tracked copy names its recipient), References and the
  subject's short id route to the message; another organisation's identifiers route nowhere;
  a sender who is an applicant routes to them; nothing known routes nowhere;
* an answer marks its recipient replied — an auto-reply auto_replied, never replied;
* Postfix and Exchange delivery status notifications mark the failed recipient bounced with
  its code, once (the first notice kept), announce it by one message.bounced delivery, and
  never mark an address that is only quoted, nor anything for a message Postroom did not send;
  `postroom outbox` and `postroom tracking` show the bounce.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.bounces import parse_bounce
from postroom.config import Config
from postroom.inbound import InboundMessage, parse_inbound
from postroom.models import OutboxRecipient, WebhookDelivery
from postroom.states import OutboxStatus
from services.applicants import add_applicant
from services.orgs import add_org
from services.sending import SendOutcome, SendRequest, send_message
from services.tracking import tracking_report
from services.webhooks import add_subscription
from sync.inbound_routing import Route, record_answer, record_bounce, route_inbound
from sync.store import default_org
from tests.cli.harness import Cli
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect
from tests.web.api_client import api_client
from web import create_app

DSN = Path(__file__).resolve().parents[1] / "data" / "dsn"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def account(tracking: Config, sessions: sessionmaker[Session], mailbox: Mailbox, smtp: FaultySmtp) -> int:
    mailbox.ensure_folders()
    return connect(tracking, sessions, mailbox, smtp_port=smtp.port)


@pytest.fixture
def cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(env, monkeypatch, capsys)


@pytest.fixture
def org(sessions: sessionmaker[Session], account: int) -> int:
    with sessions() as s:
        return default_org(s).id


def rcpt(name: str, domain: str = "example.org") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@{domain}"


def send(
    config: Config, sessions: sessionmaker[Session], account: int, *to: str, track: bool = False, **extra: object
) -> SendOutcome:
    req = SendRequest(account, list(to), "Your interview", "Hello!", track=track, **extra)  # type: ignore[arg-type]
    outcome = send_message(config, sessions, req)
    assert outcome.entry.status == OutboxStatus.SENT
    return outcome


def recipients(sessions: sessionmaker[Session], outcome: SendOutcome) -> dict[str, OutboxRecipient]:
    with sessions() as s:
        rows = s.scalars(select(OutboxRecipient).where(OutboxRecipient.outbox_id == outcome.entry.id)).all()
        return {r.address: r for r in rows}


def mail(*headers: str, body: str = "Thanks, Thursday works for me.") -> InboundMessage:
    lines = [*headers, f"Message-ID: <{uuid.uuid4().hex}@mail.example.org>", "Date: Tue, 1 Dec 2026 10:00:00 +0000"]
    return parse_inbound(("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode())


def route(sessions: sessionmaker[Session], org_id: int, msg: InboundMessage) -> Route | None:
    with sessions.begin() as s:
        return route_inbound(s, org_id, msg)


def answer(sessions: sessionmaker[Session], org_id: int, msg: InboundMessage) -> Route | None:
    """Route ``msg`` and record it as an answer, in one transaction, as the processing loop does."""
    with sessions.begin() as s:
        found = route_inbound(s, org_id, msg)
        if found is not None:
            record_answer(s, org_id, found, msg, NOW)
        return found


def report(sessions: sessionmaker[Session], outcome: SendOutcome) -> dict[str, dict[str, object]]:
    with sessions() as s:
        return {r["address"]: r for r in tracking_report(s, outcome.entry.message_id)["recipients"]}


# ---------------------------------------------------------------------------------------- routing


def test_the_reply_token_routes_to_the_message_and_the_recipient_who_answered(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann, bob = rcpt("ann"), rcpt("bob")
    sent = send(tracking, sessions, account, ann, bob)
    rows = recipients(sessions, sent)
    msg = mail(f"From: Bob <{bob.upper()}>", f"To: Jobs <{sent.reply_to}>", "Subject: Re: interview")
    assert answer(sessions, org, msg) == Route(
        kind="outbox", id=sent.entry.id, via="reply_token", outbox_id=sent.entry.id, recipient_id=rows[bob].id
    )
    marks = report(sessions, sent)
    assert (marks[bob]["replied"], marks[bob]["auto_replied"]) == (True, False)
    assert marks[ann]["replied"] is False


def test_in_reply_to_a_tracked_copy_names_its_recipient_whoever_writes(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann, bob = rcpt("ann"), rcpt("bob")
    sent = send(tracking, sessions, account, ann, bob, track=True)
    rows = recipients(sessions, sent)
    msg = mail("From: assistant@elsewhere.example", "To: hr@hiring.example", f"In-Reply-To: {rows[bob].message_id}")
    found = answer(sessions, org, msg)
    assert found is not None and (found.kind, found.id, found.via) == ("outbox", sent.entry.id, "in_reply_to")
    assert found.recipient_id == rows[bob].id
    marks = report(sessions, sent)
    assert marks[bob]["replied"] is True and marks[ann]["replied"] is False


def test_references_to_the_message_route_by_the_senders_address(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann, bob = rcpt("ann"), rcpt("bob")
    sent = send(tracking, sessions, account, ann, bob)
    msg = mail(
        f"From: {ann}", "To: hr@hiring.example", f"References: <older@elsewhere.example> {sent.entry.message_id}"
    )
    found = route(sessions, org, msg)
    assert found is not None and (found.id, found.via) == (sent.entry.id, "in_reply_to")
    assert found.recipient_id == recipients(sessions, sent)[ann].id


def test_the_subject_short_id_routes_when_nothing_else_does(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann = rcpt("ann")
    sent = send(tracking, sessions, account, ann)
    msg = mail(f"From: {ann}", "To: hr@hiring.example", f"Subject: Re: [{sent.short_id}] Your interview")
    found = route(sessions, org, msg)
    assert found is not None and (found.kind, found.id, found.via) == ("outbox", sent.entry.id, "short_id")
    assert found.recipient_id == recipients(sessions, sent)[ann].id  # the only recipient


def test_the_token_wins_over_a_short_id_of_another_message(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    first, second = send(tracking, sessions, account, rcpt("ann")), send(tracking, sessions, account, rcpt("bob"))
    msg = mail("From: x@elsewhere.example", f"To: {second.reply_to}", f"Subject: Re: [{first.short_id}] Hi")
    found = route(sessions, org, msg)
    assert found is not None and (found.id, found.via) == (second.entry.id, "reply_token")


def test_another_organisations_identifiers_route_nowhere(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann = rcpt("ann")
    sent = send(tracking, sessions, account, ann, track=True)
    copy_id = recipients(sessions, sent)[ann].message_id
    with sessions.begin() as s:
        other = add_org(s, "Other Recruiting").id
        add_applicant(s, "Ann", [ann], org_id=org)  # an applicant of this organisation only
    msg = mail(
        f"From: {ann}",
        f"To: {sent.reply_to}",
        f"In-Reply-To: {copy_id}",
        f"References: {sent.entry.message_id}",
        f"Subject: Re: [{sent.short_id}] Your interview",
    )
    assert route(sessions, other, msg) is None
    found = route(sessions, org, msg)
    assert found is not None and found.id == sent.entry.id  # the same mail in its own organisation


def test_a_sender_who_is_an_applicant_routes_to_them(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ada = rcpt("ada")
    with sessions.begin() as s:
        applicant = add_applicant(s, "Ada", [ada])[0].id
    local, _, domain = ada.partition("@")
    msg = mail(f'From: "Ada" <{local.upper()}+cv@{domain}>', "To: jobs@hiring.example", "Subject: My CV")
    assert route(sessions, org, msg) == Route(kind="applicant", id=applicant, via="sender", applicant_id=applicant)
    # a reply by token from the applicant to a message sent for nobody in particular names them too
    sent = send(tracking, sessions, account, ada)
    found = route(sessions, org, mail(f"From: {ada}", f"To: {sent.reply_to}"))
    assert found is not None and (found.kind, found.applicant_id) == ("outbox", applicant)


def test_a_message_sent_for_an_applicant_names_them_whoever_answers(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann = rcpt("ann")
    with sessions.begin() as s:
        applicant = add_applicant(s, "Ann", [ann])[0].id
    sent = send(tracking, sessions, account, ann, applicant_id=applicant)
    found = route(sessions, org, mail("From: ann.private@elsewhere.example", f"To: {sent.reply_to}"))
    assert found is not None and found.applicant_id == applicant
    assert found.recipient_id == recipients(sessions, sent)[ann].id  # the only recipient


def test_nothing_known_routes_nowhere(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    sent = send(tracking, sessions, account, rcpt("ann"))
    token = "a" * 20
    msg = mail(
        "From: stranger@elsewhere.example",
        f"To: jobs+{token}@hiring.example",
        "In-Reply-To: <never-sent@hiring.example>",
        "Subject: Re: [zz9zz9] a question",
    )
    assert route(sessions, org, msg) is None
    assert not any(r["replied"] for r in report(sessions, sent).values())


def test_hostile_headers_route_nowhere_and_break_nothing(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    sent = send(tracking, sessions, account, rcpt("ann"))
    refs = " ".join(f"<{i}.{'x' * 900}@evil.example>" for i in range(300))
    msg = mail(
        "From: =?utf-8?b?AAAA?= <\x01@\x02>, not an address",
        "To: " + ", ".join(f"jobs+{'b' * 20}{i}@hiring.example" for i in range(500)),
        f"In-Reply-To: <{'y' * 990}@evil.example>",
        f"References: {refs}",
        "Subject: " + "[aaaaa1] " * 200,
    )
    assert route(sessions, org, msg) is None
    assert not any(r["replied"] for r in report(sessions, sent).values())


def test_an_auto_reply_routed_by_token_is_auto_replied_never_replied(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ann = rcpt("ann")
    sent = send(tracking, sessions, account, ann)
    msg = mail(f"From: {ann}", f"To: {sent.reply_to}", "Auto-Submitted: auto-replied", "Subject: Out of office")
    assert msg.auto_reply
    found = answer(sessions, org, msg)
    assert found is not None and found.via == "reply_token"
    marks = report(sessions, sent)[ann]
    assert (marks["replied"], marks["auto_replied"]) == (False, True)
    answer(sessions, org, mail(f"From: {ann}", f"To: {sent.reply_to}", "Subject: Re: Your interview"))
    assert report(sessions, sent)[ann]["replied"] is True  # the real answer that follows still counts


# ---------------------------------------------------------------------------------------- bounces


def dsn(name: str, replace: dict[str, str]) -> bytes:
    raw = (DSN / name).read_bytes()
    for old, new in replace.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw


def bounce(sessions: sessionmaker[Session], org_id: int, raw: bytes, now: datetime = NOW) -> list[int]:
    parsed = parse_bounce(raw)
    assert parsed is not None
    with sessions.begin() as s:
        return record_bounce(s, org_id, parsed, now)


def deliveries(sessions: sessionmaker[Session]) -> list[dict[str, object]]:
    with sessions() as s:
        return [d.payload for d in s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "message.bounced"))]


@pytest.fixture
def subscribed(tracking: Config, sessions: sessionmaker[Session], org: int) -> None:
    with sessions.begin() as s:
        add_subscription(s, tracking, org, "https://hooks.example.com/postroom", ["message.bounced"])


POSTFIX_ID = "<174107955012.4711.interview@postroom.example>"


def test_a_postfix_dsn_marks_the_recipient_bounced_once_and_announces_it(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int, subscribed: None, cli: Cli
) -> None:
    ghost, ann = rcpt("ghost"), rcpt("ann")
    sent = send(tracking, sessions, account, ghost, ann)
    rows = recipients(sessions, sent)
    raw = dsn("postfix.eml", {POSTFIX_ID: sent.entry.message_id, "ghost@example.org": ghost})
    assert bounce(sessions, org, raw) == [rows[ghost].id]
    marks = report(sessions, sent)
    assert marks[ghost]["bounced"] is True and marks[ghost]["bounce_status"] == "5.1.1"
    assert "User unknown in virtual mailbox table" in str(marks[ghost]["bounce_reason"])
    assert "\n" not in str(marks[ghost]["bounce_reason"])
    assert marks[ann]["bounced"] is False
    (payload,) = deliveries(sessions)
    assert payload["outbox_id"] == sent.entry.id and payload["recipient"] == ghost
    assert payload["status"] == "5.1.1" and payload["bounced_at"] == NOW.isoformat()

    # a second notice for the same recipient (another code, later) keeps the first and announces nothing
    later = raw.replace(b"5.1.1", b"5.2.2").replace(b"User unknown", b"Mailbox full")
    assert bounce(sessions, org, later, NOW + timedelta(hours=1)) == []
    assert report(sessions, sent)[ghost]["bounce_status"] == "5.1.1"
    assert len(deliveries(sessions)) == 1

    # the outbox listing and the tracking report show it
    (entry,) = [e for e in cli.json("outbox", "list") if e["id"] == sent.entry.id]
    assert entry["bounced"] == {
        ghost: {"status": "5.1.1", "reason": marks[ghost]["bounce_reason"], "bounced_at": NOW.isoformat()}
    }
    _code, out, _err = cli("outbox", "list")
    assert f"bounced: {ghost} (5.1.1: 550 5.1.1" in out
    by_address = {r["address"]: r for r in cli.json("tracking", "--message-id", sent.entry.message_id)["recipients"]}
    assert by_address[ghost]["bounce_status"] == "5.1.1" and by_address[ann]["bounced_at"] is None


def test_an_exchange_dsn_for_one_tracked_copy_marks_that_recipient(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int, subscribed: None
) -> None:
    smith, lena = rcpt("j.smith", "contoso.example"), rcpt("lena", "contoso.example")
    sent = send(tracking, sessions, account, smith, cc=[lena], track=True)
    rows = recipients(sessions, sent)
    raw = dsn(
        "exchange_o365.eml",
        {
            "<174107955013.4712.offer@postroom.example>": rows[smith].message_id,
            "j.smith@contoso.com": smith,
            "lena.berg@contoso.com": lena,
        },
    )
    assert bounce(sessions, org, raw) == [rows[smith].id]
    marks = report(sessions, sent)
    assert marks[smith]["bounce_status"] == "5.1.10" and marks[lena]["bounced"] is False
    assert "RESOLVER.ADR.RecipientNotFound" in str(marks[smith]["bounce_reason"])
    assert [p["recipient"] for p in deliveries(sessions)] == [smith]


def test_addresses_quoted_in_the_original_are_never_marked(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int, subscribed: None
) -> None:
    old, ana, bruno = rcpt("old"), rcpt("ana"), rcpt("bruno")
    sent = send(tracking, sessions, account, old, ana, cc=[bruno])
    rows = recipients(sessions, sent)
    raw = dsn(
        "cc_quoted.eml",
        {
            "<174115805900.4716.shortlist@postroom.example>": sent.entry.message_id,
            "old.address@partner.example": old,
            "ana.lima@partner.example": ana,
            "bruno.costa@partner.example": bruno,
        },
    )
    assert bounce(sessions, org, raw) == [rows[old].id]
    marks = report(sessions, sent)
    assert [a for a, r in marks.items() if r["bounced"]] == [old]
    assert len(deliveries(sessions)) == 1


def test_a_dsn_for_a_message_postroom_did_not_send_marks_nothing(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int, subscribed: None
) -> None:
    ghost = rcpt("ghost")
    sent = send(tracking, sessions, account, ghost)
    unknown = dsn("postfix.eml", {"ghost@example.org": ghost})  # the recipient matches, the message does not
    assert bounce(sessions, org, unknown) == []
    with sessions.begin() as s:
        other = add_org(s, "Other Recruiting").id
    ours = dsn("postfix.eml", {POSTFIX_ID: sent.entry.message_id, "ghost@example.org": ghost})
    assert bounce(sessions, other, ours) == []  # another organisation's processing mailbox
    assert report(sessions, sent)[ghost]["bounced"] is False and deliveries(sessions) == []


def test_the_api_shows_the_bounce_in_tracking_and_the_outbox(
    tracking: Config, sessions: sessionmaker[Session], account: int, org: int
) -> None:
    ghost, ann = rcpt("ghost"), rcpt("ann")
    sent = send(tracking, sessions, account, ghost, ann, track=True)
    copy_id = recipients(sessions, sent)[ghost].message_id
    bounce(sessions, org, dsn("postfix.eml", {POSTFIX_ID: copy_id, "ghost@example.org": ghost}))
    api = api_client(create_app(tracking))
    report = api.ok("GET", "/api/v1/tracking", query_string={"message_id": sent.entry.message_id})
    by_address = {r["address"]: r for r in report["recipients"]}
    assert (by_address[ghost]["bounced"], by_address[ghost]["bounce_status"]) == (True, "5.1.1")
    assert by_address[ghost]["bounced_at"] == NOW.isoformat(timespec="seconds")
    assert "User unknown" in by_address[ghost]["bounce_reason"]
    assert (by_address[ann]["bounced"], by_address[ann]["bounced_at"], by_address[ann]["bounce_status"]) == (
        False,
        None,
        None,
    )
    (entry,) = [e for e in api.ok("GET", "/api/v1/outbox")["items"] if e["id"] == sent.entry.id]
    assert list(entry["bounced"]) == [ghost] and entry["bounced"][ghost]["status"] == "5.1.1"
