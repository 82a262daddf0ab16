"""The EWS stand-in's own behaviour: captured shapes, schema order, SOAP faults, keep-alive, sync states."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from lxml import etree

from standins import ews_xml as x
from standins.ews_schema import check
from tests.rig.messages import make_message
from tests.standins.ews_rig import ADDRESS, PASSWORD, EwsRig, ews_rig

# what exchangelib 5.6 really sent and parsed (copied from shared/reference/ews-capture)
CAPTURE = Path(__file__).resolve().parents[1] / "data" / "ews-capture"
needs_capture = pytest.mark.skipif(not CAPTURE.is_dir(), reason="tests/data/ews-capture is missing")


@pytest.fixture
def rig() -> Iterator[EwsRig]:
    with ews_rig() as rig:
        yield rig


def post(rig: EwsRig, body: bytes, auth: tuple[str, str] | None = (ADDRESS, PASSWORD)) -> requests.Response:
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    return requests.post(rig.endpoint, data=body, headers=headers, auth=auth, timeout=10)


def soap(operation: str, inner: str, attrs: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{x.S}" xmlns:m="{x.M}" xmlns:t="{x.T}"><s:Body>'
        f"<m:{operation}{attrs}>{inner}</m:{operation}></s:Body></s:Envelope>"
    ).encode()


def sync_items(rig: EwsRig, state: str | None, limit: int) -> etree._Element:
    inner = "<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
    inner += '<m:SyncFolderId><t:DistinguishedFolderId Id="inbox"/></m:SyncFolderId>'
    inner += (
        f"<m:SyncState>{state}</m:SyncState>" if state else ""
    ) + f"<m:MaxChangesReturned>{limit}</m:MaxChangesReturned>"
    answer = post(rig, soap("SyncFolderItems", inner))
    assert answer.status_code == 200
    return etree.fromstring(answer.content).find(f".//{x.m('SyncFolderItemsResponseMessage')}")


@needs_capture
def test_the_schema_check_accepts_the_captured_responses_but_their_property_order() -> None:
    """The research fake that produced the captures ordered a message's properties freely (exchangelib
    does not mind); the EWS schema's ItemType/MessageType sequences fix the order, as the check does."""
    unordered = 0
    for path in sorted(CAPTURE.glob("*.response.xml")):
        problems = check(etree.parse(str(path)).getroot())
        assert all(p.endswith(")") and "out of sequence in t:Message" in p for p in problems), (path.name, problems)
        unordered += bool(problems)
    assert unordered  # the check does look at the order


@needs_capture
@pytest.mark.parametrize(
    "name",
    ["01_GetFolder", "02_GetFolder", "08_GetItem", "11_SyncFolderItems", "15_SyncFolderHierarchy", "20_CreateItem"],
)
def test_captured_requests_get_answers_of_the_captured_shape(name: str) -> None:
    with ews_rig() as rig:
        rig.ews.add_user("alice@example.com", password="pw")
        box = rig.ews.mailbox("alice@example.com")
        item = box.add(make_message(subject="Lunch?"))
        request = (CAPTURE / f"{name}.xml").read_bytes()
        request = re.sub(rb'ItemId Id="[^"]*" ChangeKey="[^"]*"', f'ItemId Id="{item.id}"'.encode(), request)
        answer = post(rig, request, ("alice@example.com", "pw"))
        assert answer.status_code == 200 and "connection" not in {k.lower() for k in answer.headers}
        ours = etree.fromstring(answer.content)
        captured = etree.parse(str(CAPTURE / f"{name}.response.xml")).getroot()

        def shape(root: etree._Element) -> list[str]:
            message = root.find(f"{{{x.S}}}Body")[0][0][0]
            return [message.get("ResponseClass"), *[etree.QName(c).localname for c in message]]

        assert shape(ours) == shape(captured)
        assert check(ours) == []


