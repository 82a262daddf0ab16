"""`postroom send` as the contract spells it (templates, Cc/Bcc, --track, --applicant,
invitations) and `postroom invites reschedule|cancel`, against Dovecot and an SMTP server that
captures every transaction, on SQLite and PostgreSQL. What reaches the server is read back:
the subject's short id, the Reply-To token, the parts of the message, the calendar event."""

from __future__ import annotations

import json
import os
import uuid
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path

import pytest
from icalendar import Calendar

from tests.cli.harness import Cli
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox

SEND_KEYS = {"message_id", "outbox_id", "reply_to", "short_id", "recipients"}


@pytest.fixture
def account(cli: Cli, mailbox: Mailbox, smtp: FaultySmtp, monkeypatch: pytest.MonkeyPatch) -> int:
    mailbox.ensure_folders()
    monkeypatch.setenv("POSTROOM_TRACKING_BASE_URL", "https://t.example.com")
    args = mailbox.add_imap_args("BOX_PASSWORD")
    args[args.index("--smtp-port") + 1] = str(smtp.port)
    os.environ["BOX_PASSWORD"] = mailbox.password
    data = cli.json(*args)
    assert isinstance(data, dict)
    return int(data["id"])


def rcpt(kind: str = "ann") -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.org"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def received(smtp: FaultySmtp, message_id: str) -> list[tuple[list[str], Message]]:
    return [
        (meta["rcpt_tos"], message_from_bytes(raw, policy=default_policy)) for meta, raw in smtp.received(message_id)
    ]


def calendar_of(msg: Message) -> Calendar:
    (part,) = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    return Calendar.from_ical(part.get_payload(decode=True))


def test_send_with_cc_and_bcc_answers_the_contract_shape_and_writes_the_identifiers(
    cli: Cli, smtp: FaultySmtp, account: int, tmp_path: Path
) -> None:
    ann, bob, carl = rcpt("ann"), rcpt("bob"), rcpt("carl")
    body = write(tmp_path, "body.md", "Thank you for **applying**.\n")
    data = cli.json(
        "send", "--account", str(account), "--to", ann, "--cc", bob, "--bcc", carl,
        "--subject", "Your application", "--body-file", body, "--json",
    )  # fmt: skip
    assert isinstance(data, dict) and set(data) >= SEND_KEYS
    assert data["recipients"] == [ann, bob, carl] and data["outbox_id"] == 1 and data["status"] == "sent"
    ((envelope, msg),) = received(smtp, data["message_id"])
    assert sorted(envelope) == sorted([ann, bob, carl])  # one message to all, as before --track
    assert msg["Subject"] == f"[{data['short_id']}] Your application" and msg["Reply-To"] == data["reply_to"]
    assert data["reply_to"].split("@")[0].endswith("+" + data["reply_to"].split("+")[1].split("@")[0])
    assert msg["To"] == ann and msg["Cc"] == bob and msg["Bcc"] is None
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/alternative", "text/plain", "text/html"]
    assert "<strong>applying</strong>" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_send_from_a_template_with_data_and_a_missing_placeholder_queues_nothing(
    cli: Cli, smtp: FaultySmtp, account: int, tmp_path: Path
) -> None:
    template = write(tmp_path, "t.md", "Dear {{ first_name }},\n\nsee you on {{ day }}.\n")
    cli("templates", "add", "--name", "Invite", "--subject", "Interview on {{ day }}", "--body-file", template)
    ann = rcpt("ann")
    code, out, err = cli(
        "send", "--account", str(account), "--to", ann, "--template", "Invite",
        "--data-file", write(tmp_path, "partial.json", json.dumps({"first_name": "Ann"})), ok=False,
    )  # fmt: skip
    assert code == 1 and out == "" and err.count("\n") == 1 and "day" in err
    assert cli.json("outbox", "list") == []  # nothing queued

    data = cli.json(
        "send", "--account", str(account), "--to", ann, "--template", "Invite",
        "--data-file", write(tmp_path, "d.json", json.dumps({"first_name": "Ann <b>", "day": "Tuesday"})), "--json",
    )  # fmt: skip
    assert isinstance(data, dict)
    ((_, msg),) = received(smtp, data["message_id"])
    assert msg["Subject"] == f"[{data['short_id']}] Interview on Tuesday"
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Dear Ann &lt;b&gt;" in html and "<b>" not in html.split("<body", 1)[1].replace("<br>", "")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--subject", "Hi\r\nBcc: evil@example.net"), "line break"),
        (("--to", "x@example.org\r\nBcc: evil@example.net"), "line break"),
        (("--in-reply-to", "<a\r\nBcc: evil@example.net>"), "In-Reply-To must be"),
        (("--invite-start", "2027-01-12T10:00+01:00"), "--invite-end"),
        (("--invite-start", "tomorrow", "--invite-end", "2027-01-12T11:00+01:00"), "--invite-start must be"),
    ],
)
def test_send_refuses_what_would_add_a_header_or_cannot_be_read_in_one_sentence(
    cli: Cli, smtp: FaultySmtp, account: int, tmp_path: Path, extra: tuple[str, ...], says: str
) -> None:
    body = write(tmp_path, "b.md", "Hello.\n")
    args = ["send", "--account", str(account), "--to", rcpt(), "--body-file", body, *extra]
    if "--subject" not in extra:
        args += ["--subject", "Hello"]
    before = len(smtp.transactions())
    code, out, err = cli(*args, ok=False)
    assert code == 1 and out == "" and err.count("\n") == 1 and says in err and "Traceback" not in err
    assert len(smtp.transactions()) == before and b"evil@" not in b"".join(r for _, r in smtp.transactions())


