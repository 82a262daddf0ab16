"""Connecting a mailbox from the browser (issue 12, item 2): IMAP/SMTP through the settings guess,
end to end against the Dovecot rig — the address, the servers found in an autoconfig document a
local web server publishes (``web.settings_guess_autoconfig``, with private addresses allowed),
probed under the CA of ``imap.ca_file``, confirmed on the second step, stored in the signed-in
user's organisation, then synced. Mistakes show next to their field; the consent flows' answers
are pages of the app. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from postroom.config import Config, ConfigError, load_config
from postroom.models import MailAccount
from services.orgs import resolve_org
from tests.rig.fixtures import Mailbox, make_message
from tests.rig.mailrig import MailRig
from tests.sync.helpers import sync_ok
from tests.web.page_helpers import browser, field_errors, flashes, page_text
from web import create_app

AUTOCONFIG = """<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="example.test">
  <domain>example.test</domain><displayName>Rig Mail</displayName>
  <incomingServer type="imap"><hostname>127.0.0.1</hostname><port>{imaps}</port><socketType>SSL</socketType>
    <username>%EMAILADDRESS%</username><authentication>password-cleartext</authentication></incomingServer>
  <outgoingServer type="smtp"><hostname>127.0.0.1</hostname><port>{submission}</port><socketType>plain</socketType>
    <username>%EMAILADDRESS%</username><authentication>password-cleartext</authentication></outgoingServer>
</emailProvider></clientConfig>
"""
_INPUT = re.compile(r'<input type="(?:text|email|number|password)" name="(\w+)" value="([^"]*)"')
_SELECTED = re.compile(r'<select name="(\w+)">.*?<option value="(\w+)" selected>', re.S)


@pytest.fixture(scope="module")
def autoconfig(mail_rig: MailRig) -> Iterator[tuple[str, list[str]]]:
    """A local web server publishing the rig's autoconfig document for example.test, and the paths asked for."""
    body = AUTOCONFIG.format(imaps=mail_rig.ports["imaps"], submission=mail_rig.ports["smtp_submission"]).encode()
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            found = self.path.startswith("/example.test/config-v1.1.xml")
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{{domain}}/config-v1.1.xml?emailaddress={{address}}", asked
    server.shutdown()
    server.server_close()


@pytest.fixture
def guessing(config: Config, mail_rig: MailRig, autoconfig: tuple[str, list[str]]) -> Config:
    """The app as a developer runs it against the rig: its autoconfig document, its CA, private addresses."""
    web = dataclasses.replace(config.web, settings_guess_autoconfig=autoconfig[0], settings_guess_private=True)
    return dataclasses.replace(config, web=web, imap=dataclasses.replace(config.imap, ca_file=mail_rig.tls_ca))


def _form(page: str) -> dict[str, str]:
    """The values the second step's form is filled in with."""
    return dict(_INPUT.findall(page)) | dict(_SELECTED.findall(page))


def test_an_imap_mailbox_connects_through_the_settings_guess_and_syncs(
    guessing: Config, mailbox: Mailbox, mail_rig: MailRig, autoconfig: tuple[str, list[str]]
) -> None:
    mailbox.append(make_message(subject="Application: Data Engineer"))
    b = browser(guessing)
    assert "IMAP/SMTP" in b.text("/connect")

    step2 = b.post("/connect/imap", {"email": mailbox.address, "password": mailbox.password})
    page = page_text(step2)
    assert step2.status_code == 200, page
    assert any(
        path.startswith(f"/example.test/config-v1.1.xml?emailaddress={mailbox.address}") for path in autoconfig[1]
    )
    assert "Found in the domain's own autoconfig document (Rig Mail)." in page
    imaps, submission = mail_rig.ports["imaps"], mail_rig.ports["smtp_submission"]
    assert f"IMAP 127.0.0.1:{imaps} (ssl): answered" in page  # over TLS, trusting imap.ca_file
    assert f"SMTP 127.0.0.1:{submission} (none): answered" in page
    values = _form(page)
    assert values == {
        "email": mailbox.address,
        "username": mailbox.address,
        "password": mailbox.password,
        "imap_host": "127.0.0.1",
        "imap_port": str(imaps),
        "imap_security": "ssl",
        "smtp_host": "127.0.0.1",
        "smtp_port": str(submission),
        "smtp_security": "none",
    }

    done = b.follow(b.post("/connect/imap/save", values))
    assert flashes(done) == [("ok", f"{mailbox.address} is connected; Postroom is syncing it now.")]
    with b.sessions() as s:
        account = s.scalars(select(MailAccount)).one()
        assert account.org_id == resolve_org(s, None)  # the signed-in user's organisation
        assert (account.email, account.settings["imap_port"], account.settings["ca_file"]) == (
            mailbox.address,
            imaps,
            mail_rig.tls_ca,
        )
    result = sync_ok(guessing, b.sessions, account.id)
    assert sum(f.new for f in result.folders) == 1
    assert "state-active" in b.text("/mailboxes")