def test_only_requested_properties_and_mime_in_base64(rig: EwsRig) -> None:
    raw = make_message(subject="Interview")
    item = rig.ews.mailbox(ADDRESS).add(raw)
    shape = "<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>"
    shape += '<t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties></m:ItemShape>'
    ids = f'<m:ItemIds><t:ItemId Id="{item.id}"/><t:ItemId Id="AAMkAgone"/></m:ItemIds>'
    root = etree.fromstring(post(rig, soap("GetItem", shape + ids)).content)
    found, missing = root.iter(x.m("GetItemResponseMessage"))
    message = found.find(f"{x.m('Items')}/{x.t('Message')}")
    assert [etree.QName(c).localname for c in message] == ["ItemId", "Subject"]
    assert missing.get("ResponseClass") == "Error" and missing.findtext(x.m("ResponseCode")) == "ErrorItemNotFound"
    root = etree.fromstring(post(rig, soap("GetItem", shape.replace("item:Subject", "item:MimeContent") + ids)).content)
    assert base64.b64decode(root.findtext(f".//{x.t('MimeContent')}")) == raw


def test_sync_state_pages_and_expires(rig: EwsRig) -> None:
    box = rig.ews.mailbox(ADDRESS)
    for _ in range(3):
        box.add(make_message())
    first = sync_items(rig, None, 2)
    assert first.findtext(x.m("IncludesLastItemInRange")) == "false" and len(first.find(x.m("Changes"))) == 2
    second = sync_items(rig, first.findtext(x.m("SyncState")), 2)
    assert second.findtext(x.m("IncludesLastItemInRange")) == "true" and len(second.find(x.m("Changes"))) == 1
    box.expire_sync_states()
    refused = sync_items(rig, second.findtext(x.m("SyncState")), 2)
    assert refused.get("ResponseClass") == "Error"
    assert refused.findtext(x.m("ResponseCode")) == "ErrorInvalidSyncStateData"
    assert sync_items(rig, "bm90IGEgc3RhdGU=", 2).findtext(x.m("ResponseCode")) == "ErrorInvalidSyncStateData"


def test_items_saved_from_mime_are_drafts_unless_message_flags_say_sent(rig: EwsRig) -> None:
    mime = base64.b64encode(make_message()).decode()
    flags = '<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0xe07" PropertyType="Integer"/>'
    flags += "<t:Value>1</t:Value></t:ExtendedProperty>"
    folder = '<m:SavedItemFolderId><t:DistinguishedFolderId Id="sentitems"/></m:SavedItemFolderId>'
    for extra in ("", flags):
        items = f"<m:Items><t:Message><t:MimeContent>{mime}</t:MimeContent>{extra}</t:Message></m:Items>"
        assert post(rig, soap("CreateItem", folder + items, ' MessageDisposition="SaveOnly"')).status_code == 200
    plain, sent = rig.ews.mailbox(ADDRESS).in_folder("sentitems")
    assert plain.is_draft and not plain.is_read
    assert not sent.is_draft and sent.is_read


def test_server_busy_fault_and_401_keep_the_connection(rig: EwsRig) -> None:
    rig.ews.busy(back_off_ms=1500)
    with requests.Session() as session:
        folder = '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds>'
        body = soap("GetFolder", "<m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>" + folder)
        busy = session.post(rig.endpoint, data=body, auth=(ADDRESS, PASSWORD), timeout=10)
        denied = session.post(rig.endpoint, data=body, auth=(ADDRESS, "wrong"), timeout=10)
        fine = session.post(rig.endpoint, data=body, auth=(ADDRESS, PASSWORD), timeout=10)
    assert busy.status_code == 500
    fault = etree.fromstring(busy.content).find(f".//{{{x.S}}}Fault")
    assert fault.findtext("faultcode") == "a:ErrorServerBusy"
    assert fault.find(f"detail/{x.t('MessageXml')}/{x.t('Value')}").text == "1500"
    assert denied.status_code == 401
    challenges = denied.headers["WWW-Authenticate"]  # requests joins the two challenges with ", "
    assert "Basic" in challenges and "Bearer" in challenges
    assert "NTLM" not in challenges  # not offered: there is no server-side NTLM here
    assert fine.status_code == 200
    assert all("connection" not in {k.lower() for k in r.headers} for r in (busy, denied, fine))
    assert rig.server.connections == 1  # exchangelib would read Connection: close as throttling
