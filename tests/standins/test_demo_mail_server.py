"""The demo's mail server (standins.demo): the Gmail stand-in whose mail outlives a restart,
driven by the real google-api-python-client with the access tokens it issues."""

from __future__ import annotations

import base64
import copy
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient import discovery

from postroom import demo_scenario as scenario
from standins.demo import DemoMailServer, DemoStateError
from standins.discovery import load_document
from tests.rig.messages import make_message

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
RITA = scenario.RITA.address


def _service(server: DemoMailServer, address: str) -> Any:
    doc = copy.deepcopy(load_document("gmail", "v1"))
    doc["rootUrl"] = doc["mtlsRootUrl"] = server.api_root
    token, _ = server.access_token(address)
    http = google_auth_httplib2.AuthorizedHttp(Credentials(token=token), http=httplib2.Http(timeout=10))
    return discovery.build_from_document(doc, http=http)


def _started(path: Path) -> DemoMailServer:
    server = DemoMailServer(path, seed=lambda: scenario.deliveries(NOW), hosts=[scenario.DANIEL.address])
    server.start()
    return server


def test_mail_sent_through_it_is_still_there_after_a_restart_and_ids_keep_growing(tmp_path: Path) -> None:
    state = tmp_path / "demo" / "mail.json"
    first = _started(state)
    gmail = _service(first, RITA)
    seeded = gmail.users().messages().list(userId="me").execute()["resultSizeEstimate"]
    raw = make_message(subject="Next steps", to=scenario.DANIEL.address, from_=RITA)
    sent = gmail.users().messages().send(userId="me", body={"raw": base64.urlsafe_b64encode(raw).decode()}).execute()
    history_id = gmail.users().getProfile(userId="me").execute()["historyId"]
    first.close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600

    second = DemoMailServer(state, seed=lambda: pytest.fail("a restart must not seed again"))  # type: ignore[arg-type,return-value]
    second.start()
    try:
        gmail = _service(second, RITA)  # a new token: the old process's grants are gone with it
        assert gmail.users().getProfile(userId="me").execute()["historyId"] == history_id
        assert gmail.users().messages().list(userId="me").execute()["resultSizeEstimate"] == seeded + 1
        again = gmail.users().messages().get(userId="me", id=sent["id"], format="raw").execute()
        assert base64.urlsafe_b64decode(again["raw"]) == raw
        assert len(second.messages(scenario.DANIEL.address)) == 1  # delivered to the applicant it hosts
        # the history the engine's cursor points into is still there, and continues
        changes = gmail.users().history().list(userId="me", startHistoryId=str(int(history_id) - 1)).execute()
        assert [m["message"]["id"] for m in changes["history"][0]["messagesAdded"]] == [sent["id"]]
        later = gmail.users().messages().send(userId="me", body={"raw": base64.urlsafe_b64encode(raw).decode()})
        newer = later.execute()
        assert int(newer["id"], 16) > int(sent["id"], 16)
        assert int(gmail.users().getProfile(userId="me").execute()["historyId"]) > int(history_id)
    finally:
        second.close()


def test_a_state_file_it_cannot_read_is_one_sentence(tmp_path: Path) -> None:
    state = tmp_path / "mail.json"
    state.write_text("{not json")
    with pytest.raises(DemoStateError, match=r"The demo's mail in .*mail\.json cannot be read"):
        DemoMailServer(state, seed=list).start()
