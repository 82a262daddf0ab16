"""Verdicts on tracking hits: was it a person, or a machine? Pure functions, no I/O.

A hit is a fetch of a copy's pixel (an *open*) or of one of its rewritten links (a *click*).
Every hit is kept with its raw signals; the verdict says whether it counts. The rules
(docs/tracking.md explains each, with its sources), first match wins:

========================================  =================================================
signal                                    verdict
========================================  =================================================
fetched before the copy was accepted      machine: nobody can read a message before then
``HEAD`` request                          machine: link checkers ask for headers only
no ``User-Agent``                         machine: every browser and mail client sends one
``GoogleImageProxy`` in the user agent    machine: Gmail's image proxy
``YahooMailProxy`` in the user agent      machine: Yahoo Mail's image proxy
bare ``Mozilla/5.0`` from Apple's ranges  machine: Apple Mail Privacy Protection
bare ``Mozilla/5.0`` from elsewhere       machine: no browser sends only that
a known scanner or HTTP library agent     machine (:data:`SCANNER_AGENTS`)
anything else                             a person
========================================  =================================================

and, over all the clicks of one copy (:func:`rejudge`): every link of the copy clicked within
``window`` seconds of delivery is a scanner, whatever each click looked like. A click without
an earlier open is *not* by itself a machine: many people read with images blocked, then click.

>>> from datetime import UTC, datetime, timedelta
>>> sent = datetime(2026, 8, 17, 9, 0, tzinfo=UTC)
>>> proxy = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
>>> judge(Hit("open", sent + timedelta(minutes=5), "GET", proxy, "66.249.84.1"), sent_at=sent, apple=AppleRanges())
Verdict(machine=True, reason="Gmail's image proxy (GoogleImageProxy): it fetches images for the reader")
>>> safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
>>> judge(Hit("click", sent + timedelta(minutes=9), "GET", safari, "203.0.113.9", 0, "https://example.com/"),
...       sent_at=sent, apple=AppleRanges())
Verdict(machine=False, reason='no sign of a machine')
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Protocol

from postroom.states import HitKind

__all__ = [
    "PERSON",
    "SCANNER_AGENTS",
    "AppleRanges",
    "Hit",
    "Judged",
    "Verdict",
    "burst_reason",
    "judge",
    "parse_networks",
    "rejudge",
]

SNAPSHOT = "apple-relay-egress.txt"  # in postroom/data, shipped as package data
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Hit:
    """One request for a pixel or a link, as the endpoint saw it."""

    kind: str  # HitKind
    at: datetime  # aware, UTC
    method: str  # GET | HEAD
    user_agent: str
    ip: str
    link: int | None = None  # clicks: which link of the copy, from 0
    url: str | None = None  # clicks: where it redirected


@dataclass(frozen=True, slots=True)
class Verdict:
    machine: bool
    reason: str  # one phrase for a person; kept with the hit (at most 200 characters)


PERSON = Verdict(False, "no sign of a machine")


class Judged(Protocol):
    """A stored hit with its verdict, as :func:`rejudge` reads it (a ``TrackingEvent`` row fits)."""

    kind: str
    link: int | None
    seconds_after_send: float | None
    machine: bool
    reason: str


# (needle, who it is, the kinds of hit it marks): a case-insensitive substring of the user agent.
# Sources for each are in docs/tracking.md. Kept short and specific: a wrong entry hides real
# people, so generic words ("bot", "spider") are not here.
SCANNER_AGENTS: tuple[tuple[str, str, frozenset[str]], ...] = tuple(
    (needle, who, frozenset(kinds))
    for needle, who, kinds in (
        ("bingpreview", "Outlook.com's link preview (BingPreview)", ("open", "click")),
        ("microsoft office existence discovery", "Microsoft Office checking that a link exists", ("open", "click")),
        # Outlook for Windows loads images with "ms-office" in its agent: an open by it is the reader's;
        # a click with it is the Office app fetching the link itself before handing it to the browser.
        ("ms-office", "a Microsoft Office app fetching the link before the browser (ms-office)", ("click",)),
        ("msoffice", "a Microsoft Office app fetching the link before the browser (MSOffice)", ("click",)),
        ("barracuda", "Barracuda's link protection", ("open", "click")),
        ("proofpoint", "Proofpoint URL Defense", ("open", "click")),
        ("mimecast", "Mimecast URL Protect", ("open", "click")),
        ("headlesschrome", "a headless browser (HeadlessChrome), as security sandboxes use", ("open", "click")),
        ("python-requests", "an HTTP library (python-requests), not a browser", ("open", "click")),
        ("python-urllib", "an HTTP library (Python urllib), not a browser", ("open", "click")),
        ("python-httpx", "an HTTP library (httpx), not a browser", ("open", "click")),
        ("aiohttp", "an HTTP library (aiohttp), not a browser", ("open", "click")),
        ("curl/", "an HTTP library (curl), not a browser", ("open", "click")),
        ("wget/", "an HTTP library (Wget), not a browser", ("open", "click")),
        ("go-http-client", "an HTTP library (Go-http-client), not a browser", ("open", "click")),
        ("apache-httpclient", "an HTTP library (Apache HttpClient), not a browser", ("open", "click")),
        ("java/", "an HTTP library (Java), not a browser", ("open", "click")),
        ("libwww-perl", "an HTTP library (libwww-perl), not a browser", ("open", "click")),
        ("node-fetch", "an HTTP library (node-fetch), not a browser", ("open", "click")),
        ("axios/", "an HTTP library (axios), not a browser", ("open", "click")),
        ("scrapy", "a crawler (Scrapy), not a browser", ("open", "click")),
    )
)


def judge(hit: Hit, *, sent_at: datetime | None, apple: AppleRanges) -> Verdict:
    """The verdict on one hit by its own signals (module docstring); ``sent_at`` is when the
    recipient's server accepted this copy (None if Postroom does not know)."""
    if sent_at is not None and hit.at < sent_at:
        return Verdict(True, "fetched before the recipient's server had accepted the copy")
    if hit.method.upper() == "HEAD":
        return Verdict(True, "a HEAD request: link checkers ask for headers only, browsers and mail clients GET")
    agent = hit.user_agent.strip()
    if not agent:
        return Verdict(True, "no user agent: every browser and mail client sends one")
    if "GoogleImageProxy" in agent:
        return Verdict(True, "Gmail's image proxy (GoogleImageProxy): it fetches images for the reader")
    if "YahooMailProxy" in agent:
        return Verdict(True, "Yahoo Mail's image proxy (YahooMailProxy): it fetches images for the reader")
    if agent == "Mozilla/5.0":
        if apple.contains(hit.ip):
            return Verdict(True, "Apple Mail Privacy Protection: a bare 'Mozilla/5.0' from Apple's relay addresses")
        return Verdict(True, "a bare 'Mozilla/5.0' user agent, which no browser or mail client sends")
    lowered = agent.lower()
    for needle, who, kinds in SCANNER_AGENTS:
        if hit.kind in kinds and needle in lowered:
            return Verdict(True, who)
    return PERSON


