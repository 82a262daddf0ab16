"""The Graph stand-in's own behaviour, over HTTPS with plain requests, every answer checked against the schema."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from standins.graph_schema import check
from tests.rig.messages import make_message, new_message_id
from tests.standins.graph_rig import ADDRESS, GraphRig, graph_rig


class Client:
    def __init__(self, rig: GraphRig) -> None:
        self.rig = rig
        self.root = f"{rig.graph_server.url}/v1.0"
        self.token = _access_token(rig, rig.identity.grant(ADDRESS))

    def call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        url = url if url.startswith("https://") else self.root + url
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, url, headers=headers, verify=self.rig.ca_file, timeout=10, **kwargs)


def _access_token(rig: GraphRig, refresh: str) -> str:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "client_id": rig.identity.client_id,
        "client_secret": rig.identity.client_secret,
        "scope": "https://graph.microsoft.com/Mail.ReadWrite",
    }
    url = f"{rig.idp_server.url}/{rig.identity.tenant}/oauth2/v2.0/token"
    answer = requests.post(url, data=form, verify=rig.ca_file, timeout=10).json()
    assert check(answer, "tokenResponse") == []
    return str(answer["access_token"])


@pytest.fixture
def rig() -> Iterator[GraphRig]:
    with graph_rig() as rig:
        yield rig


@pytest.fixture
def client(rig: GraphRig) -> Client:
    return Client(rig)


def test_every_call_needs_a_valid_bearer_token(rig: GraphRig, client: Client) -> None:
    assert requests.get(client.root + "/me", verify=rig.ca_file, timeout=10).status_code == 401
    assert client.call("GET", "/me").json()["mail"] == ADDRESS
    rig.identity.expire_access_tokens()
    expired = client.call("GET", "/me")
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "expired" in expired.json()["error"]["message"] and "WWW-Authenticate" in expired.headers


def test_delta_pages_then_reports_changes_and_removals(rig: GraphRig, client: Client) -> None:
    box = rig.graph.mailbox(ADDRESS)
    ids = [rig.deliver(make_message()) for _ in range(5)]
    page = client.call(
        "GET", "/me/mailFolders/inbox/messages/delta?$select=isRead,flag", headers={"Prefer": "odata.maxpagesize=2"}
    )
    assert page.headers["Preference-Applied"] == "odata.maxpagesize=2"
    seen = []
    while True:
        body = page.json()
        assert check(body, "messageCollection") == []
        seen += [m["id"] for m in body["value"]]
        assert all(set(m) == {"@odata.etag", "id", "isRead", "flag"} for m in body["value"])  # $select honoured
        if "@odata.nextLink" not in body:
            break
        page = client.call("GET", body["@odata.nextLink"])
    assert seen == ids and len(rig.graph.api_calls("delta")) == 3
    box.set_flags(ids[0], {"\\Seen"})
    box.delete(ids[1])
    changes = client.call("GET", body["@odata.deltaLink"]).json()
    assert {m["id"]: m.get("@removed", m.get("isRead")) for m in changes["value"]} == {
        ids[0]: True,
        ids[1]: {"reason": "deleted"},
    }
    assert client.call("GET", changes["@odata.deltaLink"]).json()["value"] == []
    combined = client.call("GET", changes["@odata.deltaLink"] + "&$select=id")  # options go in the first request only
    assert combined.status_code == 400
    box.expire_sync_state()
    gone = client.call("GET", changes["@odata.deltaLink"])
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "SyncStateNotFound"


def test_transport_headers_only_when_selected_and_extended_properties_by_expand(rig: GraphRig, client: Client) -> None:
    parent = new_message_id()
    raw = make_message(in_reply_to=parent, references=[parent])
    mid = rig.deliver(raw)
    plain = client.call("GET", f"/me/messages/{mid}").json()
    assert "internetMessageHeaders" not in plain and check(plain, "message") == []
    expand = "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'String 0x1042')"
    rich = client.call("GET", f"/me/messages/{mid}?$select=internetMessageHeaders&$expand={expand}").json()
    assert {"name": "In-Reply-To", "value": parent} in rich["internetMessageHeaders"]
    assert {p["id"]: p["value"] for p in rich["singleValueExtendedProperties"]} == {
        "Integer 0xe08": str(len(raw)),
        "String 0x1042": parent,
    }
    assert client.call("GET", f"/me/messages/{mid}/$value").content == raw
    bad = client.call("GET", f"/me/messages/{mid}?$select=threadId")
    assert bad.status_code == 400 and client.call("GET", "/me?$foo=1").status_code == 400


def test_mime_creates_drafts_and_json_with_message_flags_does_not(rig: GraphRig, client: Client) -> None:
    raw = base64.b64encode(make_message(to="ann@example.org"))
    draft = client.call("POST", "/me/mailFolders/sentitems/messages", data=raw, headers={"Content-Type": "text/plain"})
    assert draft.status_code == 201 and draft.json()["isDraft"] is True
    sent = client.call(
        "POST",
        "/me/mailFolders/sentitems/messages",
        json={
            "subject": "Copy",
            "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}],
            "internetMessageId": "<copy@contoso.test>",
            "singleValueExtendedProperties": [{"id": "Integer 0x0E07", "value": "1"}],
        },
    )
    assert sent.status_code == 201 and sent.json()["isDraft"] is False and sent.json()["isRead"] is True
    assert sent.json()["internetMessageId"] == "<copy@contoso.test>"
    header = client.call("POST", "/me/messages", json={"internetMessageHeaders": [{"name": "Subject", "value": "x"}]})
    assert header.status_code == 400  # only x- headers may be set


def test_send_mail_mime_and_json(rig: GraphRig, client: Client) -> None:
    box = rig.graph.mailbox(ADDRESS)
    mid = new_message_id()
    mime = base64.b64encode(make_message(message_id=mid, from_=ADDRESS, to=ADDRESS, cc="ann@example.org"))
    assert client.call("POST", "/me/sendMail", data=mime, headers={"Content-Type": "text/plain"}).status_code == 202
    inbox, sent = (box.in_folder(box.folder(n).id) for n in ("inbox", "sentitems"))
    assert [i.raw.count(mid.encode()) for i in inbox + sent] == [1, 1]
    assert inbox[0].conversation_id == sent[0].conversation_id
    assert rig.graph.outbound[0][1] == ["ann@example.org"]
    unsaved = {
        "message": {
            "subject": "Hi",
            "body": {"contentType": "text", "content": "Hello"},
            "toRecipients": [{"emailAddress": {"address": "ann@example.org"}}],
        },
        "saveToSentItems": False,
    }
    assert client.call("POST", "/me/sendMail", json=unsaved).status_code == 202
    assert len(box.in_folder(box.folder("sentitems").id)) == 1
    bad = client.call("POST", "/me/sendMail", data=b"%%%", headers={"Content-Type": "text/plain"})
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "Invalid base64 string for MIME content."
    nobody = base64.b64encode(make_message(to=""))
    assert client.call("POST", "/me/sendMail", data=nobody, headers={"Content-Type": "text/plain"}).status_code == 400


def test_move_gives_a_new_id_and_patch_sets_flags(rig: GraphRig, client: Client) -> None:
    mid = rig.deliver(make_message())
    moved = client.call("POST", f"/me/messages/{mid}/move", json={"destinationId": "archive"})
    assert moved.status_code == 201 and moved.json()["id"] != mid
    assert client.call("GET", f"/me/messages/{mid}").status_code == 404
    patched = client.call(
        "PATCH", f"/me/messages/{moved.json()['id']}", json={"isRead": True, "flag": {"flagStatus": "flagged"}}
    ).json()
    assert patched["isRead"] is True and patched["flag"] == {"flagStatus": "flagged"}


def test_batch_runs_up_to_twenty_parts_with_their_own_status(rig: GraphRig, client: Client) -> None:
    mid = rig.deliver(make_message())
    rig.graph.fail("messages.get", status=429, retry_after=2)
    parts = [
        {"id": "1", "method": "GET", "url": f"/me/messages/{mid}?$select=subject"},
        {"id": "2", "method": "GET", "url": "/me/messages/AAMkAGI2nothere"},
        {"id": "3", "method": "GET", "url": "/me/mailFolders/inbox"},
    ]
    answer = client.call("POST", "/$batch", json={"requests": parts}).json()
    assert check(answer, "batchResponse") == []
    statuses = {p["id"]: (p["status"], p["headers"].get("Retry-After")) for p in answer["responses"]}
    assert statuses == {"1": (429, "2"), "2": (404, None), "3": (200, None)}
    many = [{"id": str(i), "method": "GET", "url": "/me"} for i in range(21)]
    assert client.call("POST", "/$batch", json={"requests": many}).status_code == 400
