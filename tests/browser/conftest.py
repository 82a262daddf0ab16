"""The browser tests' rig: ONE live Postroom and ONE headless Chromium for all of them (package
scope: started by the first browser test, stopped after the last, so the rest of the suite does
not keep them).

* ``live`` (package): the web app of :func:`web.create_app` served by waitress (as ``postroom
  serve`` serves it) on 127.0.0.1 and a free port, on a SQLite database migrated once. Its
  config fetches every body (``sync.body_policy = "all"``), so a message synced from the rig
  can be opened whoever it is from; its settings guess reads an autoconfig document naming the
  rig's Dovecot and Postfix (:class:`AutoconfigServer`) and may reach loopback; its image proxy
  may fetch from 127.0.0.1 (where the leak server is); tracked sends point at it. Tests keep
  apart by organisation: each signs in as a new user of a new organisation
  (:meth:`Browser.sign_in`), so they share the server and never each other's data.
* ``driver`` (package): Debian's Chromium (``/usr/bin/chromium``) through Debian's
  chromedriver — Selenium never downloads a browser — with the performance log on, so a test
  can list the requests of the page (a sandboxed frame may run in a process of its own, whose
  requests that log misses: :func:`frame_resources` asks the frame, and the leak server counts
  every request that reaches it, whoever made it). Without Chromium the tests are skipped, unless
  ``POSTROOM_TEST_REQUIRE_SERVICES=1`` (CI), where a missing browser is a failure, exactly as
  tests/conftest.py treats a missing PostgreSQL.
* ``browser`` (function): a :class:`Browser` over that driver, its cookies, dialogs and logs
  cleared after each test.
* ``leak`` (package): :class:`~tests.browser.leak_server.LeakServer`, the remote origin that
  must see nothing.

One Chromium and one server for the whole browser suite keep it well under
two minutes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from flask import Flask
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.orm import Session, sessionmaker
from waitress.server import create_server

from postroom.config import Config, load_config
from services.orgs import add_org
from services.users import add_user
from tests.browser.leak_server import LeakServer
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig, free_port
from tests.sync.helpers import connect, sync_ok
from web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REQUIRE_SERVICES = os.environ.get("POSTROOM_TEST_REQUIRE_SERVICES") == "1"
PASSWORD = "browser test password 1"
_T = TypeVar("_T")
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Who:
    """A user the test signed in as, and their organisation."""

    org_id: int
    user_id: int
    email: str
    password: str = PASSWORD


@dataclass
class Live:
    """The running app: its address, its config and its database."""

    url: str
    app: Flask
    config: Config
    sessions: sessionmaker[Session]

    def connect(self, box: Mailbox, org_id: int) -> int:
        """The rig mailbox ``box`` as an IMAP account of ``org_id`` (plain IMAP/SMTP on loopback)."""
        return connect(self.config, self.sessions, box, org_id)

    def sync(self, account_id: int) -> None:
        """One pass of the real sync engine over the account (as the worker would run it)."""
        sync_ok(self.config, self.sessions, account_id)

    def new_user(self, org_id: int | None = None, role: str = "recruiter", name: str = "") -> Who:
        """A user of ``org_id`` (default: of a new organisation of their own)."""
        n = next(_numbers)
        with self.sessions.begin() as s:
            if org_id is None:
                org_id = add_org(s, f"Browser org {n}").id
            email = f"user{n}.{os.getpid()}@browser.test"
            user = add_user(s, org_id, email, PASSWORD, role, name or f"Recruiter {n}")
            return Who(org_id, user.id, email)


@pytest.fixture(scope="package")
def live(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory, mail_rig: MailRig) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("browser-live")
    shutil.copy(sqlite_template, home / "postroom.db")
    autoconfig = AutoconfigServer(mail_rig)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (home / "postroom.toml").write_text(
        f'[sync]\nbody_policy = "all"\n\n[web]\nsettings_guess_autoconfig = "{autoconfig.url}"\n'
        "settings_guess_private = true\n"
    )
    config = load_config(
        env={
            "HOME": str(home),
            "POSTROOM_CONFIG": str(home / "postroom.toml"),
            "POSTROOM_DATA_DIR": str(home / "data"),
            "POSTROOM_DATABASE_URL": f"sqlite:///{home / 'postroom.db'}",
            "POSTROOM_SECRET_KEY": "browser-secret-key-0123456789abcdef",
            "POSTROOM_TRACKING_BASE_URL": url,
            "POSTROOM_LOG_LEVEL": "WARNING",
        }
    )
    app = create_app(config)
    app.config["IMAGE_PROXY_ALLOW_PRIVATE"] = True  # the "remote" images are on 127.0.0.1 (the leak server)
    server = create_server(app, host="127.0.0.1", port=port, threads=8)
    thread = threading.Thread(target=server.run, name="browser-live", daemon=True)
    thread.start()
    ext = app.extensions["postroom"]
    try:
        yield Live(url, app, config, ext["sessions"])
    finally:
        server.close()
        autoconfig.close()
        ext["hits"].close()
        ext["sessions"].kw["bind"].dispose()


class AutoconfigServer:
    """The settings guess's local source (``web.settings_guess_autoconfig``): a Thunderbird
    autoconfig document for any domain, naming the rig's plain IMAP and SMTP submission ports,
    as a self-hosted mail server publishes it."""

    def __init__(self, rig: MailRig) -> None:
        document = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1"><emailProvider id="rig">'
            "<domain>example.test</domain><displayName>Test rig</displayName>"
            '<incomingServer type="imap"><hostname>127.0.0.1</hostname>'
            f"<port>{rig.ports['imap']}</port><socketType>plain</socketType>"
            "<username>%EMAILADDRESS%</username><authentication>password-cleartext</authentication></incomingServer>"
            '<outgoingServer type="smtp"><hostname>127.0.0.1</hostname>'
            f"<port>{rig.ports['smtp_submission']}</port><socketType>plain</socketType>"
            "<username>%EMAILADDRESS%</username><authentication>password-cleartext</authentication></outgoingServer>"
            "</emailProvider></clientConfig>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{{domain}}/config-v1.1.xml"
        threading.Thread(target=self._server.serve_forever, name="autoconfig", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (bash .ci/install-browser installs Debian's chromium and chromium-driver)"
    return None


def chrome_options(width: int = 1280, height: int = 800) -> Options:
    """Headless Debian Chromium, no proxy, no sandbox when running as root (containers)."""
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-proxy-server",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return options


def start_chrome(width: int = 1280, height: int = 800) -> webdriver.Chrome:
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=chrome_options(width, height))


@pytest.fixture(scope="package")
def driver() -> Iterator[webdriver.Chrome]:
    missing = _missing_browser()
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(f"{missing}, but POSTROOM_TEST_REQUIRE_SERVICES=1.")
        pytest.skip(missing)
    chrome = start_chrome()
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="package")
def leak() -> Iterator[LeakServer]:
    with LeakServer() as server:
        yield server


class Browser:
    """A test's view of the shared Chromium, pointed at the live app."""

    def __init__(self, driver: webdriver.Chrome, live: Live) -> None:
        self.driver = driver
        self.live = live

    # ------------------------------------------------------------------ navigation
    def open(self, path: str) -> None:
        self.driver.get(self.live.url + path)

    @property
    def path(self) -> str:
        return urlsplit(self.driver.current_url).path

    @property
    def text(self) -> str:
        """What the page shows (the body's rendered text; "" while a new page replaces it)."""
        try:
            return self.driver.find_element(By.TAG_NAME, "body").text
        except (StaleElementReferenceException, NoSuchElementException):
            return ""

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def wait(self, condition: Callable[[], _T], timeout: float = 10.0, what: str = "") -> _T:
        """Poll ``condition`` until it returns something truthy (and return it)."""
        try:
            return WebDriverWait(
                self.driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
            ).until(lambda _d: condition())
        except TimeoutException:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or condition!r}; at {self.driver.current_url}:\n"
                f"{self.text[:2000]}"
            ) from None

    def wait_path(self, path: str, timeout: float = 10.0) -> None:
        self.wait(lambda: self.path == path, timeout, f"the page {path}")

    # ------------------------------------------------------------------ who
    def sign_in(self, who: Who | None = None) -> Who:
        """Sign in through the real /login form (a new user of a new organisation by default)."""
        who = who or self.live.new_user()
        self.open("/login")
        self.fill("input[name=email]", who.email)
        self.fill("input[name=password]", who.password)
        self.find("form button[type=submit]").click()
        self.wait(lambda: self.path != "/login", what="sign-in to leave /login")
        return who

    # ------------------------------------------------------------------ what happened
    def requests(self) -> list[str]:
        """Every URL the browser requested since the last call (the performance log), any frame."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def console(self) -> list[str]:
        """The browser console's messages since the last call (CSP violations land here)."""
        return [e["message"] for e in self.driver.get_log("browser")]

    def alert_text(self) -> str | None:
        """The text of an open alert/confirm/prompt dialog (dismissed), or None."""
        try:
            alert = self.driver.switch_to.alert
        except NoAlertPresentException:
            return None
        text = alert.text
        alert.dismiss()
        return text

    def reset(self) -> None:
        """Between tests: no dialog, no cookie, no logs left over, a blank page."""
        while self.alert_text() is not None:
            pass
        try:
            self.driver.switch_to.default_content()
            self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
            self.driver.get("about:blank")
        except WebDriverException:
            pass
        self.driver.get_log("performance")
        self.driver.get_log("browser")


@pytest.fixture
def browser(driver: webdriver.Chrome, live: Live) -> Iterator[Browser]:
    page = Browser(driver, live)
    page.reset()
    yield page
    page.reset()


def frame_resources(browser: Browser) -> list[str]:
    """Every URL the current frame fetched (Resource Timing, read from inside the frame). A
    sandboxed frame may run in a renderer process of its own, whose requests the page's
    performance log does not see."""
    return list(browser.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"))


def csp_violations(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]


def page_errors(messages: list[str]) -> list[str]:
    """Console messages that show a page is broken for its user: CSP refusals and JS errors."""
    return [m for m in messages if "Content Security Policy" in m or "Uncaught" in m]
