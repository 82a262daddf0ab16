"""Interview invitations as iCalendar (RFC 5545, iTIP RFC 5546), the way Gmail and Outlook show
accept/decline buttons. Pure, no I/O.

An invitation is one VEVENT in a VCALENDAR whose METHOD is ``REQUEST`` (invite, or move) or
``CANCEL``; its UID stays the same for its whole life, and each change bumps SEQUENCE, so
calendars update the event they have instead of adding another:

>>> from datetime import datetime
>>> from zoneinfo import ZoneInfo
>>> berlin = ZoneInfo("Europe/Berlin")
>>> inv = Invitation(uid="3f2b@example.com", start=datetime(2025, 5, 6, 10, tzinfo=berlin),
...                  end=datetime(2025, 5, 6, 11, tzinfo=berlin), timezone="Europe/Berlin",
...                  summary="Interview", organizer=("bo@example.com", "Bo Chen"),
...                  attendees=("ann@example.com",))
>>> moved = rescheduled(inv, inv.start.replace(hour=14), inv.end.replace(hour=15))
>>> moved.uid == inv.uid, moved.sequence, cancelled(moved).method, cancelled(moved).sequence
(True, 1, 'CANCEL', 2)
>>> ics = invitation_ics(inv).decode().replace("\\r\\n ", "")  # unfolded
>>> "METHOD:REQUEST" in ics and "DTSTART;TZID=Europe/Berlin:20250506T100000" in ics
True
>>> "ATTENDEE;CUTYPE=INDIVIDUAL;PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:ann@example.com" in ics
True
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Calendar, Event, Timezone, vCalAddress, vText

from postroom.errors import UserError

__all__ = [
    "Invitation",
    "InvitationError",
    "cancelled",
    "invitation_ics",
    "new_invitation_uid",
    "rescheduled",
]

METHODS = ("REQUEST", "CANCEL")
PRODID = "-//Postroom//Interview invitations//EN"

_PLAIN_ADDRESS = re.compile(r"[^\s\"<>(),;:\\@]+@[^\s\"<>(),;:\\@]+")
_UID = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class InvitationError(UserError):
    """An invitation that cannot be written: an end not after its start, a time without a
    time zone, an unknown time zone, a malformed address or UID. ``field`` names it
    (``invite_start``, ``invite_end``, ``invite_timezone``, ``organizer``, ``to``, ``uid``)."""


@dataclass(frozen=True)
class Invitation:
    """One interview, as the calendar sees it. ``start`` and ``end`` are aware datetimes,
    written in ``timezone`` (an IANA name, e.g. ``Europe/Berlin``; ``None``: the zone of
    ``start`` if it is an IANA one, else UTC). ``organizer`` is ``(address, name)``, the
    sending account. ``location`` is a place or a video link (a link is also the event's URL)."""

    uid: str
    start: datetime
    end: datetime
    timezone: str | None
    summary: str
    organizer: tuple[str, str]
    attendees: tuple[str, ...]
    location: str = ""
    description: str = ""
    sequence: int = 0
    method: str = "REQUEST"  # or CANCEL


def new_invitation_uid(domain: str) -> str:
    """A fresh UID for a new invitation, e.g. ``9c1e...@example.com``; keep it for its life."""
    uid = f"{uuid.uuid4().hex}@{domain}"
    return uid if _UID.fullmatch(uid) else f"{uuid.uuid4().hex}@postroom.invalid"


def rescheduled(inv: Invitation, start: datetime, end: datetime) -> Invitation:
    """The same interview at a new time: same UID, SEQUENCE + 1, a REQUEST again."""
    return replace(inv, start=start, end=end, sequence=inv.sequence + 1, method="REQUEST")


def cancelled(inv: Invitation) -> Invitation:
    """The interview called off: same UID, SEQUENCE + 1, METHOD:CANCEL."""
    return replace(inv, sequence=inv.sequence + 1, method="CANCEL")


def invitation_ics(inv: Invitation, *, stamp: datetime | None = None) -> bytes:
    """The VCALENDAR (UTF-8, CRLF lines) for ``inv``: METHOD; one VEVENT with UID, SEQUENCE,
    DTSTAMP (``stamp``, default now), DTSTART/DTEND in the invitation's TZID with its
    VTIMEZONE, SUMMARY, LOCATION, DESCRIPTION, STATUS (CONFIRMED, or CANCELLED), ORGANIZER
    and one ATTENDEE per address (``RSVP=TRUE`` on a request). Raises :class:`InvitationError`."""
    zone = _check(inv)
    organizer_address, organizer_name = inv.organizer
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", inv.method)
    event = Event()
    event.add("uid", inv.uid)
    event.add("sequence", inv.sequence)
    event.add("dtstamp", (stamp or datetime.now(UTC)).astimezone(UTC))
    event.add("dtstart", inv.start.astimezone(zone))
    event.add("dtend", inv.end.astimezone(zone))
    event.add("summary", _text(inv.summary))
    if inv.location:
        event.add("location", _text(inv.location))
        if re.fullmatch(r"https?://\S+", inv.location.strip()):
            event.add("url", inv.location.strip())
    if inv.description:
        event.add("description", _text(inv.description))
    event.add("status", "CANCELLED" if inv.method == "CANCEL" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    organizer = vCalAddress(f"mailto:{organizer_address}")
    if organizer_name:
        organizer.params["CN"] = vText(organizer_name)
    event.add("organizer", organizer)
    for address in dict.fromkeys(inv.attendees):
        attendee = vCalAddress(f"mailto:{address}")
        attendee.params["CUTYPE"] = "INDIVIDUAL"
        attendee.params["ROLE"] = "REQ-PARTICIPANT"
        attendee.params["PARTSTAT"] = "NEEDS-ACTION"
        if inv.method == "REQUEST":
            attendee.params["RSVP"] = "TRUE"
        event.add("attendee", attendee, encode=False)
    if zone.key != "UTC":  # UTC times are written ...Z and need no VTIMEZONE
        margin = timedelta(days=366)  # a VTIMEZONE for the years around the event, not 1970-2038
        first, last = (inv.start - margin).date(), (inv.end + margin).date()
        cal.add_component(Timezone.from_tzid(zone.key, first_date=first, last_date=last))
    cal.add_component(event)
    return bytes(cal.to_ical())


def _check(inv: Invitation) -> ZoneInfo:
    if inv.method not in METHODS:
        raise InvitationError(f"An invitation's method is REQUEST or CANCEL, not {inv.method!r}.", "method")
    if not _UID.fullmatch(inv.uid):
        raise InvitationError(f"An invitation's UID must be printable ASCII without spaces, not {inv.uid!r}.", "uid")
    for what, when in (("start", inv.start), ("end", inv.end)):
        if when.tzinfo is None or when.utcoffset() is None:
            raise InvitationError(f"The interview's {what} {when.isoformat()} needs a time zone.", f"invite_{what}")
    if inv.end <= inv.start:
        raise InvitationError(
            f"The interview must end after it starts ({inv.start.isoformat()}), not at {inv.end.isoformat()}.",
            "invite_end",
        )
    zone = _zone(inv)
    address, name = inv.organizer
    if _CONTROL.search(name) or not _PLAIN_ADDRESS.fullmatch(address):
        raise InvitationError(f"The organizer {address!r} is not a plain email address.", "organizer")
    if not inv.attendees:
        raise InvitationError("An invitation needs at least one attendee.", "to")
    for address in inv.attendees:
        if not _PLAIN_ADDRESS.fullmatch(address):
            raise InvitationError(f"The attendee {address!r} is not a plain email address.", "to")
    return zone


def _zone(inv: Invitation) -> ZoneInfo:
    if inv.timezone is None:
        return inv.start.tzinfo if isinstance(inv.start.tzinfo, ZoneInfo) else ZoneInfo("UTC")
    try:
        return ZoneInfo(inv.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvitationError(
            f"{inv.timezone!r} is not a time zone; use an IANA name such as Europe/Berlin.", "invite_timezone"
        ) from None


def _text(value: str) -> str:
    """Text for a property: line breaks as iCalendar writes them, no other control characters
    (a lone CR would start a new line for a lax reader)."""
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))
