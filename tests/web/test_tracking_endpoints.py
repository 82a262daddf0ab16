"""The pixel and the click redirect, fetched over HTTP from the app served by waitress as
`postroom serve` serves it, the way a mail client and a browser fetch them: the image and its
headers, 404 and nothing recorded for a token that is not ours, redirects only to the URL that
was in the message, and every hit in tracking_events with an honest verdict. Runs on SQLite
and PostgreSQL."""

from __future__ import annotations

import dataclasses
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from waitress.server import create_server

from postroom.config import Config
from postroom.hits import AppleRanges, Hit
from postroom.models import MailAccount, Organisation, OutboxMessage, OutboxRecipient, TrackingEvent
from postroom.tracking_tokens import TrackingKeys
from services.tracking import HitRecorder, tracking_keys, tracking_report
from tests.core.test_tracking_html import TARGETS, canonical
from web import create_app

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
BROWSER = {"User-Agent": CHROME, "Accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"}


@dataclass
class Sent:
    outbox_id: int
    message_id: str
    recipients: dict[str, int]  # address -> outbox_recipients.id
    copies: dict[str, str]  # address -> the Message-ID of that recipient's copy


def seed(sessions: sessionmaker[Session], *, sent_at: datetime, raw: bytes | None = None) -> Sent:
    """A tracked message as the tracked send leaves it: sent to a To, a Cc and a Bcc recipient."""
    with sessions.begin() as s:
        org = Organisation(name="Acme")
        s.add(org)
        s.flush()
        account = MailAccount(org_id=org.id, email="ann@example.com", provider="imap", settings={}, secret=b"-")
        s.add(account)
        s.flush()
        message_id = f"<canonical.{account.id}@mail.example.com>"
        msg = OutboxMessage(
            account_id=account.id,
            message_id=message_id,
            raw=raw or canonical(),
            recipients=["zoe@example.org", "bob@example.org", "dan@example.net"],
            status="sent",
            tracked=True,
            mode="smtp",
            sent_at=sent_at,
        )
        s.add(msg)
        s.flush()
        rows = [
            OutboxRecipient(
                outbox_id=msg.id, address=address, kind=kind, message_id=f"<copy.{n}.{msg.id}@mail.example.com>"
            )
            for n, (kind, address) in enumerate(
                [("bcc", "dan@example.net"), ("to", "zoe@example.org"), ("cc", "bob@example.org")]
            )
        ]
        for row in rows:
            row.status, row.sent_at = "sent", sent_at
        s.add_all(rows)
        s.flush()
        return Sent(msg.id, message_id, {r.address: r.id for r in rows}, {r.address: r.message_id for r in rows})


def events(sessions: sessionmaker[Session]) -> list[TrackingEvent]:
    with sessions() as s:
        return list(s.scalars(select(TrackingEvent).order_by(TrackingEvent.id)))


@dataclass
class Served:
    base: str
    config: Config
    sessions: sessionmaker[Session]
    recorder: HitRecorder
    keys: TrackingKeys

    def flush(self) -> list[TrackingEvent]:
        self.recorder.flush()
        return events(self.sessions)


def serve(config: Config) -> Iterator[Served]:
    app = create_app(config)
    # waitress 3 deletes X-Forwarded-* headers unless told not to, before ProxyFix could read them:
    # with trusted proxies configured it must leave them (`postroom serve` needs the same setting)
    server = create_server(
        app, host="127.0.0.1", port=0, threads=4, clear_untrusted_proxy_headers=not config.web.trusted_proxies
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    ext = app.extensions["postroom"]
    try:
        yield Served(
            f"http://127.0.0.1:{server.effective_port}", config, ext["sessions"], ext["hits"], tracking_keys(config)
        )
    finally:
        server.close()
        ext["hits"].close()
        ext["sessions"].kw["bind"].dispose()


@pytest.fixture
def served(config: Config) -> Iterator[Served]:
    yield from serve(config)


def test_the_pixel_is_a_transparent_gif_that_is_never_cached_and_the_open_is_recorded(served: Served) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(minutes=10))
    url = served.keys.open_url(served.base, sent.recipients["zoe@example.org"])
    resp = requests.get(url, headers=BROWSER, timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/gif"
    assert resp.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, private"
    assert resp.headers["Pragma"] == "no-cache" and resp.headers["Expires"] == "0"
    gif = resp.content
    assert len(gif) == 43 and gif[:6] == b"GIF89a" and gif[-1:] == b";"
    assert struct.unpack("<HH", gif[6:10]) == (1, 1)  # 1×1
    gce = gif.index(b"\x21\xf9\x04")
    assert gif[gce + 3] & 1 and gif[gce + 6] == 0  # colour 0 is transparent, and it is the one pixel's colour
    (hit,) = served.flush()
    assert (hit.recipient_id, hit.kind, hit.method, hit.user_agent, hit.ip) == (
        sent.recipients["zoe@example.org"],
        "open",
        "GET",
        CHROME,
        "127.0.0.1",
    )
    assert hit.machine is False and hit.link is None
    assert hit.seconds_after_send is not None and 590 < hit.seconds_after_send < 700


def test_a_click_redirects_only_to_the_url_that_was_in_the_message(served: Served) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(hours=2))
    rid = sent.recipients["bob@example.org"]
    url = served.keys.click_url(served.base, rid, 1, TARGETS[1])
    resp = requests.get(url, headers=BROWSER, allow_redirects=False, timeout=10)
    assert resp.status_code == 302 and resp.headers["Location"] == TARGETS[1]
    assert "no-store" in resp.headers["Cache-Control"]
    other = url.split("?u=")[0] + "?u=https%3A%2F%2Fevil.example%2F"
    assert requests.get(other, headers=BROWSER, allow_redirects=False, timeout=10).status_code == 404
    no_target = url.split("?u=")[0]
    assert requests.get(no_target, headers=BROWSER, allow_redirects=False, timeout=10).status_code == 404
    (hit,) = served.flush()  # the refused ones left nothing behind
    assert (hit.recipient_id, hit.kind, hit.link, hit.url, hit.machine) == (rid, "click", 1, TARGETS[1], False)


