"""Demo mode: `postroom serve` (what `make run` starts) on a database with nothing real in it seeds
the demo, prints how to sign in once, and the in-process worker syncs the demo's mailboxes from
the demo's mail server through the real Gmail backend and runs its processing mailbox (the
Processing page lists what it took and what failed); `postroom demo remove` leaves nothing.
Nothing is seeded when anything real exists, or with ``[demo] enabled = false``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom import demo_scenario as scenario
from postroom.config import load_config
from postroom.models import (
    Applicant,
    Base,
    Body,
    Email,
    MailAccount,
    Organisation,
    OutboxMessage,
    OutboxRecipient,
    TrackingEvent,
)
from postroom.models_inbound import InboundAttachment, InboundItem
from services.applicants import applicant_history
from services.inbound import list_mailboxes
from tests.cli.harness import Cli

POSTROOM = [sys.executable, "-m", "cli"]
SIGN_IN_LINE = re.compile(r"Demo mode: sign in at (\S+) as demo@postroom\.test with password (\S+) \(shown once")
DEADLINE = 60.0  # the issue: a working product within a minute


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.2)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text()

    def up(self) -> bool:
        assert self.proc.poll() is None, self.err.read_text()
        try:
            return requests.get(self.base + "/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False


@contextmanager
def serving(env: dict[str, str], tmp_path: Path, name: str) -> Iterator[Served]:
    """`postroom serve` on a free port for the block; then SIGTERM, and it must exit cleanly."""
    port = _free_port()
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [*POSTROOM, "serve", "--port", str(port)], env={**os.environ, **env}, stdout=o, stderr=e
        )
    served = Served(proc, f"http://127.0.0.1:{port}", out, err)
    try:
        _wait(served.up, 30, "web app up")
        yield served
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err.read_text(), err.read_text()


@pytest.fixture
def sessions_of(env: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(load_config(env=env).database)
    yield db.make_sessionmaker(engine)
    engine.dispose()


def _sign_in(base: str, email: str, password: str) -> requests.Session:
    """As a browser does: the sign-in page for its CSRF token, then the form."""
    browser = requests.Session()
    page = browser.get(base + "/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"', page)
    assert token, page
    data = {"csrf_token": token.group(1) or token.group(2), "email": email, "password": password}
    answer = browser.post(base + "/login", data=data, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return browser


def _demo_org(s: Session) -> int | None:
    return s.scalar(select(Organisation.id).where(Organisation.demo.is_(True)))


def _counts(sessions: sessionmaker[Session]) -> dict[str, int | None]:
    with sessions() as s:
        org = _demo_org(s)

        def count(model: type[Base], *where: object) -> int | None:
            return s.scalar(select(func.count()).select_from(model).where(*where))  # type: ignore[arg-type]

        return {
            "orgs": count(Organisation, Organisation.demo.is_(True)),
            "accounts": count(MailAccount, MailAccount.org_id == org),
            "applicants": count(Applicant, Applicant.org_id == org),
            "emails": count(Email, Email.org_id == org),
            "outbox": count(OutboxMessage),
        }


def _history(s: Session, name: str) -> list[tuple[str, str | None, list[int]]]:
    """(Message-ID, sender, mailboxes holding it) of each message in the applicant's history."""
    applicant_id = s.scalar(select(Applicant.id).where(Applicant.name == name))
    assert applicant_id is not None
    senders = dict(s.execute(select(Email.message_id, Email.from_addr)).tuples().all())
    return [(h.message_id, senders.get(h.message_id), h.account_ids) for h in applicant_history(s, applicant_id)]


def _synced(sessions: sessionmaker[Session]) -> bool:
    """The scenario as the engine indexed it (the seed writes no mail): the three mailboxes synced,
    Maya's six messages (the last the résumé she sent the processing mailbox), Daniel's answer to
    the tracked send recognised as a reply, and the processing mailbox's five messages taken (its
    INBOX's four and Daniel's copy)."""
    with sessions() as s:
        synced = list(s.scalars(select(MailAccount.last_success_at).where(MailAccount.org_id == _demo_org(s))))
        replied = s.scalar(select(OutboxRecipient.replied_at).where(OutboxRecipient.address == scenario.DANIEL.address))
        taken = s.scalar(select(func.count()).select_from(InboundItem).where(InboundItem.moved.is_(True)))
        return (
            len(synced) == 3
            and all(synced)
            and replied is not None
            and len(_history(s, "Maya Okafor")) == 6
            and taken == PROCESSED + 1
        )


PROCESSED = 4  # the careers form, the agency's profile, Maya's résumé, Daniel's answer; the broken form fails


def _last_synced(sessions: sessionmaker[Session]) -> datetime | None:
    with sessions() as s:
        return s.scalar(select(func.min(MailAccount.last_success_at)))


