"""The Gmail stand-in's semantics, driven by the real google-api-python-client over HTTP."""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from providers.base import FolderRole
from standins import gmail_api
from standins.discovery import load_document
from tests.rig.messages import make_message, new_message_id
from tests.standins.gmail_rig import ADDRESS, GmailRig, gmail_rig


@pytest.fixture
def rig() -> Iterator[GmailRig]:
    with gmail_rig() as rig:
        yield rig


def service(rig: GmailRig, refresh_token: str | None = None) -> Any:
    doc = copy.deepcopy(load_document("gmail", "v1"))
    doc["rootUrl"] = doc["mtlsRootUrl"] = rig.server.url + "/"
    creds = Credentials(
        token=None,
        refresh_token=refresh_token or rig.refresh_token,
        token_uri=rig.server.url + "/token",
        client_id=rig.standin.client_id,
        client_secret=rig.standin.client_secret,
    )
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=10))
    return discovery.build_from_document(doc, http=http)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def batch_get(svc: Any, ids: list[str], **kwargs: Any) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    batch = svc.new_batch_http_request()
    for i in ids:
        batch.add(
            svc.users().messages().get(userId="me", id=i, **kwargs),
            request_id=i,
            callback=lambda rid, resp, exc: out.__setitem__(rid, (resp, exc)),
        )
    batch.execute()
    return out


def test_history_is_global_monotonic_and_expires_with_404(rig: GmailRig) -> None:
    svc = service(rig)
    start = int(svc.users().getProfile(userId="me").execute()["historyId"])
    first = rig.deliver(make_message(subject="one"))
    svc.users().messages().modify(userId="me", id=first, body={"removeLabelIds": ["UNREAD"]}).execute()
    answer = svc.users().history().list(userId="me", startHistoryId=str(start)).execute()
    ids = [int(h["id"]) for h in answer["history"]]
    assert ids == sorted(ids) and ids[0] > start and int(answer["historyId"]) == ids[-1]
    assert answer["history"][0]["messagesAdded"][0]["message"]["labelIds"] == ["INBOX", "UNREAD"]
    assert answer["history"][1]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    only_added = svc.users().history().list(userId="me", startHistoryId=str(start), historyTypes="messageAdded")
    assert [h.get("labelsRemoved") for h in only_added.execute()["history"]] == [None]
    rig.standin.mailbox(ADDRESS).expire_history()
    with pytest.raises(HttpError) as info:
        svc.users().history().list(userId="me", startHistoryId=str(start)).execute()
    assert info.value.status_code == 404
    current = svc.users().getProfile(userId="me").execute()["historyId"]
    assert "history" not in svc.users().history().list(userId="me", startHistoryId=current).execute()


def test_history_pages_and_label_filter(rig: GmailRig) -> None:
    svc = service(rig)
    start = svc.users().getProfile(userId="me").execute()["historyId"]
    for i in range(5):
        rig.deliver(make_message(subject=f"m{i}"))
    rig.standin.deliver(ADDRESS, make_message(subject="sent"), ["SENT"])
    request = svc.users().history().list(userId="me", startHistoryId=start, maxResults=2)
    pages = []
    while request is not None:
        page = request.execute()
        pages.append(len(page.get("history", [])))
        request = svc.users().history().list_next(request, page)
    assert pages == [2, 2, 2]
    sent_only = svc.users().history().list(userId="me", startHistoryId=start, labelId="SENT").execute()
    assert len(sent_only["history"]) == 1


def test_trash_hides_from_listings_unless_asked(rig: GmailRig) -> None:
    svc = service(rig)
    keep, gone = rig.deliver(make_message()), rig.deliver(make_message())
    trashed = svc.users().messages().trash(userId="me", id=gone).execute()
    assert "TRASH" in trashed["labelIds"] and "INBOX" not in trashed["labelIds"]
    listed = svc.users().messages().list(userId="me").execute()
    assert [m["id"] for m in listed["messages"]] == [keep]
    everything = svc.users().messages().list(userId="me", includeSpamTrash=True).execute()
    assert {m["id"] for m in everything["messages"]} == {keep, gone}
    in_trash = svc.users().messages().list(userId="me", labelIds=["TRASH"]).execute()
    assert [m["id"] for m in in_trash["messages"]] == [gone]


def test_listing_without_labels_is_all_mail_paged(rig: GmailRig) -> None:
    """messages.list without labelIds: archived mail included, SPAM and TRASH only when asked."""
    svc = service(rig)
    box = rig.standin.mailbox(ADDRESS)
    inbox, archived, spam, trashed = (rig.deliver(make_message()) for _ in range(4))
    sent = rig.deliver(make_message(), FolderRole.SENT)
    box.modify(archived, remove=["INBOX", "UNREAD"])  # no labels at all
    box.modify(spam, add=["SPAM"], remove=["INBOX"])
    box.trash(trashed)
    assert box.get(archived).labels == set()

    def listed(**params: object) -> list[str]:
        ids, request = [], svc.users().messages().list(userId="me", maxResults=2, **params)
        while request is not None:
            page = request.execute()
            ids += [m["id"] for m in page.get("messages", [])]
            request = svc.users().messages().list_next(request, page)
        return ids

    assert listed() == [sent, archived, inbox]  # newest first, in pages of two
    assert listed(includeSpamTrash=False) == [sent, archived, inbox]
    assert set(listed(includeSpamTrash=True)) == {inbox, archived, spam, trashed, sent}


