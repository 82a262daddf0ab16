"""Honest opens and clicks: proxies, privacy prefetches and scanners are flagged as machines;
people are not mistaken for them."""

from __future__ import annotations

import doctest
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import postroom.hits
from postroom.hits import AppleRanges, Hit, Verdict, burst_reason, judge, rejudge

SENT = datetime(2026, 8, 17, 9, 0, tzinfo=UTC)
LATER = SENT + timedelta(minutes=12)
APPLE = AppleRanges.shipped()
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
OUTLOOK = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; "
    "Microsoft Outlook 16.0.5257; ms-office; MSOffice 16)"
)
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
APPLE_V4, APPLE_V6, ELSEWHERE = "104.28.28.76", "2a09:bac3:d000::1", "203.0.113.5"


def hit(
    kind: str = "open", ua: str = CHROME, ip: str = "198.51.100.7", method: str = "GET", at: datetime = LATER
) -> Hit:
    return Hit(
        kind, at, method, ua, ip, 0 if kind == "click" else None, "https://example.com/" if kind == "click" else None
    )


@pytest.mark.parametrize(
    ("what", "the_hit", "machine", "reason_has"),
    [
        ("a person's browser opens", hit("open"), False, "no sign"),
        ("a person's browser clicks", hit("click"), False, "no sign"),
        ("Outlook for Windows loads the images", hit("open", OUTLOOK), False, "no sign"),
        ("Outlook's own fetch of a link", hit("click", OUTLOOK), True, "Microsoft Office"),
        ("Gmail's image proxy", hit("open", GMAIL, "66.249.84.5"), True, "GoogleImageProxy"),
        ("Yahoo's image proxy", hit("open", YAHOO), True, "YahooMailProxy"),
        ("Apple MPP, IPv4", hit("open", "Mozilla/5.0", APPLE_V4), True, "Apple Mail Privacy Protection"),
        ("Apple MPP, IPv6", hit("open", "Mozilla/5.0", APPLE_V6), True, "Apple Mail Privacy Protection"),
        ("Apple MPP, v4-mapped", hit("open", "Mozilla/5.0", "::ffff:" + APPLE_V4), True, "Apple Mail Privacy"),
        ("bare agent outside Apple's ranges", hit("open", "Mozilla/5.0", ELSEWHERE), True, "no browser"),
        ("a person on iCloud Private Relay", hit("open", SAFARI, APPLE_V4), False, "no sign"),
        ("a person clicking through Private Relay", hit("click", SAFARI, APPLE_V6), False, "no sign"),
        ("a HEAD request", hit("click", method="HEAD"), True, "HEAD"),
        ("a HEAD request for the pixel", hit("open", method="head"), True, "HEAD"),
        ("no user agent", hit("click", ""), True, "no user agent"),
        ("Outlook.com link preview", hit("click", "Mozilla/5.0 (Windows NT 6.1) BingPreview/1.0b"), True, "Bing"),
        ("Office link check", hit("click", "Microsoft Office Existence Discovery"), True, "Microsoft Office"),
        ("Barracuda", hit("click", "Mozilla/5.0 Barracuda Link Protection"), True, "Barracuda"),
        ("Proofpoint", hit("click", "Mozilla/5.0 (compatible; Proofpoint URL Defense)"), True, "Proofpoint"),
        ("python-requests", hit("click", "python-requests/2.32.3"), True, "python-requests"),
        ("curl", hit("open", "curl/8.5.0"), True, "curl"),
        ("Go", hit("click", "Go-http-client/1.1"), True, "Go-http-client"),
        ("a headless sandbox", hit("click", CHROME.replace("Chrome/", "HeadlessChrome/")), True, "headless"),
        ("fetched before the copy was accepted", hit("open", at=SENT - timedelta(seconds=3)), True, "before"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_each_hit_is_judged_by_its_signals(what: str, the_hit: Hit, machine: bool, reason_has: str) -> None:
    verdict = judge(the_hit, sent_at=SENT, apple=APPLE)
    assert verdict.machine is machine, what
    assert reason_has.lower() in verdict.reason.lower(), verdict.reason
    assert len(verdict.reason) <= 200  # fits tracking_events.reason


def test_an_unknown_send_time_judges_by_the_other_signals() -> None:
    assert judge(hit("open", at=SENT - timedelta(days=1)), sent_at=None, apple=APPLE).machine is False


@dataclass
class Event:
    kind: str
    link: int | None
    seconds_after_send: float | None
    machine: bool = False
    reason: str = "no sign of a machine"


def test_every_link_clicked_within_the_window_of_delivery_is_a_scanner() -> None:
    events = [
        Event("open", None, 0.2),
        Event("click", 0, 0.5),
        Event("click", 1, 0.9),
        Event("click", 2, 1.4, True, "a HEAD request"),
        Event("click", 1, 600.0),  # the person, ten minutes later
    ]
    verdicts = rejudge(events, 2.0, links=3)
    assert verdicts[1:4] == [
        Verdict(True, "every link clicked within 2 s of delivery"),
        Verdict(True, "every link clicked within 2 s of delivery"),
        Verdict(True, "a HEAD request"),  # a reason it already had is kept
    ]
    assert verdicts[0] == Verdict(False, "no sign of a machine")  # opens are judged on their own signals
    assert verdicts[4] == Verdict(False, "no sign of a machine")
    assert burst_reason(1.5) == "every link clicked within 1.5 s of delivery"


@pytest.mark.parametrize(
    ("clicks", "links"),
    [
        ([(0, 0.5), (1, 0.9)], 3),  # one link of three was not clicked
        ([(0, 0.5), (1, 0.9), (2, 2.5)], 3),  # the last one came too late
        ([(0, 40.0), (1, 40.5), (2, 41.0)], 3),  # quick, but not at delivery: a person opening tabs
        ([(0, 300.0)], 1),  # a click without any open, minutes later: people read with images off
    ],
)
def test_clicks_that_are_not_a_burst_at_delivery_stay_a_persons(clicks: list[tuple[int, float]], links: int) -> None:
    events = [Event("click", link, seconds) for link, seconds in clicks]
    assert not any(v.machine for v in rejudge(events, 2.0, links=links))


def test_without_a_link_count_the_links_clicked_are_taken_as_every_link() -> None:
    events = [Event("click", 0, 0.3), Event("click", 1, 0.6)]
    assert all(v.machine for v in rejudge(events, 2.0))
    assert not any(v.machine for v in rejudge([Event("open", None, 0.1)], 2.0))


def test_apple_ranges_merge_and_answer_for_both_families(tmp_path: Path) -> None:
    feed = tmp_path / "egress.csv"
    feed.write_text(
        "# Apple's feed: CIDR, country, region, city\n"
        "172.224.224.0/27,GB,GB-EN,London,\n"
        "172.224.224.16/28,GB,GB-EN,London,\n"  # inside the one above
        "172.224.224.32/27,GB,GB-EN,London,\n"  # touches it
        "\n"
        "2a02:26f7:b3c0:4000::/64,FR,FR-IDF,Paris,\n"
        "17.1.2.3\n"
    )
    ranges = AppleRanges.load(feed)
    assert len(ranges) == 5
    assert ranges.contains("172.224.224.0") and ranges.contains("172.224.224.63")
    assert not ranges.contains("172.224.224.64") and not ranges.contains("172.224.223.255")
    assert ranges.contains("2a02:26f7:b3c0:4000:ffff::1") and not ranges.contains("2a02:26f7:b3c0:4001::1")
    assert ranges.contains("17.1.2.3") and not ranges.contains("17.1.2.4")
    for junk in ["", "not-an-ip", "999.1.1.1", "172.224.224.1/24"]:
        assert ranges.contains(junk) is False


def test_a_line_that_is_not_a_range_is_named() -> None:
    with pytest.raises(ValueError, match=r"Line 2 of feed\.txt is not an IP address or range: 'bogus'"):
        AppleRanges.parse(["17.0.0.0/8", "bogus"], "feed.txt")


def test_the_shipped_snapshot_is_loaded_and_looked_up_fast() -> None:
    assert len(APPLE) > 10_000
    assert APPLE.contains(APPLE_V4) and APPLE.contains(APPLE_V6) and not APPLE.contains(ELSEWHERE)
    started = time.perf_counter()
    for i in range(50_000):
        APPLE.contains(f"104.28.{i % 256}.{i % 199}")
    assert time.perf_counter() - started < 2.0  # bisect: microseconds a lookup, not a scan of 13,000 ranges


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(postroom.hits).failed == 0