def test_serve_shows_a_synced_demo_within_a_minute_once_and_remove_leaves_nothing(
    env: dict[str, str], tmp_path: Path, sessions_of: sessionmaker[Session]
) -> None:
    started = time.monotonic()
    with serving(env, tmp_path, "first") as served:
        _wait(lambda: SIGN_IN_LINE.search(served.stdout()), 30, "the demo's sign-in line")
        found = SIGN_IN_LINE.search(served.stdout())
        assert found and found.group(1) == served.base + "/"
        browser = _sign_in(served.base, scenario.USER_EMAIL, found.group(2))
        _wait(lambda: _synced(sessions_of), DEADLINE - (time.monotonic() - started), "the demo, synced")
        took = time.monotonic() - started
        dashboard = browser.get(served.base + "/", timeout=10)
        assert dashboard.status_code == 200
        assert 'class="demo-badge"' in dashboard.text  # labelled as the demo
        assert scenario.RITA.address in dashboard.text and scenario.SAM.address in dashboard.text
        applicants = browser.get(served.base + "/applicants", timeout=10)
        if applicants.status_code != 404:  # the applicants area may not be built yet
            assert applicants.status_code == 200 and "Maya Okafor" in applicants.text
        processing = browser.get(served.base + "/inbound", timeout=10)
        assert processing.status_code == 200
        assert scenario.APPLICATIONS.address in processing.text
        assert processing.text.count('class="card inbound-item inbound-processed"') == PROCESSED
        assert processing.text.count('class="card inbound-item inbound-failed"') == 1
        assert "Its application/json part could not be used: json part is not valid JSON" in processing.text
        for subject in ("New application: Product Designer (Aiko Tanaka)", "Kandidatenvorschlag", "Updated résumé"):
            assert subject in processing.text
        with sessions_of() as s:
            maya_id = s.scalar(select(Applicant.id).where(Applicant.name == "Maya Okafor"))
        maya_page = browser.get(f"{served.base}/applicants/{maya_id}", timeout=10)
        assert maya_page.status_code == 200 and "Maya-Okafor-CV-2025.pdf" in maya_page.text  # under Documents
    assert served.stdout().count(found.group(2)) == 1  # the password is shown once
    print(f"the demo was synced {took:.1f}s after `postroom serve` started")

    with sessions_of() as s:
        ids = dict(s.execute(select(MailAccount.email, MailAccount.id)).tuples().all())
        rita, sam = ids[scenario.RITA.address], ids[scenario.SAM.address]
        applications = ids[scenario.APPLICATIONS.address]
        maya = _history(s, "Maya Okafor")
        assert len({message_id for message_id, _, _ in maya}) == 6  # each message once
        recruiters = {p.address for p in scenario.RECRUITERS}
        assert {sender for _, sender, _ in maya} == {scenario.MAYA_UNI.address, scenario.MAYA.address, *recruiters}
        # the thread runs through both mailboxes; a message both recruiters received is one message
        # (and the processing mailbox is synced like any other: her résumé is in her timeline too)
        assert [boxes for _, _, boxes in maya] == [
            [rita],
            [rita, sam],
            [rita, sam],
            [rita, sam],
            [rita, sam],
            [applications],
        ]
        priya = _history(s, "Priya Raman")
        assert {scenario.PRIYA_STUDIO.address, scenario.PRIYA.address} <= {sender for _, sender, _ in priya}
        # the résumé was fetched with its message (an applicant's mail: the default body policy)
        resume = s.scalar(
            select(Body.attachments)
            .join(Email, Email.body_id == Body.id)
            .where(Email.from_addr == scenario.MAYA_UNI.address)
        )
        assert resume == 1
        # the tracked send from the app: sent, opened by a person, answered
        recipient = s.scalars(select(OutboxRecipient).where(OutboxRecipient.address == scenario.DANIEL.address)).one()
        assert recipient.status == "sent" and recipient.replied_at is not None
        opens = s.execute(
            select(TrackingEvent.kind, TrackingEvent.machine).where(TrackingEvent.recipient_id == recipient.id)
        )
        assert opens.tuples().all() == [("open", False)]
    with sessions_of() as s:  # what the processing mailbox made of each message
        items = {i.subject: i for i in s.scalars(select(InboundItem))}
        form = items["New application: Product Designer (Aiko Tanaka)"]
        assert form.data_source == "json part" and form.data["full_name"] == "Aiko Tanaka"
        agency = items["Kandidatenvorschlag: Senior Backend Engineer"]
        assert agency.data_source == "yaml" and agency.data["verfugbar_ab"] == "1. Juni"
        resume = items["Updated résumé - Maya Okafor"]
        assert (resume.routed_kind, resume.routed_via) == ("applicant", "sender")
        assert s.scalars(select(InboundAttachment.applicant_id)).all() == [resume.applicant_id]
        answer = next(i for i in items.values() if i.sender == scenario.DANIEL.address)
        assert (answer.routed_kind, answer.routed_via) == ("outbox", "reply_token")
        broken = items["New application: Senior Backend Engineer (Tom Becker)"]
        assert broken.status == "failed" and broken.moved
    before = _counts(sessions_of)
    assert before["orgs"] == 1 and before["accounts"] == 3 and before["applicants"] == 5 and before["outbox"] == 1

    last = _last_synced(sessions_of)
    with serving(env, tmp_path, "second") as served:  # a restart: no new password, no second demo
        _wait(lambda: "Demo mode" in served.stdout(), 30, "the demo's line")
        assert "password" not in served.stdout()
        _wait(lambda: (_last_synced(sessions_of) or last) > last, 30, "a sync from the mail server's saved mail")  # type: ignore[operator]
    assert _counts(sessions_of) == before

    removed = subprocess.run([*POSTROOM, "demo", "remove", "--json"], env={**os.environ, **env}, capture_output=True)
    assert removed.returncode == 0 and json.loads(removed.stdout) == {"removed": 1}, removed.stderr
    with sessions_of() as s:
        left = {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
        orgs = s.execute(select(Organisation.name, Organisation.demo)).tuples().all()
    assert {name: n for name, n in left.items() if n} == {"organisations": 1}
    assert orgs == [("Default", False)]
    data_dir = Path(env["POSTROOM_DATA_DIR"])
    assert not (data_dir / "demo").exists()
    assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]  # the demo's bodies, files too