def test_track_without_a_tracking_address_is_one_sentence(
    cli: Cli, account: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSTROOM_TRACKING_BASE_URL")
    code, out, err = cli(
        "send", "--account", str(account), "--to", rcpt(), "--subject", "Hi", "--body-file",
        write(tmp_path, "b.md", "x\n"), "--track", ok=False,
    )  # fmt: skip
    assert code == 1 and out == "" and "tracking.base_url" in err and err.count("\n") == 1


def test_tracked_send_says_how_it_went_out(cli: Cli, smtp: FaultySmtp, account: int, tmp_path: Path) -> None:
    ann, bob = rcpt("ann"), rcpt("bob")
    code, out, _ = cli(
        "send", "--account", str(account), "--to", ann, "--to", bob, "--subject", "Hi",
        "--body-file", write(tmp_path, "b.md", "x\n"), "--track",
    )  # fmt: skip
    assert code == 0 and "one SMTP transaction per recipient" in out
    assert sorted(m["rcpt_tos"][0] for m, _ in smtp.transactions()[-2:]) == sorted([ann, bob])


def test_five_hundred_recipients_in_one_message(cli: Cli, smtp: FaultySmtp, account: int, tmp_path: Path) -> None:
    people = [rcpt(f"p{i}") for i in range(500)]
    args = ["send", "--account", str(account), "--subject", "Open day", "--body-file", write(tmp_path, "b.md", "x\n")]
    for p in people:
        args += ["--bcc", p] if p.startswith("p4") else ["--to", p]
    data = cli.json(*args, "--json")
    assert isinstance(data, dict) and data["status"] == "sent" and len(data["recipients"]) == 500
    ((envelope, msg),) = received(smtp, data["message_id"])
    assert sorted(envelope) == sorted(people)
    assert not any(p in str(msg["To"]) for p in people if p.startswith("p4"))


def test_an_invitation_is_rescheduled_and_cancelled_as_one_calendar_event(
    cli: Cli, smtp: FaultySmtp, account: int, tmp_path: Path
) -> None:
    ann = rcpt("ann")
    data = cli.json(
        "send", "--account", str(account), "--to", ann, "--subject", "Interview",
        "--body-file", write(tmp_path, "b.md", "See you.\n"), "--invite-start", "2027-01-12T10:00+01:00",
        "--invite-end", "2027-01-12T11:00+01:00", "--invite-location", "https://meet.example.com/x",
        "--invite-timezone", "Europe/Berlin", "--json",
    )  # fmt: skip
    assert isinstance(data, dict)
    ((_, first),) = received(smtp, data["message_id"])
    assert [p.get_content_type() for p in first.walk()][:2] == ["multipart/mixed", "multipart/alternative"]
    assert any(p.get_filename() == "invite.ics" for p in first.walk())
    event = calendar_of(first).walk("VEVENT")[0]
    assert calendar_of(first)["METHOD"] == "REQUEST" and int(event["SEQUENCE"]) == 0
    assert str(event["DTSTART"].params["TZID"]) == "Europe/Berlin"
    assert str(event["ATTENDEE"]) == f"mailto:{ann}" and event["ATTENDEE"].params["RSVP"] == "TRUE"

    moved = cli.json("invites", "reschedule", str(data["outbox_id"]), "--start", "2027-01-13T14:00+01:00", "--json")
    assert isinstance(moved, dict)
    ((_, second),) = received(smtp, moved["message_id"])
    again = calendar_of(second).walk("VEVENT")[0]
    assert str(again["UID"]) == str(event["UID"]) and int(again["SEQUENCE"]) == 1
    assert again["DTSTART"].dt.hour == 14 and (again["DTEND"].dt - again["DTSTART"].dt).seconds == 3600
    assert second["In-Reply-To"] == data["message_id"]

    gone = cli.json("invites", "cancel", str(data["outbox_id"]), "--json")  # the original id: its latest state
    assert isinstance(gone, dict)
    ((_, third),) = received(smtp, gone["message_id"])
    cancel = calendar_of(third)
    assert cancel["METHOD"] == "CANCEL" and int(cancel.walk("VEVENT")[0]["SEQUENCE"]) == 2
    assert str(cancel.walk("VEVENT")[0]["UID"]) == str(event["UID"])
    code, _, err = cli("invites", "cancel", str(data["outbox_id"]), ok=False)
    assert code == 1 and "cancelled already" in err