def test_a_target_with_non_ascii_characters_is_sent_as_a_valid_location(served: Served) -> None:
    target = "https://exämple.com/café?q=a b"
    url = served.keys.click_url(served.base, 5, 0, target)
    resp = requests.get(url, headers=BROWSER, allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "https://xn--exmple-cua.com/caf%C3%A9?q=a%20b"
    odd = "https://example.com:port/x y"  # not a URL werkzeug can convert: sent as written, made safe
    resp = requests.get(served.keys.click_url(served.base, 5, 1, odd), allow_redirects=False, timeout=10)
    assert resp.status_code == 302 and resp.headers["Location"] == "https://example.com:port/x%20y"


@pytest.mark.parametrize(
    "path",
    [
        "/t/o/{open}x.gif",  # tampered
        "/t/o/{open_short}.gif",  # truncated
        "/t/o/{foreign}.gif",  # made under another key
        "/t/o/not-a-token-at-all-000.gif",
        "/t/o/{click}.gif",  # a click token used as a pixel
        "/t/c/{open}?u=https%3A%2F%2Fjobs.example.com%2F",  # an open token used as a click
    ],
)
def test_a_token_that_is_not_ours_answers_404_and_records_nothing(served: Served, path: str) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    rid = sent.recipients["zoe@example.org"]
    token = served.keys.open_token(rid)
    filled = path.format(
        open=token,
        open_short=token[:-2],
        foreign=TrackingKeys.from_secret("some-other-secret-key-01234567").open_token(rid),
        click=served.keys.click_token(rid, 0, TARGETS[0]),
    )
    resp = requests.get(served.base + filled, headers=BROWSER, allow_redirects=False, timeout=10)
    assert resp.status_code == 404 and resp.headers["Content-Type"].startswith("text/plain")
    assert served.flush() == []


def test_only_get_and_head_are_answered(served: Served) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    resp = requests.post(served.keys.open_url(served.base, sent.recipients["zoe@example.org"]), timeout=10)
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD"
    assert served.flush() == []


def test_head_requests_and_proxies_are_recorded_as_machines(served: Served) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    zoe, bob = sent.recipients["zoe@example.org"], sent.recipients["bob@example.org"]
    head = requests.head(served.keys.click_url(served.base, zoe, 0, TARGETS[0]), headers=BROWSER, timeout=10)
    assert head.status_code == 302 and head.headers["Location"] == TARGETS[0]
    pixel_head = requests.head(served.keys.open_url(served.base, zoe), headers=BROWSER, timeout=10)
    assert pixel_head.status_code == 200 and pixel_head.headers["Content-Length"] == "43"
    assert pixel_head.content == b""
    proxied = requests.get(served.keys.open_url(served.base, bob), headers={"User-Agent": GMAIL}, timeout=10)
    assert proxied.status_code == 200
    verdicts = {(e.recipient_id, e.kind, e.method): (e.machine, e.reason) for e in served.flush()}
    assert verdicts[(zoe, "click", "HEAD")][0] and "HEAD" in verdicts[(zoe, "click", "HEAD")][1]
    assert verdicts[(zoe, "open", "HEAD")][0]
    assert verdicts[(bob, "open", "GET")][0] and "GoogleImageProxy" in verdicts[(bob, "open", "GET")][1]
    with served.sessions() as s:
        report = tracking_report(s, sent.message_id)
    assert not any(r["opened"] or r["clicked"] for r in report["recipients"])  # machines never count


def test_a_scanner_clicking_every_link_at_delivery_is_not_counted(served: Served) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC))
    dan = sent.recipients["dan@example.net"]
    for i, target in enumerate(TARGETS):  # a gateway with a browser's user agent, at once
        requests.get(served.keys.click_url(served.base, dan, i, target), headers=BROWSER, allow_redirects=False)
    hits = served.flush()
    assert [(e.link, e.machine, e.reason) for e in hits] == [
        (0, True, "every link clicked within 2 s of delivery"),
        (1, True, "every link clicked within 2 s of delivery"),
    ]