def test_the_probe_trusts_only_the_configured_ca(guessing: Config, mailbox: Mailbox, mail_rig: MailRig) -> None:
    untrusting = dataclasses.replace(guessing, imap=dataclasses.replace(guessing.imap, ca_file=None))
    page = page_text(browser(untrusting).post("/connect/imap", {"email": mailbox.address, "password": "x"}))
    assert f"IMAP 127.0.0.1:{mail_rig.ports['imaps']} (ssl): did not answer from here" in page


def test_without_private_addresses_the_local_servers_are_not_probed(guessing: Config, mailbox: Mailbox) -> None:
    closed = dataclasses.replace(guessing, web=dataclasses.replace(guessing.web, settings_guess_private=False))
    page = page_text(browser(closed).post("/connect/imap", {"email": mailbox.address, "password": "x"}))
    assert "Postroom could not find this address's servers; fill them in" in page
    assert 'name="imap_host" value=""' in page and "answered" not in page


def test_a_malformed_address_is_named_next_to_the_field(config: Config) -> None:
    resp = browser(config).post("/connect/imap", {"email": "not an address", "password": "x"})
    assert resp.status_code == 400
    assert field_errors(page_text(resp)) == ["Email address must be an email address, like name@example.com."]


def test_settings_that_cannot_work_are_named_next_to_their_field_and_nothing_is_stored(config: Config) -> None:
    b = browser(config)
    good = {
        "email": "ann@example.org",
        "username": "ann",
        "password": "pw",
        "imap_host": "imap.example.org",
        "imap_port": "993",
        "imap_security": "ssl",
        "smtp_host": "smtp.example.org",
        "smtp_port": "587",
        "smtp_security": "starttls",
    }
    for change, error in [
        ({"imap_port": "99x"}, "The IMAP port must be a number such as 993, not '99x'."),
        ({"imap_port": "70000"}, "IMAP port must be a TCP port between 1 and 65535, not 70000."),
        ({"smtp_host": ""}, "Enter the SMTP server, such as mail.example.com."),
        ({"password": ""}, "Enter the mailbox's Password."),
        (
            {"smtp_security": "none"},
            "Refusing to send the password unencrypted to smtp.example.org; use ssl or starttls "
            "(or set imap.allow_plaintext = true if you really mean it).",
        ),
    ]:
        resp = b.post("/connect/imap/save", good | change)
        page = page_text(resp)
        assert resp.status_code == 400 and field_errors(page) == [error], field_errors(page)
        assert _form(page)["imap_host"] == (change.get("imap_host") or "imap.example.org")  # as typed
    with b.sessions() as s:
        assert s.scalars(select(MailAccount)).all() == []


def test_a_finished_consent_flow_answers_with_a_page_of_the_app_and_no_session(config: Config) -> None:
    """The Microsoft callback is a cross-site POST without the session cookie: its answer is a
    whole page with somewhere to go, and it sets no session cookie."""
    client = create_app(config).test_client()
    resp = client.post("/connect/microsoft/callback", data={"code": "x", "state": "y"})
    page = page_text(resp)
    assert resp.status_code == 400 and page.startswith("<!doctype html>")
    assert "<h1>Microsoft 365 was not connected</h1>" in page and 'href="/connect"' in page
    assert not [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert resp.headers["Cache-Control"] == "no-store"


def test_the_guess_settings_are_checked_when_read(tmp_path: Path) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text('[web]\nsettings_guess_autoconfig = "http://autoconfig.example.com/{domain}.xml"\n')
    with pytest.raises(ConfigError, match="must be an https URL"):
        load_config(path, env={"HOME": str(tmp_path)})
    path.write_text('[web]\nsettings_guess_autoconfig = "http://127.0.0.1:8025/{domain}.xml"\n')
    assert load_config(path, env={"HOME": str(tmp_path)}).web.settings_guess_autoconfig.endswith("{domain}.xml")
