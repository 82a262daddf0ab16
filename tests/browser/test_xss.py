"""The XSS corpus (tests/data/xss/vectors.html, 100+ vectors: scripts, event handlers, SVG and
MathML tricks, ``javascript:``/``data:`` URLs, CSS ``url()``/``@import``, ``<base>``, meta
refresh, forms, srcset, mutation-XSS classics) rendered by a real Chromium on the message page.

Every vector arrives as a real email: appended to the rig's Dovecot (as HTML, and once more as
plain text) and synced by the real engine. Each vector's payload, if it runs or loads, requests
``/leak/<n>`` from the leak server (or raises a dialog). Then, for every message:

* **before "Show images"**: no dialog, no script of the mail's in the page, nothing in the
  frame's DOM (as Chromium's own parser built it, so mutation XSS counts) that could run or
  load — no script, frame, object, form, ``<base>``, meta refresh, SVG/MathML, ``on*``
  attribute or ``javascript:``/``data:`` URL — the frame fetched nothing at all, and the leak
  server received **no request**, from anyone;
* **after "Show images"** (where the page offers it): still no dialog, the frame fetched only
  ``/img/`` URLs of Postroom's image proxy, and every request that reached the leak server
  came from the proxy (its User-Agent), none from the browser;
* **as plain text**: the vector is shown as the very text it is, in the page itself, with no
  element but the text block and links.

The leak server's own log is the witness: the sandboxed frame may run in a renderer process of
its own, whose requests the page's performance log does not see.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP

import pytest
import requests
from selenium.common.exceptions import UnexpectedAlertPresentException, WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from sqlalchemy import select

from postroom.models import Email
from tests.browser.conftest import Browser, Live, Who, frame_resources
from tests.browser.leak_server import LeakServer
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig
from tests.xss_corpus import load_vectors

# Everything in the frame's body that could run or fetch, as Chromium parsed the srcdoc.
DOM_PROBE = """
const bad = [];
const urlAttrs = ['href', 'src', 'action', 'formaction', 'xlink:href', 'srcset', 'background', 'poster',
                  'data', 'lowsrc', 'dynsrc', 'ping', 'cite', 'codebase', 'manifest', 'style'];
const banned = ['script', 'iframe', 'frame', 'frameset', 'object', 'embed', 'applet', 'form', 'input', 'button',
                'textarea', 'select', 'base', 'link', 'meta', 'style', 'svg', 'math', 'template', 'video', 'audio',
                'source', 'track', 'portal', 'noscript'];
