"""``postroom demo seed | remove | status``, and the demo as ``postroom serve`` runs it.

Demo mode (docs/demo.md): on a database with nothing real in it, ``postroom serve`` (``make
run``) seeds the demo organisation (:mod:`services.demo`) and prints how to sign in, once.
Whenever a demo organisation exists, ``serve`` runs the demo's mail server in-process
(:class:`standins.demo.DemoMailServer`: the Gmail stand-in on a free loopback port, its mail
kept in the data directory), points the demo's three Gmail mailboxes at it with fresh access
tokens (again every 20 minutes, before they expire), and the worker beside the web app syncs
them through the real Gmail backend. The composition happens here, in the CLI, because it is
the one place that starts servers: ``tests/core/test_layers.py`` lets the CLI import
:mod:`standins.demo` and nothing else of ``standins``.

On its first start the demo also plays the scenario's last act, through the real services and
endpoints: Rita sends Daniel a tracked message from the template (:func:`services.demo.send_demo_message`),
Daniel's mail client fetches its pixel from the tracking endpoint (a person's open), and
Daniel answers (delivered to Rita's mailbox, and to the processing mailbox ``applications@``
he copies), so the first sync shows a send that was opened and replied to.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

from sqlalchemy.exc import SQLAlchemyError

from cli.common import App, Commands, Subparsers, common, group, json_flag, output
from postroom import demo_scenario as scenario
from postroom.config import Config
from postroom.models import utcnow
from postroom.private_files import private_dir
from services.demo import (
    DemoError,
    connect_demo_accounts,
    demo_dir,
    demo_mailboxes,
    demo_org_id,
    demo_outside_addresses,
    demo_status,
    mail_state_file,
    remove_demo,
    seed_demo,
    send_demo_message,
    should_seed,
)
from services.errors import ServerError, UserError
from standins.demo import DemoMailServer, DemoStateError

log = logging.getLogger("postroom.demo")

ROTATE_EVERY = 20 * 60.0  # seconds between new access tokens (they last an hour)
# the applicant's mail client, as the tracking endpoint sees it when he opens the message
MAIL_CLIENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def register(sub: Subparsers) -> Commands:
    demo = group(sub, "demo", "the demo organisation: sample recruiting mail synced from a local mail server")
    json_flag(common(demo.add_parser("seed", help="create the demo organisation (its password is printed once)")))
    json_flag(common(demo.add_parser("remove", help="delete the demo organisation and everything in it")))
    json_flag(common(demo.add_parser("status", help="whether there is a demo, and how its mailboxes are")))
    return {("demo", "seed"): seed, ("demo", "remove"): remove, ("demo", "status"): status}


def seed(app: App, args: argparse.Namespace) -> int:
    creds = seed_demo(app.sessions, app.config)
    text = (
        f"Demo organisation {creds.org_id}: sign in as {creds.email} with password {creds.password} "
        "(shown once). Its mailboxes sync while 'postroom serve' runs."
    )
    output(args, creds.as_json(), text)
    return 0


def remove(app: App, args: argparse.Namespace) -> int:
    removed = remove_demo(app.sessions, app.config)
    text = "The demo organisation and everything in it are removed." if removed else "There is no demo to remove."
    output(args, {"removed": removed}, text)
    return 0


def status(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        found = demo_status(s)
    if found is None:
        output(args, {"demo": False}, "There is no demo; 'postroom demo seed' creates one.")
        return 0
    lines = [
        f"Demo organisation {found.org_id}: user {found.user}, {found.applicants} applicants, "
        f"{found.messages} messages indexed; its mailboxes sync while 'postroom serve' runs."
    ]
    for m in found.mailboxes:
        synced = m.last_success_at.isoformat(timespec="seconds") if m.last_success_at else "never"
        lines.append(f"{m.id:>4}  {m.email:<28} {m.status:<16} last synced {synced}")
    output(args, {"demo": True, **found.as_json()}, "\n".join(lines))
    return 0


class DemoRun:
    """The demo while ``postroom serve`` runs: seeded if due, its mail server, its tokens.

    :meth:`plan` decides before the web app is built (only reads); :meth:`start` runs once
    the web app listens at ``url``; :meth:`close` stops the mail server."""

    def __init__(self, app: App, url: str, *, seeding: bool) -> None:
        self.app, self.url, self.seeding = app, url, seeding
        self.config: Config = app.config
        if not app.config.tracking.base_url:  # tracked sends in the demo: the pixels come back here
            self.config = replace(app.config, tracking=replace(app.config.tracking, base_url=url.rstrip("/")))
        self.server: DemoMailServer | None = None
        self._stop = threading.Event()
        self._mailboxes: list[str] = []

    @classmethod
    def plan(cls, app: App, url: str) -> DemoRun | None:
        """A demo to run: one exists, or ``[demo] enabled`` and nothing real is in the database."""
        with app.sessions() as s:
            exists = demo_org_id(s) is not None
            due = not exists and app.config.demo.enabled and should_seed(s)
        return cls(app, url, seeding=due) if exists or due else None

    def start(self) -> None:
        password = None
        if self.seeding:
            try:
                password = seed_demo(self.app.sessions, self.app.config).password
            except DemoError as exc:  # seeded meanwhile (`postroom demo seed` from another shell)
                log.info("demo not seeded: %s", exc)
        with self.app.sessions() as s:
            org = demo_org_id(s)
            self._mailboxes = demo_mailboxes(s)
        if org is None:
            return
        who = f"sign in at {self.url} as {scenario.USER_EMAIL}"
        if password:  # first, whatever happens next: it is never shown again
            print(
                f"Demo mode: {who} with password {password} (shown once; `postroom demo remove` ends the demo)",
                flush=True,
            )
        else:
            print(f"Demo mode: {who} (`postroom demo remove` ends the demo)", flush=True)
        if self.config is not self.app.config:
            log.info("demo mode: tracking links point at %s (set tracking.base_url for real recipients)", self.url)
        self._serve_mail(org)

    def _serve_mail(self, org: int) -> None:
        private_dir(demo_dir(self.app.config), ours=True)
        server = DemoMailServer(
            mail_state_file(self.app.config, org),
            seed=lambda: scenario.deliveries(utcnow()),
            hosts=demo_outside_addresses(),
        )
        try:
            server.start()
        except DemoStateError as exc:
            log.error("demo mailboxes not served: %s 'postroom demo remove' starts the demo afresh.", exc)
            return
        self.server = server
        self._connect(sync_now=True)
        log.info("demo mail server on %s (mailboxes %s)", server.url, ", ".join(self._mailboxes))
        try:
            self._last_act()
        except (UserError, ServerError, SQLAlchemyError, OSError) as exc:
            log.warning("the demo's tracked send was not played: %s", exc)
        threading.Thread(target=self._rotate_tokens, name="postroom-demo-tokens", daemon=True).start()

    def _connect(self, *, sync_now: bool) -> None:
        server = self.server
        if server is None:
            return
        tokens = {}
        for address in self._mailboxes:
            token, expires = server.access_token(address)
            tokens[address] = (token, datetime.fromtimestamp(expires, UTC))
        connect_demo_accounts(
            self.app.sessions, self.app.config, server.api_root, server.token_uri, tokens, sync_now=sync_now
        )

    def _rotate_tokens(self) -> None:
        while not self._stop.wait(ROTATE_EVERY):
            try:
                self._connect(sync_now=False)
            except SQLAlchemyError as exc:  # tried again next round; the tokens in hand last 40 minutes more
                log.warning("demo mailboxes' tokens not renewed: %s", str(exc).splitlines()[0])

    def _last_act(self) -> None:
        """Once per demo: the tracked send, the applicant's open and his reply."""
        server = self.server
        outcome = send_demo_message(self.config, self.app.sessions, self.url)
        if server is None or outcome is None:
            return
        copies = server.messages(scenario.TRACKED_SEND.to)
        copy = copies[-1] if copies else None
        pixel = scenario.pixel_url(copy) if copy else None
        if copy is None or pixel is None:
            log.warning("the demo's tracked send ended %s; nothing to open", outcome.entry.status)
            return
        # his mail client loads the pixel; asked of this process's own endpoint, whatever public
        # address tracking.base_url gives it
        parts = urlsplit(pixel)
        local = urljoin(self.url, parts.path + (f"?{parts.query}" if parts.query else ""))
        request = urllib.request.Request(local, headers={"User-Agent": MAIL_CLIENT})
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        time.sleep(1 - time.time() % 1)  # his answer's Date (whole seconds) comes after the message's
        mailbox, reply = scenario.applicant_reply(copy, utcnow())
        server.deliver(mailbox, reply)
        if scenario.APPLICATIONS.address in self._mailboxes:  # his Cc: the processing mailbox
            server.deliver(scenario.APPLICATIONS.address, reply)
        log.info("demo: %s sent (tracked), opened and answered", outcome.entry.message_id)

    def close(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.close()