def burst_reason(window: float) -> str:
    return f"every link clicked within {window:g} s of delivery"


def rejudge(events: Sequence[Judged], window: float, links: int | None = None) -> list[Verdict]:
    """The verdicts on one copy's hits once its clicks are looked at together.

    If every one of the copy's ``links`` (their number; None: the links clicked) was clicked
    within ``window`` seconds of delivery, those clicks are a scanner's. Otherwise each hit
    keeps its verdict. Only ever turns a person into a machine, so it may be run again
    whenever a click arrives.

    >>> from types import SimpleNamespace as E
    >>> burst = [E(kind="click", link=i, seconds_after_send=0.4 + i / 10, machine=False, reason="") for i in (0, 1)]
    >>> [v.machine for v in rejudge(burst, 2.0, links=2)], rejudge(burst, 2.0, links=3)[0].machine
    ([True, True], False)
    """
    verdicts = [Verdict(e.machine, e.reason) for e in events]
    early = [
        i
        for i, e in enumerate(events)
        if e.kind == HitKind.CLICK
        and e.link is not None
        and e.seconds_after_send is not None
        and e.seconds_after_send <= window
    ]
    clicked = {events[i].link for i in early}
    wanted = set(range(links)) if links is not None else clicked
    if not wanted or not wanted <= clicked:
        return verdicts
    reason = burst_reason(window)
    for i in early:
        if not verdicts[i].machine:
            verdicts[i] = Verdict(True, reason)
    return verdicts


class AppleRanges:
    """Apple's Mail Privacy Protection / iCloud Private Relay egress ranges, for fast lookups:
    sorted, merged integer intervals per address family, searched with bisect.

    >>> r = AppleRanges.parse(["17.0.0.0/8", "2a02:26f7:b3c0:4000::/64", "104.28.28.76"])
    >>> r.contains("17.58.1.2"), r.contains("2a02:26f7:b3c0:4000::1"), r.contains("104.28.28.77"), len(r)
    (True, True, False, 3)
    """

    def __init__(self, intervals: Iterable[tuple[int, int, int]] = ()) -> None:
        # intervals: (version, first, last) as integers
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        self._count = 0
        for version, first, last in sorted(intervals):
            self._count += 1
            starts, ends = self._starts[version], self._ends[version]
            if ends and first <= ends[-1] + 1:  # overlaps or touches the previous one: merge
                ends[-1] = max(ends[-1], last)
            else:
                starts.append(first)
                ends.append(last)

    def __len__(self) -> int:
        """How many ranges were read (before merging)."""
        return self._count

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "the list") -> AppleRanges:
        """Ranges from lines of ``CIDR`` or bare addresses, or of Apple's CSV feed (the first
        column); blank lines and ``#`` comments are skipped. A line that is neither raises
        ValueError naming ``source`` and the line number."""
        return cls(parse_lines(lines, source))

    @classmethod
    def load(cls, path: str | Path) -> AppleRanges:
        with open(path, encoding="utf-8") as fh:
            return cls.parse(fh, str(path))

    @classmethod
    def shipped(cls) -> AppleRanges:
        """The snapshot shipped with Postroom (``postroom/data/apple-relay-egress.txt``)."""
        text = resources.files("postroom").joinpath("data", SNAPSHOT).read_text(encoding="utf-8")
        return cls.parse(text.splitlines(), f"postroom/data/{SNAPSHOT}")

    def contains(self, ip: str) -> bool:
        """Whether ``ip`` (v4, v6 or v4-mapped v6) is in one of the ranges; False for anything
        that is not an address."""
        try:
            addr = ipaddress.ip_address(ip.strip())
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        value = int(addr)
        starts = self._starts[addr.version]
        i = bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[addr.version][i]


def parse_networks(lines: Iterable[str], source: str = "the list") -> list[IPNetwork]:
    """Every range in ``lines`` (see :meth:`AppleRanges.parse`), as written."""
    out: list[IPNetwork] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].split(",", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"Line {number} of {source} is not an IP address or range: {line.strip()[:80]!r}."
            ) from None
    return out


def parse_lines(lines: Iterable[str], source: str = "the list") -> list[tuple[int, int, int]]:
    """``(version, first, last)`` for every range in ``lines``."""
    return [(n.version, int(n.network_address), int(n.broadcast_address)) for n in parse_networks(lines, source)]