def test_behind_a_trusted_proxy_the_forwarded_client_address_is_recorded(config: Config) -> None:
    proxied = dataclasses.replace(config, web=dataclasses.replace(config.web, trusted_proxies=1))
    for cfg, expected in [(proxied, "203.0.113.9"), (config, "127.0.0.1")]:
        for s in serve(cfg):
            sent = seed(s.sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
            url = s.keys.open_url(s.base, sent.recipients["zoe@example.org"])
            requests.get(url, headers={**BROWSER, "X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, timeout=10)
            assert [e.ip for e in s.flush()] == [expected]
            with s.sessions.begin() as db:  # the next round seeds its own message
                db.execute(delete(TrackingEvent))


def test_many_concurrent_hits_are_all_written_in_a_few_transactions(served: Served) -> None:
    sent = seed(served.sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    commits: list[int] = []
    engine = served.sessions.kw["bind"]
    event.listen(engine, "commit", lambda conn: commits.append(1))
    urls = [served.keys.open_url(served.base, rid) for rid in sent.recipients.values()]

    def browse(n: int) -> None:
        with requests.Session() as http:
            for i in range(50):
                assert http.get(urls[(n + i) % 3], headers=BROWSER, timeout=10).status_code == 200

    threads = [threading.Thread(target=browse, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(served.flush()) == 300
    assert served.recorder.written == 300 and served.recorder.dropped == 0
    assert len(commits) == served.recorder.batches <= 300 // 10  # batches, not a write per request


# --------------------------------------------------------------------------- the recorder itself


def _hit(at: datetime, kind: str = "open") -> Hit:
    return Hit(kind, at, "GET", CHROME, "198.51.100.7", 0 if kind == "click" else None, None)


def test_hits_for_a_recipient_deleted_meanwhile_are_skipped(config: Config, sessions: sessionmaker[Session]) -> None:
    sent = seed(sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    recorder = HitRecorder(sessions, AppleRanges())
    now = datetime.now(UTC)
    recorder.record(sent.recipients["zoe@example.org"], _hit(now))
    recorder.record(sent.recipients["bob@example.org"], _hit(now))
    with sessions.begin() as s:
        s.execute(delete(OutboxRecipient).where(OutboxRecipient.id == sent.recipients["bob@example.org"]))
    recorder.flush()
    recorder.close()
    assert [e.recipient_id for e in events(sessions)] == [sent.recipients["zoe@example.org"]]
    assert (recorder.written, recorder.skipped, recorder.failed) == (1, 1, 0)


def test_a_full_queue_drops_and_counts_instead_of_waiting(config: Config, sessions: sessionmaker[Session]) -> None:
    sent = seed(sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    recorder = HitRecorder(sessions, AppleRanges(), max_queue=2, interval=60)  # the writer sleeps a minute
    rid = sent.recipients["zoe@example.org"]
    started = time.perf_counter()
    accepted = [recorder.record(rid, _hit(datetime.now(UTC))) for _ in range(5)]
    assert time.perf_counter() - started < 0.5
    assert accepted == [True, True, False, False, False] and recorder.dropped == 3
    recorder.close()
    assert len(events(sessions)) == 2


def test_writes_are_batched(config: Config, sessions: sessionmaker[Session]) -> None:
    sent = seed(sessions, sent_at=datetime.now(UTC) - timedelta(hours=1))
    recorder = HitRecorder(sessions, AppleRanges(), batch=500, interval=60)
    rids = list(sent.recipients.values())
    for i in range(1200):
        recorder.record(rids[i % 3], _hit(datetime.now(UTC)))
    recorder.close()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(TrackingEvent)) == 1200
    assert 3 <= recorder.batches <= 4  # at most 500 hits a transaction, and no more transactions than that needs
