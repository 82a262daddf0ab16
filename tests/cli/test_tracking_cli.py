"""`postroom tracking` reports who opened, clicked and replied — people only — in the exact JSON
shape of the contract; `postroom tracking-ranges update` refreshes Apple's ranges from a feed or
a file, safely. Runs on SQLite and PostgreSQL; no test reaches the internet."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, load_config
from postroom.models import OutboxRecipient, TrackingEvent
from services.tracking import AppleRangesSource
from tests.cli.harness import Cli
from tests.web.test_tracking_endpoints import Sent, seed

SENT = datetime(2026, 8, 17, 9, 0, tzinfo=UTC)


def _event(rid: int, kind: str, minutes: float, machine: bool, reason: str, link: int | None = None) -> TrackingEvent:
    at = SENT + timedelta(minutes=minutes)
    return TrackingEvent(
        recipient_id=rid,
        kind=kind,
        at=at,
        seconds_after_send=minutes * 60,
        method="GET",
        user_agent="UA",
        ip="198.51.100.7",
        link=link,
        url="https://jobs.example.com/" if kind == "click" else None,
        machine=machine,
        reason=reason,
    )


@pytest.fixture
def sent(sessions: sessionmaker[Session]) -> Sent:
    sent = seed(sessions, sent_at=SENT)
    zoe, bob, dan = (sent.recipients[a] for a in ("zoe@example.org", "bob@example.org", "dan@example.net"))
    with sessions.begin() as s:
        s.add_all(
            [
                _event(
                    bob, "open", 0.01, True, "Gmail's image proxy (GoogleImageProxy): it fetches images for the reader"
                ),
                _event(zoe, "click", 42.5, False, "no sign of a machine", link=0),  # images blocked, then a click
                _event(bob, "click", 0.02, True, "every link clicked within 2 s of delivery", link=0),
            ]
        )
        s.execute(update(OutboxRecipient).where(OutboxRecipient.id == zoe).values(replied_at=SENT + timedelta(hours=3)))
        s.execute(update(OutboxRecipient).where(OutboxRecipient.id == dan).values(auto_replied_at=SENT))
        s.execute(  # what a processing mailbox records from a delivery status notification
            update(OutboxRecipient)
            .where(OutboxRecipient.id == bob)
            .values(
                bounced_at=SENT + timedelta(minutes=5), bounce_status="5.1.1", bounce_reason="550 5.1.1 User unknown"
            )
        )
    return sent


@pytest.fixture
def tracked(sent: Sent) -> str:
    return sent.message_id


def test_the_report_has_exactly_the_contract_shape(cli: Cli, tracked: str) -> None:
    assert cli.json("tracking", "--message-id", tracked) == {
        "message_id": tracked,
        "recipients": [
            {
                "address": "zoe@example.org",
                "opened": True,  # a person's click proves an open
                "clicked": True,
                "replied": True,
                "auto_replied": False,
                "bounced": False,
                "bounced_at": None,
                "bounce_status": None,
                "bounce_reason": None,
                "events": [
                    {
                        "kind": "click",
                        "at": "2026-08-17T09:42:30.000+00:00",
                        "machine": False,
                        "reason": "no sign of a machine",
                    }
                ],
            },
            {
                "address": "bob@example.org",
                "opened": False,  # only machines fetched it
                "clicked": False,
                "replied": False,
                "auto_replied": False,
                "bounced": True,
                "bounced_at": "2026-08-17T09:05:00+00:00",
                "bounce_status": "5.1.1",
                "bounce_reason": "550 5.1.1 User unknown",
                "events": [
                    {
                        "kind": "open",
                        "at": "2026-08-17T09:00:00.600+00:00",
                        "machine": True,
                        "reason": "Gmail's image proxy (GoogleImageProxy): it fetches images for the reader",
                    },
                    {
                        "kind": "click",
                        "at": "2026-08-17T09:00:01.200+00:00",
                        "machine": True,
                        "reason": "every link clicked within 2 s of delivery",
                    },
                ],
            },
            {
                "address": "dan@example.net",  # Bcc comes last, whatever order the rows were written in
                "opened": False,
                "clicked": False,
                "replied": False,
                "auto_replied": True,
                "bounced": False,
                "bounced_at": None,
                "bounce_status": None,
                "bounce_reason": None,
                "events": [],
            },
        ],
    }


def test_the_message_id_may_be_given_without_brackets_or_as_one_copys_id(cli: Cli, sent: Sent) -> None:
    for given in (sent.message_id.strip("<>"), sent.copies["bob@example.org"]):
        data = cli.json("tracking", "--message-id", given)
        assert isinstance(data, dict) and data["message_id"] == sent.message_id
        assert [r["address"] for r in data["recipients"]] == ["zoe@example.org", "bob@example.org", "dan@example.net"]


def test_the_text_report_is_a_table_a_person_can_read(cli: Cli, tracked: str) -> None:
    _code, out, _err = cli("tracking", "--message-id", tracked)
    lines = out.splitlines()
    assert lines[0] == (
        f"{tracked}: 3 recipients; opened by 1, clicked by 1, replied by 1 "
        "(people only; machine hits are listed but not counted)"
    )
    assert lines[2].split() == ["RECIPIENT", "OPENED", "CLICKED", "REPLIED", "AUTO-REPLY", "BOUNCED", "HITS"]
    assert lines[3].split() == ["zoe@example.org", "yes", "yes", "yes", "no", "no", "1"]
    assert "2026-08-17 09:42:30  click  person   no sign of a machine" in out
    assert any(line.split()[:7] == ["bob@example.org", "no", "no", "no", "no", "5.1.1", "2"] for line in lines)
    assert "bounced: 550 5.1.1 User unknown" in out
    assert "(2 by machines)" in out


def test_an_unknown_message_id_is_one_sentence_and_exit_1(cli: Cli) -> None:
    code, out, err = cli("tracking", "--message-id", "nope@example.com", ok=False)
    assert code == 1 and out == ""
    assert err == "postroom: error: No message sent from Postroom has Message-ID <nope@example.com>.\n"


# --------------------------------------------------------------------------- tracking-ranges update

FEED = (
    "172.224.224.0/27,GB,GB-EN,London,\n"
    "172.224.224.32/27,GB,GB-EN,London,\n"
    "172.224.224.0/27,GB,GB-EN,Manchester,\n"  # the feed repeats ranges for each city
    "2001:db8:77::/64,FR,FR-IDF,Paris,\n"
)


@pytest.fixture
def feed_server() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    """A local stand-in for Apple's feed: path -> (status, body)."""
    routes: dict[str, tuple[int, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, b"not here"))
            self.send_response(status)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()


