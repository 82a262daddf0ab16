"""Take the README's screenshots of the main pages, from the demo a newcomer gets.

    .venv/bin/python docs/screenshots/make.py [--out docs/screenshots]

It runs what ``make run`` runs — ``postroom db upgrade`` and ``postroom serve`` — on a fresh
database in a temporary directory, so the demo seeds itself and its mailboxes sync through the
real engine (docs/demo.md); reads the demo's password from the one line ``serve`` prints; waits
until both demo mailboxes have synced; then signs in with Debian's headless Chromium (the one the
browser tests use, ``/usr/bin/chromium``) and saves a 1280×800 PNG of each page:

    signin, dashboard, mailboxes, applicants, timeline (Maya Okafor), message (Priya Raman's HTML
    portfolio, its remote image blocked), thread, compose (a templated message to Daniel Brooks
    with its live preview), templates (the template editor scrolled to its results chart), outbox

``serve`` is stopped with SIGTERM (it finishes what it has in hand) and the directory removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

HERE = Path(__file__).resolve().parent
POSTROOM = Path(sys.executable).with_name("postroom")
WIDTH, HEIGHT = 1280, 800
DEMO_LINE = re.compile(r"Demo mode: sign in at (\S+) as (\S+) with password (\S+) ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chrome() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--disable-dev-shm-usage", "--disable-gpu", "--no-proxy-server",
                "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WIDTH},{HEIGHT}"):  # fmt: skip
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    # the window size counts the browser's own frame; the page itself must be WIDTH × HEIGHT
    metrics = {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


class Demo:
    """``postroom serve`` on a fresh database in ``home``: the demo, seeded and synced."""

    def __init__(self, home: Path) -> None:
        self.env = {
            **os.environ,
            "HOME": str(home),
            "POSTROOM_DATA_DIR": str(home / "data"),
            "POSTROOM_DATABASE_URL": f"sqlite:///{home / 'postroom.db'}",
            "POSTROOM_SECRET_KEY": "screenshots-secret-key-0123456789",
            "POSTROOM_LOG_LEVEL": "WARNING",
        }
        self.env.pop("POSTROOM_CONFIG", None)
        subprocess.run([str(POSTROOM), "db", "upgrade"], env=self.env, check=True, capture_output=True)
        port = _free_port()
        self.proc = subprocess.Popen(
            [str(POSTROOM), "serve", "--port", str(port)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # serve prints the demo's sign-in once, first
        found = DEMO_LINE.search(line)
        if not found:
            self.stop()
            raise SystemExit(f"postroom serve did not start the demo; it said: {line!r}")
        self.url, self.email, self.password = found.group(1).rstrip("/"), found.group(2), found.group(3)

    def wait_synced(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                [str(POSTROOM), "demo", "status", "--json"], env=self.env, capture_output=True, text=True
            )
            if out.returncode == 0:
                status = json.loads(out.stdout)
                if status.get("mailboxes") and all(m["last_success_at"] for m in status["mailboxes"]):
                    return
            time.sleep(0.5)
        raise SystemExit("the demo's mailboxes did not sync within a minute")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Camera:
    def __init__(self, driver: webdriver.Chrome, base: str, out: Path) -> None:
        self.driver, self.base, self.out = driver, base, out
        self.taken: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def click(self, css: str, text: str | None = None) -> None:
        for element in self.driver.find_elements(By.CSS_SELECTOR, css):
            if text is None or text in element.text:
                element.click()
                return
        raise SystemExit(f"nothing to click at {css!r} {text or ''} on {self.driver.current_url}")

    def wait(self, condition: Callable[[], object], what: str) -> None:
        try:
            WebDriverWait(self.driver, 15, poll_frequency=0.1).until(lambda _d: condition())
        except TimeoutException:
            raise SystemExit(f"timed out waiting for {what} on {self.driver.current_url}") from None

    def shoot(self, name: str) -> None:
        time.sleep(0.2)  # let fonts and the frame settle
        path = self.out / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.taken.append(path)
        print(f"{path}  {self.driver.current_url.replace(self.base, '')}")


def take(demo: Demo, out: Path) -> list[Path]:
    driver = _chrome()
    try:
        cam = Camera(driver, demo.url, out)
        cam.open("/login")
        cam.shoot("signin")
        driver.find_element(By.NAME, "email").send_keys(demo.email)
        driver.find_element(By.NAME, "password").send_keys(demo.password)
        cam.click("form button[type=submit]")
        cam.wait(lambda: not driver.current_url.endswith("/login"), "the sign-in")
        cam.shoot("dashboard")
        cam.open("/mailboxes")
        cam.shoot("mailboxes")
        cam.open("/applicants")
        cam.shoot("applicants")
        cam.click("table.applicants a", "Maya Okafor")
        cam.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "ol.timeline"), "Maya's timeline")
        cam.shoot("timeline")
        cam.click("ol.timeline .thread-link")
        cam.wait(lambda: "/threads/" in driver.current_url, "the thread")
        cam.shoot("thread")
        cam.open("/applicants")
        cam.click("table.applicants a", "Priya Raman")
        cam.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "ol.timeline"), "Priya's timeline")
        cam.click("ol.timeline .subject a")
        cam.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "iframe.mail, .mail-text"), "the message")
        cam.shoot("message")
        cam.open("/applicants")
        cam.click("table.applicants a", "Daniel Brooks")
        cam.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "a.button.primary[href*=compose]"), "Daniel's page")
        cam.click("a.button.primary[href*=compose]")
        Select(driver.find_element(By.NAME, "template")).select_by_visible_text("Technical interview invitation")
        data = '{"role": "Senior Backend Engineer", "slot": "Friday at 14:00 CET", "interviewer": "Sam Chen"}'
        driver.find_element(By.NAME, "data").send_keys(data)
        cam.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#preview iframe"), "the compose preview")
        cam.shoot("compose")
        cam.open("/templates")
        cam.click("main a", "Technical interview invitation")
        cam.wait(lambda: driver.find_elements(By.CSS_SELECTOR, "section.results"), "the template's results")
        driver.execute_script("document.querySelector('section.results').scrollIntoView({block: 'end'})")
        cam.shoot("templates")
        cam.open("/outbox")
        cam.shoot("outbox")
        deadline = time.monotonic() + 60  # the worker takes the processing mailbox after its first sync
        while time.monotonic() < deadline:
            cam.open("/inbound")
            if len(driver.find_elements(By.CSS_SELECTOR, "[data-inbound-item]")) >= 5:
                break
            time.sleep(1)
        driver.execute_script("document.querySelector('[data-inbound-item]').scrollIntoView({block: 'start'})")
        cam.shoot("inbound")
        cam.open("/webhooks")
        cam.shoot("webhooks")
        return cam.taken
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (default: %(default)s)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="postroom-screenshots-") as home:
        demo = Demo(Path(home))
        try:
            demo.wait_synced()
            take(demo, args.out)
        finally:
            demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