def test_reply_joins_thread_only_with_matching_subject(rig: GmailRig) -> None:
    svc = service(rig)
    parent_mid = new_message_id()
    parent = rig.deliver(make_message(message_id=parent_mid, subject="Interview"))
    reply = make_message(subject="Re: Interview", in_reply_to=parent_mid, references=[parent_mid], to=ADDRESS)
    sent = svc.users().messages().send(userId="me", body={"raw": b64(reply), "threadId": parent}).execute()
    assert sent["threadId"] == parent
    other = make_message(subject="Something else", in_reply_to=parent_mid, references=[parent_mid])
    stray = svc.users().messages().insert(userId="me", body={"raw": b64(other), "labelIds": ["INBOX"]}).execute()
    assert stray["threadId"] == stray["id"] != parent
    thread = svc.users().threads().get(userId="me", id=parent, format="minimal").execute()
    assert [m["id"] for m in thread["messages"]] == [parent, sent["id"]]


def test_get_formats(rig: GmailRig) -> None:
    svc = service(rig)
    raw = make_message(subject="Formats", body="Dear Ann,\nthanks.\n", html="<p>Dear Ann</p>")
    mid = rig.deliver(raw)
    got = svc.users().messages().get(userId="me", id=mid, format="raw").execute()
    assert base64.urlsafe_b64decode(got["raw"]) == raw and got["sizeEstimate"] == len(raw)
    meta = svc.users().messages().get(userId="me", id=mid, format="metadata", metadataHeaders=["subject"]).execute()
    assert meta["payload"]["headers"] == [{"name": "Subject", "value": "Formats"}]
    full = svc.users().messages().get(userId="me", id=mid, format="full").execute()
    assert full["payload"]["mimeType"] == "multipart/alternative"
    assert [p["mimeType"] for p in full["payload"]["parts"]] == ["text/plain", "text/html"]
    assert full["snippet"] == "Dear Ann, thanks."
    assert int(full["internalDate"]) > 1_600_000_000_000


def test_batch_per_part_errors_and_limit(rig: GmailRig) -> None:
    svc = service(rig)
    ids = [rig.deliver(make_message()) for _ in range(3)]
    rig.standin.fail("users.messages.get", status=429, retry_after=3)
    answers = batch_get(svc, [*ids, "deadbeef00000000"], format="minimal")
    statuses = {i: (exc.status_code if exc else 200) for i, (_, exc) in answers.items()}
    assert statuses == {ids[0]: 429, ids[1]: 200, ids[2]: 200, "deadbeef00000000": 404}
    assert answers[ids[0]][1].resp["retry-after"] == "3"
    too_many = svc.new_batch_http_request()
    for _ in range(101):
        too_many.add(svc.users().getProfile(userId="me"))
    with pytest.raises(HttpError) as info:
        too_many.execute()
    assert info.value.status_code == 400


def test_bad_requests_are_refused_like_gmail(rig: GmailRig) -> None:
    svc = service(rig)
    with pytest.raises(HttpError) as info:
        svc.users().messages().insert(userId="me", body={"raw": b64(make_message()), "labelIds": ["Nope"]}).execute()
    assert (info.value.status_code, info.value.error_details[0]["reason"]) == (400, "invalidArgument")
    with pytest.raises(HttpError) as info:
        svc.users().messages().send(userId="me", body={"raw": b64(make_message()), "threadID": "x"}).execute()
    assert "unknown property" in str(info.value)


def test_access_tokens_checked_and_refreshed(rig: GmailRig) -> None:
    svc = service(rig)
    svc.users().getProfile(userId="me").execute()
    rig.standin.expire_access_tokens()
    svc.users().getProfile(userId="me").execute()  # 401, refresh, retry: invisible to the caller
    assert [c.status for c in rig.standin.calls if c.method == "token"] == [200, 200]
    assert [c.status for c in rig.standin.api_calls()] == [200, 401, 200]
    revoked = rig.standin.grant(ADDRESS)
    rig.standin.revoke(revoked)
    with pytest.raises(RefreshError, match="invalid_grant"):
        service(rig, revoked).users().getProfile(userId="me").execute()


def test_keeps_connections_alive(rig: GmailRig) -> None:
    svc = service(rig)
    for _ in range(5):
        svc.users().labels().list(userId="me").execute()
    assert len(rig.standin.calls) == 6  # a token refresh and five API calls ...
    assert rig.server.connections == 1  # ... over one TCP connection


def test_schema_violation_becomes_a_server_error(rig: GmailRig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in bug (here: historyId as a number) must fail loudly, never reach a client."""
    broken = {"emailAddress": ADDRESS, "historyId": 1234}
    monkeypatch.setitem(gmail_api.HANDLERS, "users.getProfile", lambda *args: broken)
    with pytest.raises(HttpError) as info:
        service(rig).users().getProfile(userId="me").execute()
    assert info.value.status_code == 500
    assert rig.standin.schema_violations == ["Profile.historyId: expected a string holding a uint64, got 1234"]
    rig.standin.schema_violations.clear()
