"""The mailboxes page (issue 12, item 2): each mailbox's provider, health, last good sync, lag and
last error in one sentence; a *Reconnect* button where the server refused the sign-in (Gmail and
Microsoft 365 through their consent flows, IMAP with a new password, then syncing again against
Dovecot); an initial sync's progress live, read by the page's polling fragment while a real sync
runs; the empty state; another organisation's mailbox answering 404. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re

from sqlalchemy import update

from postroom.config import Config
from postroom.models import Folder, MailAccount
from postroom.states import AccountStatus
from services.orgs import resolve_org
from services.progress import account_progress
from sync.engine import AccountSync
from sync.leases import LeaseLost
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect, sync_account, sync_ok
from tests.web.page_helpers import Browser, browser, field_errors, flashes, other_org, page_text

PROGRESS = re.compile(r"Initial sync: ([\d,]+) of ([\d,]+) messages, (\d+) of (\d+) folders")
POLLING = 'hx-trigger="every 2s"'


def _wrong_password(config: Config, b: Browser, mailbox: Mailbox) -> int:
    """A rig mailbox connected with a password the server refuses, after the sync that found out."""
    account_id = connect(config, b.sessions, dataclasses.replace(mailbox, password="not-the-password"))
    assert not sync_account(config, b.sessions, account_id).ok
    return account_id


def test_no_mailbox_yet_says_so_and_offers_every_way_to_connect(config: Config) -> None:
    page = browser(config).text("/mailboxes")
    assert "No mailbox connected yet" in page
    for href in ('href="/connect/google"', 'href="/connect/microsoft"', 'href="/connect#imap"'):
        assert href in page


def test_a_refused_imap_sign_in_shows_the_error_and_reconnecting_with_the_new_password_syncs_again(
    config: Config, mailbox: Mailbox
) -> None:
    b = browser(config)
    mailbox.ensure_folders()
    account_id = _wrong_password(config, b, mailbox)
    page = b.text("/mailboxes")
    assert "reconnect-needed" in page and mailbox.address in page
    assert f'href="/mailboxes/{account_id}/reconnect">Reconnect</a>' in page
    (problem,) = re.findall(r'<p class="problem small">(.*?)</p>', page)
    assert problem.startswith("The mail server refused Postroom's sign-in (")
    assert problem.endswith("; reconnect the mailbox to sync it again.") and problem.count(". ") == 0

    form = b.text(f"/mailboxes/{account_id}/reconnect")
    assert f"Reconnect {mailbox.address}" in form and 'type="password"' in form
    empty = b.post(f"/mailboxes/{account_id}/reconnect", {"password": ""})
    assert empty.status_code == 400 and field_errors(page_text(empty)) == ["Enter the mailbox's new Password."]

    done = b.follow(b.post(f"/mailboxes/{account_id}/reconnect", {"password": mailbox.password}))
    assert flashes(done) == [("ok", f"{mailbox.address} has its new password; Postroom syncs it again now.")]
    assert "Reconnect</a>" not in done
    sync_ok(config, b.sessions, account_id)
    page = b.text("/mailboxes")
    assert "state-active" in page and "never" not in page and "problem" not in page


def test_gmail_and_microsoft_mailboxes_reconnect_through_their_consent_flows(config: Config) -> None:
    b = browser(config)
    with b.sessions.begin() as s:
        org = resolve_org(s, None)
        for provider, address in (("gmail", "rita@gmail.test"), ("graph", "max@contoso.test")):
            s.add(
                MailAccount(
                    org_id=org,
                    email=address,
                    provider=provider,
                    settings={},
                    secret=b"-",
                    status=AccountStatus.RECONNECT_NEEDED,
                    last_error="AuthError: invalid_grant: Token has been expired or revoked.",
                    last_error_class="AuthError",
                )
            )
    page = b.text("/mailboxes")
    assert 'href="/connect/google">Reconnect</a>' in page and 'href="/connect/microsoft">Reconnect</a>' in page
    assert "Gmail" in page and "Microsoft 365" in page
    assert (
        "The mail server refused Postroom's sign-in (invalid_grant: Token has been expired or revoked); "
        "reconnect the mailbox to sync it again." in page
    )


class Watching:
    """The engine's lease, which looks at the mailboxes page's polling fragment whenever the
    engine beats its heart (between folders and batches) — what the browser sees every 2 s —
    and ends the pass after ``stop_after`` looks."""

    def __init__(self, b: Browser, stop_after: int | None = None) -> None:
        self.b, self.stop_after, self.seen = b, stop_after, []  # type: ignore[var-annotated]

    def heartbeat(self) -> None:
        fragment = page_text(self.b.get("/mailboxes/live"))
        self.seen.append((PROGRESS.findall(fragment), POLLING in fragment))
        if self.stop_after is not None and len(self.seen) >= self.stop_after:
            raise LeaseLost("stopped by the test")

    def hold(self, session: object) -> None:
        pass


def test_an_initial_sync_shows_its_progress_live_and_the_polling_stops_when_it_is_done(
    config: Config, mailbox: Mailbox
) -> None:
    b = browser(config)
    mailbox.seed_corpus(120, seed=5)
    account_id = connect(config, b.sessions, mailbox)
    page = b.text("/mailboxes")  # added, not synced yet: the initial sync is due
    assert POLLING in page and "Initial sync: starting, the folders are being listed" in page

    small = dataclasses.replace(config, sync=dataclasses.replace(config.sync, batch_size=20))
    watching = Watching(b, stop_after=6)
    assert AccountSync(small, b.sessions, account_id, lease=watching).run().lease_lost
    assert all(polling for _, polling in watching.seen)
    seen = [(int(i.replace(",", "")), int(f.replace(",", ""))) for found, _ in watching.seen for i, f, _, _ in found]
    assert seen and seen[-1] == (seen[-1][0], 120) and seen[-1][0] > 0  # INBOX listed, part of it indexed
    assert seen == sorted(seen)  # the numbers only move forward

    fragment = page_text(b.get("/mailboxes/live"))  # the pass stopped part-way: the page still says where it is
    with b.sessions() as s:
        (progress,) = account_progress(s, s.get_one(MailAccount, account_id).org_id, account_id)
    assert 0 < progress.messages_indexed < 120
    assert PROGRESS.findall(fragment) == [(str(progress.messages_indexed), "120", "0", str(progress.folders_total))]
    assert f'<progress value="{progress.messages_indexed}" max="120">' in fragment

    sync_ok(config, b.sessions, account_id)
    fragment = page_text(b.get("/mailboxes/live"))
    assert PROGRESS.findall(fragment) == [] and POLLING not in fragment and "state-active" in fragment


def test_the_progress_reads_thousands_as_people_write_them(config: Config) -> None:
    b = browser(config)
    with b.sessions.begin() as s:
        account = MailAccount(
            org_id=resolve_org(s, None), email="big@example.test", provider="imap", settings={}, secret=b"-"
        )
        s.add(account)
        s.flush()
        for n, (found, indexed, state) in enumerate(
            [(6000, 6000, "incremental"), (3000, 0, "initial"), (1000, 1000, "incremental")]
            + [(None, 0, "initial")] * 4
        ):
            indexed = 240 if n == 1 else indexed  # part of the way through the second folder
            s.add(
                Folder(account_id=account.id, name=f"F{n}", state=state, messages_found=found, messages_indexed=indexed)
            )
        s.execute(update(MailAccount).where(MailAccount.id == account.id).values(status="syncing"))
    fragment = page_text(b.get("/mailboxes/live"))
    assert "Initial sync: 7,240 of 10,000 messages, 2 of 7 folders" in fragment
    assert '<progress value="7240" max="10000">' in fragment and POLLING in fragment


def test_another_organisations_mailbox_is_not_found(config: Config, mailbox: Mailbox) -> None:
    b = browser(config)
    account_id = connect(config, b.sessions, mailbox)
    eve = other_org(b.app)
    assert "No mailbox connected yet" in eve.text("/mailboxes")  # nor is it listed
    assert eve.get(f"/mailboxes/{account_id}/reconnect").status_code == 404
    assert eve.post(f"/mailboxes/{account_id}/reconnect", {"password": "x"}).status_code == 404
    assert b.get(f"/mailboxes/{account_id + 100}/reconnect").status_code == 404  # exactly like a missing one
    assert mailbox.address not in eve.text("/mailboxes/live")
