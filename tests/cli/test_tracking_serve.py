"""Tracking end to end, as a recruiter and their recipients meet it: a tracked message sent
through a real SMTP server to three people, their copies' pixels and links fetched from a
running `postroom serve` behind a reverse proxy the way a browser, Gmail's image proxy and a
person clicking do, then `postroom tracking` read — on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import requests
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import OutboxRecipient, TrackingEvent, utcnow
from services.sending import SendRequest, send_message
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect

POSTROOM = [sys.executable, "-m", "cli"]
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _copy(smtp: FaultySmtp, address: str) -> str:
    """The HTML of the copy the SMTP server received for ``address``."""
    (raw,) = [raw for meta, raw in smtp.transactions() if meta["rcpt_tos"] == [address]]
    part = message_from_bytes(raw, policy=default_policy).get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def test_opens_and_clicks_are_told_apart_from_proxies_through_postroom_serve(
    config: Config,
    sessions: sessionmaker[Session],
    env: dict[str, str],
    mailbox: Mailbox,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = tmp_path / "postroom.toml"
    settings.write_text(f'[web]\ntrusted_proxies = 1\n\n[tracking]\nbase_url = "{base}"\n', encoding="utf-8")
    tracking = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, base_url=base))
    mailbox.ensure_folders()
    account = connect(tracking, sessions, mailbox, smtp_port=smtp.port)
    ann, bob, carl = (f"{n}-{os.urandom(4).hex()}@example.org" for n in ("ann", "bob", "carl"))
    body = "Please pick a slot: [calendar](https://cal.example.com/slots).\n"
    outcome = send_message(
        tracking, sessions, SendRequest(account, [ann, bob], "Interview", body, cc=[carl], track=True)
    )
    assert outcome.entry.status == "sent"
    pixel = {a: re.search(r'<img src="([^"]+/t/o/[^"]+)"', _copy(smtp, a)).group(1) for a in (ann, bob, carl)}  # type: ignore[union-attr]
    link = {a: re.search(r'href="([^"]+/t/c/[^"]+)"', _copy(smtp, a)).group(1) for a in (ann, bob, carl)}  # type: ignore[union-attr]

    with sessions.begin() as s:  # read a few minutes later: not within a scanner's seconds of delivery
        s.execute(update(OutboxRecipient).values(sent_at=utcnow() - timedelta(minutes=3)))

    log = (tmp_path / "serve.log").open("wb")
    full = {**os.environ, **env, "POSTROOM_CONFIG": str(settings)}
    proc = subprocess.Popen([*POSTROOM, "serve", "--port", str(port)], env=full, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        seen = requests.get(pixel[ann], headers={"User-Agent": CHROME, "X-Forwarded-For": "198.51.100.7"}, timeout=5)
        assert seen.status_code == 200 and seen.headers["Content-Type"] == "image/gif"
        assert "no-store" in seen.headers["Cache-Control"]
        proxied = requests.get(pixel[bob], headers={"User-Agent": GMAIL_PROXY}, timeout=5)
        assert proxied.status_code == 200
        click = requests.get(link[carl], headers={"User-Agent": CHROME}, allow_redirects=False, timeout=5)
        assert click.status_code == 302 and click.headers["Location"] == "https://cal.example.com/slots"
        forged = requests.get(pixel[ann].replace("/t/o/", "/t/o/A"), timeout=5)
        assert forged.status_code == 404
        bent = requests.get(link[carl].split("?")[0] + "?u=https://evil.example.net/", allow_redirects=False, timeout=5)
        assert bent.status_code == 404  # the link goes only where the message pointed
    finally:
        proc.send_signal(signal.SIGTERM)  # the hits still queued are written on the way out
        assert proc.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()

    report = subprocess.run(
        [*POSTROOM, "tracking", "--message-id", outcome.entry.message_id, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    people = {r["address"]: r for r in json.loads(report.stdout)["recipients"]}
    assert (people[ann]["opened"], people[ann]["clicked"]) == (True, False)
    assert (people[bob]["opened"], people[bob]["clicked"]) == (False, False)  # Gmail's proxy is no person
    ((event,),) = [people[bob]["events"]]
    assert event["machine"] and "Gmail" in event["reason"]
    assert (people[carl]["opened"], people[carl]["clicked"]) == (True, True)  # a person's click proves an open
    with sessions() as s:
        ips = set(
            s.scalars(select(TrackingEvent.ip).where(TrackingEvent.kind == "open", TrackingEvent.machine.is_(False)))
        )
    assert ips == {"198.51.100.7"}  # the client behind the trusted proxy, not the proxy