for (const el of document.body ? document.body.querySelectorAll('*') : []) {
  const tag = el.localName;
  if (banned.includes(tag)) bad.push('<' + tag + '>');
  for (const a of el.attributes) {
    const name = a.name.toLowerCase();
    if (name.startsWith('on')) bad.push(tag + ' @' + name);
    const squeezed = a.value.replace(/[\\s\\x00-\\x1f]/g, '');
    if (urlAttrs.includes(name) && /(^|[,(:'"])(javascript|vbscript|data):/i.test(squeezed))
      bad.push(tag + ' @' + name + '=' + a.value.slice(0, 60));
    if (name === 'style' && /url\\(|image-set|expression|@import|behavior/i.test(a.value))
      bad.push(tag + ' @style=' + a.value.slice(0, 60));
  }
}
const metas = [...document.querySelectorAll('meta[http-equiv]')].map(m => m.httpEquiv.toLowerCase());
if (metas.join() !== 'content-security-policy') bad.push('meta http-equiv: ' + metas.join());
if (document.querySelectorAll('base').length) bad.push('<base> in the document');
if (document.querySelectorAll('head script, head link').length) bad.push('script or link in <head>');
return bad;
"""
# The top page: only Postroom's own scripts, nothing of the mail's.
TOP_PROBE = """
return [...document.scripts].map(s => s.src || 'inline: ' + s.textContent.slice(0, 60))
  .concat(window.__xss === undefined ? [] : ['window.__xss is set'])
  .concat([...document.querySelectorAll('[onload],[onerror],[onclick],[onmouseover],[onfocus]')]
          .map(e => e.outerHTML.slice(0, 60)));
"""


@dataclass(frozen=True)
class Corpus:
    who: Who
    vectors: list[str]
    html: dict[int, int]  # vector number -> email id of the HTML message
    text: dict[int, int]  # vector number -> email id of the plain-text message


def _mail(n: int, vector: str, to: str, kind: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Mallory <mallory@attacker.test>"
    msg["To"] = to
    msg["Subject"] = f"XSS vector {n} ({kind})"
    msg["Message-ID"] = f"<xss-{kind}-{n}@attacker.test>"
    msg["Date"] = "Mon, 02 Jun 2025 09:00:00 +0000"
    if kind == "html":
        msg.set_content(vector, subtype="html")
    else:
        msg.set_content(vector)
    return msg.as_bytes(policy=SMTP)


@pytest.fixture(scope="module")
def corpus(live: Live, mail_rig: MailRig, leak: LeakServer) -> Iterator[Corpus]:
    vectors = load_vectors(leak.port)
    address = mail_rig.free_users.pop()  # type: ignore[attr-defined]
    box = Mailbox(mail_rig, address, mail_rig.users[address], "")
    with box.imap() as conn:  # one IMAP session delivers them all
        for n, vector in enumerate(vectors, 1):
            for kind in ("html", "text"):
                typ, data = conn.append("INBOX", None, None, _mail(n, vector, address, kind))
                assert typ == "OK", data
    who = live.new_user()
    live.sync(live.connect(box, who.org_id))
    ids: dict[str, dict[int, int]] = {"html": {}, "text": {}}
    with live.sessions() as s:
        for email_id, message_id in s.execute(
            select(Email.id, Email.message_id).where(Email.org_id == who.org_id, Email.message_id.like("<xss-%"))
        ):
            kind, n = message_id.strip("<>").split("@")[0].split("-")[1:]
            ids[kind][int(n)] = email_id
    assert len(ids["html"]) == len(ids["text"]) == len(vectors)
    yield Corpus(who, vectors, ids["html"], ids["text"])


def _dialog(browser: Browser) -> str | None:
    try:
        return browser.alert_text()
    except UnexpectedAlertPresentException as exc:
        return exc.alert_text or "a dialog"


def _open_message(browser: Browser, email_id: int, images: bool = False) -> list[str]:
    """Open the message page and report whatever ran or loaded there (the frame's fetches apart)."""
    found: list[str] = []
    try:
        browser.open(f"/messages/{email_id}" + ("?images=1" if images else ""))
    except UnexpectedAlertPresentException as exc:
        found.append(f"dialog: {exc.alert_text}")
    dialog = _dialog(browser)
    if dialog is not None:
        found.append(f"dialog: {dialog}")
    found += [f"top page: {s}" for s in browser.driver.execute_script(TOP_PROBE) if "/static/" not in s]
    return found


def _in_frame(browser: Browser) -> tuple[list[str], list[str]]:
    """(what could run or load in the mail frame's DOM, the URLs the frame fetched)."""
    for attempt in (1, 2):
        try:
            frame = browser.find("iframe.mail")
            ActionChains(browser.driver, duration=0).move_to_element(frame).perform()  # onmouseover and friends
            browser.driver.switch_to.frame(frame)
            return list(browser.driver.execute_script(DOM_PROBE)), frame_resources(browser)
        except WebDriverException:  # the frame was still being replaced by its srcdoc: look again
            if attempt == 2:
                raise
        finally:
            browser.driver.switch_to.default_content()
    raise AssertionError("unreachable")


def _settle(leak: LeakServer) -> None:
    """Give a late load (a timer, a refresh, a lazy image) its chance to reach the leak server."""
    time.sleep(0.5)


def test_no_vector_runs_or_loads_anything_before_show_images(
    browser: Browser, corpus: Corpus, leak: LeakServer
) -> None:
    assert len(corpus.vectors) >= 50
    browser.sign_in(corpus.who)
    leak.reset()
    failures: dict[int, list[str]] = {}
    offers_images = 0
    for n, email_id in sorted(corpus.html.items()):
        found = _open_message(browser, email_id)
        dom, fetched = _in_frame(browser)
        found += [f"in the frame: {d}" for d in dom] + [f"the frame fetched {u}" for u in fetched]
        offers_images += bool(browser.find_all("a.button[href*='images=1']"))
        if _dialog(browser) is not None:
            found.append("a dialog after hovering")
        if found:
            failures[n] = found
    _settle(leak)
    hits = leak.hits()
    for hit in hits:
        n = int(hit.path.rsplit("/", 1)[-1]) if hit.path.rsplit("/", 1)[-1].isdigit() else 0
        failures.setdefault(n, []).append(f"the leak server got {hit.method} {hit.path} from {hit.user_agent[:40]!r}")
    report = "\n".join(
        f"vector {n}: {corpus.vectors[n - 1][:100]}\n    " + "\n    ".join(f) for n, f in failures.items()
    )
    assert not failures, report
    assert offers_images >= 4, "the corpus's remote images should be blocked, with the offer to show them"


def test_after_show_images_only_the_proxy_fetches(browser: Browser, corpus: Corpus, leak: LeakServer) -> None:
    browser.sign_in(corpus.who)
    cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
    with requests.Session() as http:  # which pages offer "Show images": asked quickly, outside the browser
        http.trust_env = False
        offers = {
            n: email_id
            for n, email_id in sorted(corpus.html.items())
            if "images=1" in http.get(f"{browser.live.url}/messages/{email_id}", cookies=cookies, timeout=10).text
        }
    assert len(offers) >= 4
    leak.reset()
    failures: dict[int, list[str]] = {}
    proxy = browser.live.url + "/img/"
    for n, email_id in offers.items():
        found = _open_message(browser, email_id, images=True)
        dom, fetched = _in_frame(browser)
        found += [f"in the frame: {d}" for d in dom]
        found += [f"the frame fetched {u}, not through the proxy" for u in fetched if not u.startswith(proxy)]
        if found:
            failures[n] = found
    _settle(leak)
    for hit in leak.hits():
        if hit.user_agent != "Postroom image proxy":
            n = int(hit.path.rsplit("/", 1)[-1]) if hit.path.rsplit("/", 1)[-1].isdigit() else 0
            failures.setdefault(n, []).append(f"{hit.user_agent[:40]!r} fetched {hit.path} itself")
    report = "\n".join(
        f"vector {n}: {corpus.vectors[n - 1][:100]}\n    " + "\n    ".join(f) for n, f in failures.items()
    )
    assert not failures, report


def test_every_vector_sent_as_plain_text_is_shown_as_that_text(
    browser: Browser, corpus: Corpus, leak: LeakServer
) -> None:
    browser.sign_in(corpus.who)
    leak.reset()
    failures: dict[int, list[str]] = {}
    for n, email_id in sorted(corpus.text.items()):
        found = _open_message(browser, email_id)
        block = browser.find(".mail-text")
        tags = browser.driver.execute_script(
            "return [...arguments[0].querySelectorAll('*')].map(e => e.localName)", block
        )
        found += [f"element <{t}> in the text" for t in tags if t not in ("pre", "a")]
        shown = browser.driver.execute_script("return arguments[0].textContent", block).strip()
        if shown != corpus.vectors[n - 1].strip():
            found.append(f"shown as {shown[:100]!r}")
        if found:
            failures[n] = found
    _settle(leak)
    assert leak.hits() == []
    report = "\n".join(
        f"vector {n}: {corpus.vectors[n - 1][:100]}\n    " + "\n    ".join(f) for n, f in failures.items()
    )
    assert not failures, report