def _config(env: dict[str, str]) -> Config:
    return load_config(env=env)


def test_ranges_update_from_a_feed_url_writes_a_private_list_the_judge_then_uses(
    cli: Cli, env: dict[str, str], feed_server: tuple[str, dict[str, tuple[int, bytes]]]
) -> None:
    base, routes = feed_server
    routes["/egress-ip-ranges.csv"] = (200, FEED.encode())
    config = _config(env)
    assert not AppleRangesSource(config).current().contains("2001:db8:77::9")  # not in the shipped snapshot
    data = cli.json("tracking-ranges", "update", "--source", base + "/egress-ip-ranges.csv")
    target = Path(env["POSTROOM_DATA_DIR"]) / "apple-relay-egress.txt"
    assert data == {"ranges": 3, "file": str(target), "source": base + "/egress-ip-ranges.csv"}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert [line for line in target.read_text().splitlines() if not line.startswith("#")] == [
        "172.224.224.0/27",
        "172.224.224.32/27",
        "2001:db8:77::/64",
    ]
    ranges = AppleRangesSource(config).current()
    assert ranges.contains("2001:db8:77::9") and not ranges.contains("104.28.28.76")


def test_ranges_update_from_a_plain_file(cli: Cli, env: dict[str, str], tmp_path: Path) -> None:
    plain = tmp_path / "ranges.txt"
    plain.write_text("# mine\n17.0.0.0/8\n104.28.28.76\n")
    _code, out, _err = cli("tracking-ranges", "update", "--source", str(plain))
    assert out.startswith("2 Apple ranges written to ")
    assert "17.0.0.0/8\n104.28.28.76/32\n" in (Path(env["POSTROOM_DATA_DIR"]) / "apple-relay-egress.txt").read_text()


def test_a_bad_feed_leaves_the_list_in_use_alone(
    cli: Cli, env: dict[str, str], tmp_path: Path, feed_server: tuple[str, dict[str, tuple[int, bytes]]]
) -> None:
    base, routes = feed_server
    good = tmp_path / "good.txt"
    good.write_text("17.0.0.0/8\n")
    cli("tracking-ranges", "update", "--source", str(good))
    target = Path(env["POSTROOM_DATA_DIR"]) / "apple-relay-egress.txt"
    before = target.read_bytes()
    routes["/broken.csv"] = (200, b"172.224.224.0/27,GB\n<html>oops</html>\n")
    routes["/empty.csv"] = (200, b"\n# nothing\n")
    cases = {
        base + "/broken.csv": f"Line 2 of {base}/broken.csv is not an IP address or range: '<html>oops</html>'.",
        base + "/missing.csv": f"{base}/missing.csv answered HTTP 404, not the list.",
        base + "/empty.csv": f"{base}/empty.csv holds no IP ranges",
        str(tmp_path / "nowhere.txt"): f"{tmp_path / 'nowhere.txt'} does not exist.",
    }
    for source, sentence in cases.items():
        code, _out, err = cli("tracking-ranges", "update", "--source", source, ok=False)
        assert code == 1 and err.startswith("postroom: error: " + sentence), err
        assert err.count("\n") == 1
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []
