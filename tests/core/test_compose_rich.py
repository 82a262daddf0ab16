"""The message a template makes, read back with the stdlib parser as a mail client would: the
alternatives in the order clients pick from (text first, HTML last), the invitation where Gmail
and Outlook look for it, the visible headers and never a Bcc, nothing a caller passes able to
add a header line, UTF-8 throughout, and 500 recipients as well as one."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from postroom.compose import ComposeError, compose_rich
from postroom.invitations import Invitation, cancelled, invitation_ics
from postroom.mime import Address
from postroom.rendering import render_body

WHEN = datetime(2027, 1, 12, 9, 30, tzinfo=UTC)
START = datetime(2027, 1, 20, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
INVITE = Invitation(
    uid="c0ffee@mail.example.com",
    start=START,
    end=START + timedelta(hours=1),
    timezone="Europe/Paris",
    summary="Interview",
    organizer=("bo@example.com", "Bo Chen"),
    attendees=("zoe@example.org",),
)
BODY = render_body("Dear Zoë,\n\nSee [the role](https://jobs.example.com/42).", subject="Hi", sender_name="Bo")


def compose(**changes: Any) -> tuple[str, bytes]:
    args: dict[str, Any] = {
        "sender": Address("Bo Chen", "bo@example.com"),
        "to": ["zoe@example.org"],
        "cc": ["Dan <dan@example.net>"],
        "reply_to": "bo+t0ken@example.com",
        "subject": "[k3x9q2] Your interview",
        "text": BODY.text,
        "html": BODY.html,
        "date": WHEN,
        "domain": "example.com",
    }
    args.update(changes)
    return compose_rich(**args)


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def types(msg: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in msg.walk()]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ["multipart/alternative", "text/plain", "text/html"]),
        ({"json_data": {"role": "SRE"}}, ["multipart/alternative", "text/plain", "application/json", "text/html"]),
        (
            {"invitation_ics": invitation_ics(INVITE)},
            ["multipart/mixed", "multipart/alternative", "text/plain", "text/calendar", "text/html", "application/ics"],
        ),
        (
            {"json_data": {"role": "SRE"}, "invitation_ics": invitation_ics(INVITE)},
            [
                "multipart/mixed",
                "multipart/alternative",
                "text/plain",
                "application/json",
                "text/calendar",
                "text/html",
                "application/ics",
            ],
        ),
    ],
)
def test_parts_come_in_the_order_clients_pick_from(extra: dict[str, Any], expected: list[str]) -> None:
    _, raw = compose(**extra)
    assert types(parse(raw)) == expected


def test_the_text_and_html_parts_carry_the_bodies_in_utf8() -> None:
    _, raw = compose()
    msg = parse(raw)
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    assert plain.get_content().replace("\r\n", "\n") == BODY.text
    assert html.get_content().replace("\r\n", "\n") == BODY.html + "\n"
    assert msg.get_body() is html  # the part a client prefers


def test_the_html_part_is_one_document_the_tracker_can_edit() -> None:
    _, raw = compose(invitation_ics=invitation_ics(INVITE), json_data={"x": 1})
    (html,) = [p for p in parse(raw).walk() if p.get_content_type() == "text/html"]
    assert not html.is_multipart()
    content = html.get_content()
    assert content.rstrip().endswith("</body></html>") and content.count("</body>") == 1
    anchors = re.findall(r"<a\s[^>]*>", content)
    assert anchors and all(re.search(r'\shref="[^"]*"', a) for a in anchors)


def test_the_json_part_carries_the_data() -> None:
    data = {"role": "Data Engineer", "slots": ["Mon", "Tue"], "city": "Zürich"}
    _, raw = compose(json_data=data)
    (part,) = [p for p in parse(raw).walk() if p.get_content_type() == "application/json"]
    assert json.loads(part.get_content()) == data
    assert part.get_content_disposition() is None  # an alternative, not an attachment


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
def test_an_invitation_is_a_calendar_part_and_an_ics_attachment(method: str) -> None:
    ics = invitation_ics(INVITE if method == "REQUEST" else cancelled(INVITE))
    _, raw = compose(invitation_ics=ics)
    msg = parse(raw)
    (calendar,) = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert calendar.get_param("method") == method
    assert calendar.get_content_charset() == "utf-8"
    assert calendar.get_content().replace("\r\n", "\n") == ics.decode().replace("\r\n", "\n")
    (attachment,) = [p for p in msg.walk() if p.get_content_type() == "application/ics"]
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_content() == ics
    assert f"METHOD:{method}".encode() in attachment.get_content()


def test_the_invitation_method_given_must_agree_with_the_ics() -> None:
    _, raw = compose(invitation_ics=invitation_ics(INVITE), invitation_method="REQUEST")
    assert b'method="REQUEST"' in raw
    with pytest.raises(ComposeError) as caught:
        compose(invitation_ics=invitation_ics(INVITE), invitation_method="CANCEL")
    assert caught.value.field == "invitation"
    with pytest.raises(ComposeError, match="iCalendar with METHOD:REQUEST or METHOD:CANCEL"):
        compose(invitation_ics=b"BEGIN:VCALENDAR\r\nMETHOD:PUBLISH\r\nEND:VCALENDAR\r\n")


def test_the_visible_headers() -> None:
    mid, raw = compose(in_reply_to="<parent@example.org>", references=("<root@example.org>", "<parent@example.org>"))
    msg = parse(raw)
    assert msg["Message-ID"] == mid and mid.endswith("@example.com>")
    assert msg["From"] == "Bo Chen <bo@example.com>"
    assert msg["To"] == "zoe@example.org"
    assert msg["Cc"] == "Dan <dan@example.net>"
    assert msg["Reply-To"] == "bo+t0ken@example.com"
    assert msg["Subject"] == "[k3x9q2] Your interview"
    assert msg["Date"].datetime == WHEN
    assert msg["MIME-Version"] == "1.0"
    assert msg["In-Reply-To"] == "<parent@example.org>"
    assert msg["References"].split() == ["<root@example.org>", "<parent@example.org>"]
    headers = raw.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0].lower() for line in headers.split("\r\n") if not line.startswith((" ", "\t"))]
    for once in ("message-id", "date", "from", "to", "cc", "reply-to", "subject", "mime-version", "content-type"):
        assert names.count(once) == 1, once


def test_no_cc_or_reply_to_header_when_none_is_given() -> None:
    _, raw = compose(cc=[], reply_to=None)
    msg = parse(raw)
    assert msg["Cc"] is None and msg["Reply-To"] is None


def test_a_bcc_never_appears() -> None:
    """Bcc recipients get the message by the envelope only: nothing about them is written."""
    for extra in ({}, {"invitation_ics": invitation_ics(INVITE)}, {"json_data": {"a": 1}}):
        _, raw = compose(**extra)
        assert re.search(rb"^bcc:", raw, re.IGNORECASE | re.MULTILINE) is None
        assert parse(raw)["Bcc"] is None


SNEAKY = ["\r\nBcc: eve@evil.example", "\nBcc: eve@evil.example", "\rBcc: eve@evil.example", "\x00", "\u2028X: y",
          "\x85X: y", "\tX"]  # fmt: skip


@pytest.mark.parametrize("sneaky", SNEAKY)
@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("subject", lambda s: {"subject": "Your interview" + s}),
        ("sender", lambda s: {"sender": Address("Bo" + s, "bo@example.com")}),
        ("sender", lambda s: {"sender": Address("Bo", "bo@example.com" + s)}),
        ("sender", lambda s: {"sender": "bo@example.com" + s}),
        ("to", lambda s: {"to": ["zoe@example.org" + s]}),
        ("to", lambda s: {"to": ["Zoe" + s + " <zoe@example.org>"]}),
        ("to", lambda s: {"to": ["ok@example.org", "zoe@example.org" + s]}),
        ("cc", lambda s: {"cc": ["dan@example.net" + s]}),
        ("cc", lambda s: {"cc": ["Dan" + s + " <dan@example.net>"]}),
        ("reply_to", lambda s: {"reply_to": "bo+tok@example.com" + s}),
        ("in_reply_to", lambda s: {"in_reply_to": "<parent@example.org>" + s}),
        ("message_id", lambda s: {"message_id": "<mine@example.com>" + s}),
    ],
)
def test_nothing_a_caller_passes_can_add_a_header_line(field: str, change: Any, sneaky: str) -> None:
    with pytest.raises(ComposeError) as caught:
        compose(**change(sneaky))
    assert caught.value.field == field


def test_references_of_any_other_form_are_left_out() -> None:
    sneaky = "<a@example.org>\r\nBcc: eve@evil.example"
    _, raw = compose(in_reply_to="<p@example.org>", references=(sneaky, "<p@example.org>"))
    assert b"eve@evil" not in raw
    assert parse(raw)["References"] == "<p@example.org>"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to": []}, "to"),
        ({"to": ["zoe@example.org, eve@evil.example"]}, "to"),
        ({"to": ["not an address"]}, "to"),
        ({"cc": ["dan@example.net; eve@evil.example"]}, "cc"),
        ({"reply_to": "bo@example.com, eve@evil.example"}, "reply_to"),
        ({"reply_to": "nobody"}, "reply_to"),
        ({"sender": "Bo <bo@example.com>"}, "sender"),
    ],
)
def test_each_address_must_be_one_plain_address(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ComposeError) as caught:
        compose(**change)
    assert caught.value.field == field


def test_utf8_everywhere() -> None:
    body = render_body("Grüße, Zoë — 面接の日程 🎉", subject="x", sender_name="x")
    _, raw = compose(
        sender=Address("Jürgen Åberg", "jurgen@example.com"),
        to=["Zoë Martin <zoe@example.org>"],
        subject="Entretien — Zoë, 面接",
        text=body.text,
        html=body.html,
        json_data={"ville": "Zürich"},
        invitation_ics=invitation_ics(Invitation(**{**INVITE.__dict__, "summary": "Entretien — Zoë"})),
    )
    assert raw.isascii()  # 7bit-clean on the wire: every non-ASCII byte is encoded
    msg = parse(raw)
    assert msg["Subject"] == "Entretien — Zoë, 面接"
    assert msg["From"] == "Jürgen Åberg <jurgen@example.com>"
    assert msg["To"] == "Zoë Martin <zoe@example.org>"
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            assert part.get_content_charset() == "utf-8"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert "Grüße, Zoë — 面接の日程 🎉" in plain.get_content() and "Grüße, Zoë — 面接の日程 🎉" in html.get_content()
    (calendar,) = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert "SUMMARY:Entretien — Zoë" in calendar.get_content()
    (data,) = [p for p in msg.walk() if p.get_content_type() == "application/json"]
    assert json.loads(data.get_content()) == {"ville": "Zürich"}


def test_500_recipients_in_to_and_cc() -> None:
    to = [f"applicant{i}@example.org" for i in range(500)]
    cc = [f"Panel Member {i} <panel{i}@example.net>" for i in range(500)]
    _, raw = compose(to=to, cc=cc, invitation_ics=invitation_ics(INVITE))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert [a.addr_spec for a in msg["To"].addresses] == to
    assert [a.addr_spec for a in msg["Cc"].addresses] == [f"panel{i}@example.net" for i in range(500)]
    assert msg["Cc"].addresses[499].display_name == "Panel Member 499"


def test_message_ids_are_fresh_unless_given() -> None:
    first, _ = compose()
    second, _ = compose()
    assert first != second
    given, raw = compose(message_id="<mine.1@example.com>")
    assert given == "<mine.1@example.com>" and parse(raw)["Message-ID"] == given
