"""Interview invitations, read back as a calendar client reads them: a REQUEST with a stable UID,
the account as ORGANIZER and every recipient an ATTENDEE asked to answer, times in the named
zone with its VTIMEZONE; moving bumps SEQUENCE, cancelling sends METHOD:CANCEL."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

import postroom.invitations
from postroom.invitations import (
    Invitation,
    InvitationError,
    cancelled,
    invitation_ics,
    new_invitation_uid,
    rescheduled,
)

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2027, 3, 30, 10, 0, tzinfo=BERLIN)  # the first week of summer time
STAMP = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)


def invitation(**changes: object) -> Invitation:
    fields: dict[str, object] = {
        "uid": "c0ffee@mail.example.com",
        "start": START,
        "end": START + timedelta(minutes=45),
        "timezone": "Europe/Berlin",
        "summary": "[k3x9q2] Interview: Data Engineer",
        "organizer": ("bo@example.com", "Bo Chen"),
        "attendees": ("zoe@example.org", "dan@example.net"),
        "location": "https://meet.example.com/abc-defg",
        "description": "We look forward to meeting you.",
    }
    fields.update(changes)
    return Invitation(**fields)  # type: ignore[arg-type]


def parsed(inv: Invitation) -> tuple[Calendar, Calendar]:
    """(the calendar, its one event)."""
    cal = Calendar.from_ical(invitation_ics(inv, stamp=STAMP))
    events = cal.walk("VEVENT")
    assert len(events) == 1
    return cal, events[0]


def test_doctests() -> None:
    assert doctest.testmod(postroom.invitations).failed == 0


def test_a_request_as_a_calendar_client_reads_it() -> None:
    cal, event = parsed(invitation())
    assert cal["METHOD"] == "REQUEST" and cal["VERSION"] == "2.0" and cal["PRODID"]
    assert event["UID"] == "c0ffee@mail.example.com"
    assert event["SEQUENCE"] == 0
    assert event["STATUS"] == "CONFIRMED"
    assert event["SUMMARY"] == "[k3x9q2] Interview: Data Engineer"
    assert event["LOCATION"] == "https://meet.example.com/abc-defg"
    assert event["URL"] == "https://meet.example.com/abc-defg"
    assert event["DESCRIPTION"] == "We look forward to meeting you."
    assert event.decoded("DTSTAMP") == STAMP
    organizer = event["ORGANIZER"]
    assert str(organizer) == "mailto:bo@example.com" and organizer.params["CN"] == "Bo Chen"
    attendees = event["ATTENDEE"]
    assert [str(a) for a in attendees] == ["mailto:zoe@example.org", "mailto:dan@example.net"]
    for attendee in attendees:
        assert attendee.params["RSVP"] == "TRUE"
        assert attendee.params["PARTSTAT"] == "NEEDS-ACTION"
        assert attendee.params["ROLE"] == "REQ-PARTICIPANT"


def test_times_are_in_the_named_zone_with_its_vtimezone() -> None:
    cal, event = parsed(invitation())
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert event["DTEND"].params["TZID"] == "Europe/Berlin"
    assert event.decoded("DTSTART") == START and event.decoded("DTEND") == START + timedelta(minutes=45)
    (zone,) = cal.walk("VTIMEZONE")
    assert zone["TZID"] == "Europe/Berlin"
    assert event.decoded("DTSTART").utcoffset() == timedelta(hours=2)  # summer time, from the VTIMEZONE
    ics = invitation_ics(invitation(), stamp=STAMP)
    assert b"DTSTART;TZID=Europe/Berlin:20270330T100000\r\n" in ics
    assert ics.index(b"BEGIN:VTIMEZONE") < ics.index(b"BEGIN:VEVENT")  # defined before it is used


def test_a_start_in_another_zone_is_written_in_the_invitations_zone() -> None:
    start = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
    _, event = parsed(invitation(start=start, end=start + timedelta(hours=1)))
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert event.decoded("DTSTART") == start
    assert invitation_ics(invitation(start=start, end=start + timedelta(hours=1))).count(b"T100000") == 1


@pytest.mark.parametrize(
    ("zone", "start", "tzid"),
    [
        ("UTC", START, None),
        (None, START, "Europe/Berlin"),  # the start's own IANA zone
        (None, datetime(2027, 3, 30, 10, tzinfo=timezone(timedelta(hours=5, minutes=30))), None),  # an offset: UTC
        ("America/New_York", START, "America/New_York"),
    ],
)
def test_the_zone_when_utc_or_not_named(zone: str | None, start: datetime, tzid: str | None) -> None:
    inv = invitation(timezone=zone, start=start, end=start + timedelta(hours=1))
    cal, event = parsed(inv)
    assert event.decoded("DTSTART") == start
    assert event["DTSTART"].params.get("TZID") == tzid
    assert [z["TZID"] for z in cal.walk("VTIMEZONE")] == ([tzid] if tzid else [])
    if tzid is None:  # written in UTC
        assert f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%S}Z\r\n".encode() in invitation_ics(inv)


def test_the_same_invitation_is_the_same_calendar() -> None:
    assert invitation_ics(invitation(), stamp=STAMP) == invitation_ics(invitation(), stamp=STAMP)


def test_rescheduling_keeps_the_uid_and_bumps_the_sequence() -> None:
    first = invitation()
    moved = rescheduled(first, START + timedelta(days=1), START + timedelta(days=1, hours=1))
    again = rescheduled(moved, START + timedelta(days=2), START + timedelta(days=2, hours=1))
    for inv, sequence, start in ((moved, 1, START + timedelta(days=1)), (again, 2, START + timedelta(days=2))):
        cal, event = parsed(inv)
        assert cal["METHOD"] == "REQUEST"
        assert event["UID"] == first.uid and event["SEQUENCE"] == sequence
        assert event.decoded("DTSTART") == start


def test_cancelling_sends_method_cancel_with_the_next_sequence() -> None:
    moved = rescheduled(invitation(), START + timedelta(days=1), START + timedelta(days=1, hours=1))
    cal, event = parsed(cancelled(moved))
    assert cal["METHOD"] == "CANCEL"
    assert event["UID"] == "c0ffee@mail.example.com" and event["SEQUENCE"] == 2
    assert event["STATUS"] == "CANCELLED"
    assert [str(a) for a in event["ATTENDEE"]] == ["mailto:zoe@example.org", "mailto:dan@example.net"]
    assert all("RSVP" not in a.params for a in event["ATTENDEE"])  # nothing to answer


def test_new_uids_are_unique_and_name_the_domain() -> None:
    uids = {new_invitation_uid("mail.example.com") for _ in range(1000)}
    assert len(uids) == 1000
    assert all(uid.endswith("@mail.example.com") for uid in uids)
    assert new_invitation_uid("bad domain\r\n").endswith("@postroom.invalid")


@pytest.mark.parametrize("field", ["summary", "location", "description"])
@pytest.mark.parametrize("sneaky", ["\r\nATTENDEE:mailto:eve@evil.example", "\rATTENDEE:mailto:eve@evil.example"])
def test_text_cannot_add_a_property(field: str, sneaky: str) -> None:
    _, event = parsed(invitation(**{field: "Interview" + sneaky}))
    assert [str(a) for a in event["ATTENDEE"]] == ["mailto:zoe@example.org", "mailto:dan@example.net"]
    assert event[field.upper()] == "Interview\nATTENDEE:mailto:eve@evil.example"
    raw = invitation_ics(invitation(**{field: "Interview" + sneaky}), stamp=STAMP)
    assert b"\r\nATTENDEE:mailto:eve" not in raw and b"\rATTENDEE" not in raw


def test_utf8_names_and_text() -> None:
    _, event = parsed(invitation(summary="Entretien — Zoë", organizer=("bo@example.com", 'Jürgen "JJ" Åberg')))
    assert event["SUMMARY"] == "Entretien — Zoë"
    assert event["ORGANIZER"].params["CN"] == 'Jürgen "JJ" Åberg'


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"start": datetime(2027, 3, 30, 10, 0)}, "invite_start"),  # no zone
        ({"end": datetime(2027, 3, 30, 11, 0)}, "invite_end"),
        ({"end": START}, "invite_end"),
        ({"end": START - timedelta(hours=1)}, "invite_end"),
        ({"timezone": "Mars/Olympus_Mons"}, "invite_timezone"),
        ({"timezone": "../../etc/passwd"}, "invite_timezone"),
        ({"organizer": ("bo@example.com\r\nATTENDEE:x", "Bo")}, "organizer"),
        ({"organizer": ("bo@example.com", "Bo\r\nATTENDEE:mailto:eve@evil.example")}, "organizer"),
        ({"attendees": ()}, "to"),
        ({"attendees": ("zoe@example.org\r\nX:y",)}, "to"),
        ({"attendees": ("Zoe <zoe@example.org>",)}, "to"),
        ({"uid": "two words@x"}, "uid"),
        ({"uid": "id\r\nX:y"}, "uid"),
        ({"method": "PUBLISH"}, "method"),
    ],
)
def test_an_invitation_that_cannot_be_written_is_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvitationError) as caught:
        invitation_ics(invitation(**changes))
    assert caught.value.field == field
    assert str(caught.value).endswith(".")