@pytest.mark.parametrize("real", ["account", "user", "disabled"])
def test_serve_seeds_no_demo_when_anything_real_exists_or_it_is_turned_off(
    real: str,
    cli: Cli,
    env: dict[str, str],
    tmp_path: Path,
    sessions_of: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if real == "account":  # a mailbox that cannot be reached: connecting it is enough
        monkeypatch.setenv("BOX_PASSWORD", "not-a-real-password")
        cli(
            *("accounts", "add-imap", "--email", "ann@example.com", "--username", "ann"),
            *("--password-env", "BOX_PASSWORD", "--imap-host", "127.0.0.1", "--imap-port", "9"),
            *("--imap-security", "none", "--smtp-host", "127.0.0.1", "--smtp-port", "9", "--smtp-security", "none"),
        )
    elif real == "user":
        monkeypatch.setenv("ANN_PASSWORD", "a long enough password")
        cli("users", "add", "--email", "ann@example.com", "--password-env", "ANN_PASSWORD")
    else:
        config = tmp_path / "postroom.toml"
        config.write_text("[demo]\nenabled = false\n")
        env = {**env, "POSTROOM_CONFIG": str(config)}
    with serving(env, tmp_path, real) as served:
        time.sleep(1.0)  # the demo would be seeded before the worker starts
        assert "Demo mode" not in served.stdout()
    with sessions_of() as s:
        assert _demo_org(s) is None
        assert s.scalar(select(func.count()).select_from(Applicant)) == 0


def test_demo_commands_seed_once_report_and_remove_only_the_demo(cli: Cli, sessions_of: sessionmaker[Session]) -> None:
    cli("applicants", "add", "--name", "Real Person", "--email", "real@example.com")
    seeded = cli.json("demo", "seed")
    assert isinstance(seeded, dict) and seeded["email"] == scenario.USER_EMAIL and len(seeded["password"]) >= 16
    code, _, err = cli("demo", "seed", ok=False)
    assert code == 1 and err.startswith("postroom: error: A demo organisation exists already")
    assert len(err.strip().splitlines()) == 1
    status = cli.json("demo", "status")
    assert isinstance(status, dict) and status["demo"] is True and status["org_id"] == seeded["org_id"]
    assert status["applicants"] == 5 and [m["email"] for m in status["mailboxes"]] == [
        p.address for p in (*scenario.RECRUITERS, scenario.APPLICATIONS)
    ]
    with sessions_of() as s:  # applications@ is a processing mailbox taking its INBOX
        boxes = [(b.email, b.folder) for b in list_mailboxes(s, seeded["org_id"])]
    assert boxes == [(scenario.APPLICATIONS.address, "INBOX")]
    # the CLI's default organisation is the real one, never the demo
    orgs = cli.json("orgs", "list")
    assert isinstance(orgs, list) and [(o["name"], o["demo"]) for o in orgs] == [("Default", False), ("Demo", True)]
    assert cli.json("demo", "remove") == {"removed": 1}
    assert cli.json("demo", "remove") == {"removed": 0}
    assert cli.json("demo", "status") == {"demo": False}
    with sessions_of() as s:  # the real organisation's applicant is untouched
        assert s.scalars(select(Applicant.name)).all() == ["Real Person"]
