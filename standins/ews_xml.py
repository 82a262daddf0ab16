"""SOAP for the EWS stand-in: envelopes, items and folders rendered per requested property, faults.

Shapes follow what exchangelib 5.6 sends and parses (``shared/reference/ews-capture/``)
and the element order of Microsoft's EWS schema (types.xsd ``ItemType``/``MessageType``
sequences), which :mod:`standins.ews_schema` checks on every response. An item is
rendered with ``ItemId`` plus exactly the properties the request's shape named
(``FieldURI``/``ExtendedFieldURI``), so a test can see that a client which asked for
less got less; properties an item does not have are left out, as Exchange does.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import datetime

from lxml import etree

from standins.ews_store import MSGFLAG_READ, MSGFLAG_UNSENT, EwsMailbox, Folder, Item

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
NSMAP = {"m": M, "t": T}
Field = str | tuple[int, str]  # "item:Subject", or (property tag, property type) of an extended property


def t(tag: str) -> str:
    return f"{{{T}}}{tag}"


def m(tag: str) -> str:
    return f"{{{M}}}{tag}"


def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    child = etree.SubElement(parent, tag, {k: v for k, v in attrs.items()})
    if text is not None:
        child.text = text
    return child


def when(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def boolean(text: str | None) -> bool:
    """Request booleans come as ``0``/``1`` from exchangelib, ``true``/``false`` from others."""
    return (text or "").strip().lower() in ("1", "true")


# ------------------------------------------------------------ requests
def requested_fields(shape: etree._Element | None) -> list[Field]:
    """The FieldURIs and extended properties an ItemShape/FolderShape asks for, in request order."""
    if shape is None:
        return []
    out: list[Field] = []
    for el in shape.iter(t("FieldURI"), t("ExtendedFieldURI")):
        if el.tag == t("FieldURI"):
            out.append(str(el.get("FieldURI")))
        elif el.get("PropertyTag"):
            out.append((int(str(el.get("PropertyTag")), 0), str(el.get("PropertyType"))))
    return out


def folder_ref(el: etree._Element) -> str:
    """The id or distinguished name of a FolderId/DistinguishedFolderId element."""
    return str(el.get("Id"))


def folder_refs(parent: etree._Element | None) -> list[str]:
    if parent is None:
        return []
    return [folder_ref(el) for el in parent if el.tag in (t("FolderId"), t("DistinguishedFolderId"))]


def item_ids(parent: etree._Element | None) -> list[str]:
    return [] if parent is None else [str(el.get("Id")) for el in parent.iter(t("ItemId"))]


def extended_values(message: etree._Element) -> dict[tuple[int, str], str]:
    out = {}
    for prop in message.findall(t("ExtendedProperty")):
        uri, value = prop.find(t("ExtendedFieldURI")), prop.find(t("Value"))
        if uri is not None and value is not None and uri.get("PropertyTag"):
            out[(int(str(uri.get("PropertyTag")), 0), str(uri.get("PropertyType")))] = value.text or ""
    return out


# ------------------------------------------------------------ envelopes
def envelope(operation: str) -> tuple[etree._Element, etree._Element]:
    """(root, ResponseMessages) of a ``{operation}Response`` envelope."""
    root = etree.Element(f"{{{S}}}Envelope", nsmap={"s": S})
    header = sub(root, f"{{{S}}}Header")
    info = etree.SubElement(header, t("ServerVersionInfo"), nsmap={"h": T})
    for key, value in (("MajorVersion", "15"), ("MinorVersion", "1"), ("MajorBuildNumber", "2507")):
        info.set(key, value)
    info.set("MinorBuildNumber", "6")
    info.set("Version", "V2017_07_11")
    body = sub(root, f"{{{S}}}Body")
    response = etree.SubElement(body, m(f"{operation}Response"), nsmap=NSMAP)
    return root, sub(response, m("ResponseMessages"))


def success(messages: etree._Element, operation: str) -> etree._Element:
    msg = sub(messages, m(f"{operation}ResponseMessage"), ResponseClass="Success")
    sub(msg, m("ResponseCode"), "NoError")
    return msg


def error(messages: etree._Element, operation: str, code: str, text: str) -> etree._Element:
    msg = sub(messages, m(f"{operation}ResponseMessage"), ResponseClass="Error")
    sub(msg, m("MessageText"), text)
    sub(msg, m("ResponseCode"), code)
    sub(msg, m("DescriptiveLinkKey"), "0")
    return msg


def server_busy(back_off_ms: int) -> etree._Element:
    """The SOAP fault Exchange sends when a caller exceeds its throttling budget (HTTP 500)."""
    root = etree.Element(f"{{{S}}}Envelope", nsmap={"s": S})
    fault = sub(sub(root, f"{{{S}}}Body"), f"{{{S}}}Fault")
    code = etree.SubElement(fault, "faultcode", nsmap={"a": T})
    code.text = "a:ErrorServerBusy"
    text = "The server cannot service this request right now. Try again later."
    sub(fault, "faultstring", text)
    detail = sub(fault, "detail")
    etree.SubElement(detail, f"{{{E}}}ResponseCode", nsmap={"e": E}).text = "ErrorServerBusy"
    etree.SubElement(detail, f"{{{E}}}Message", nsmap={"e": E}).text = text
    xml = etree.SubElement(detail, t("MessageXml"), nsmap={"t": T})
    sub(xml, t("Value"), str(back_off_ms), Name="BackOffMilliseconds")
    return root


def serialize(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


# ------------------------------------------------------------ folders
def render_folder(parent: etree._Element, folder: Folder, box: EwsMailbox) -> etree._Element:
    el = sub(parent, t("Folder"))
    sub(el, t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)
    if folder.parent_id:
        parent_folder = box.folders[folder.parent_id]
        sub(el, t("ParentFolderId"), Id=parent_folder.id, ChangeKey=parent_folder.change_key)
    sub(el, t("FolderClass"), folder.folder_class)
    sub(el, t("DisplayName"), folder.display_name)
    items = box.in_folder(folder.id)
    sub(el, t("TotalCount"), str(len(items)))
    sub(el, t("ChildFolderCount"), str(sum(1 for f in box.folders.values() if f.parent_id == folder.id)))
    if folder.distinguished:
        sub(el, t("DistinguishedFolderId"), folder.distinguished)
    sub(el, t("UnreadCount"), str(sum(1 for i in items if not i.is_read)))
    return el


# ------------------------------------------------------------ items
def _mailbox(parent: etree._Element, name: str, address: str) -> None:
    box = sub(parent, t("Mailbox"))
    sub(box, t("Name"), name or address)
    sub(box, t("EmailAddress"), address)
    sub(box, t("RoutingType"), "SMTP")
    sub(box, t("MailboxType"), "OneOff")


def _single(tag: str, header: str) -> Callable[[etree._Element, Item], None]:
    def render(el: etree._Element, item: Item) -> None:
        found = item.addresses(header)
        if found:
            _mailbox(sub(el, t(tag)), *found[0])

    return render


def _many(tag: str, header: str) -> Callable[[etree._Element, Item], None]:
    def render(el: etree._Element, item: Item) -> None:
        found = item.addresses(header)
        if found:
            parent = sub(el, t(tag))
            for name, address in found:
                _mailbox(parent, name, address)

    return render


def _text(tag: str, value: Callable[[Item], str | None]) -> Callable[[etree._Element, Item], None]:
    def render(el: etree._Element, item: Item) -> None:
        text = value(item)
        if text is not None:
            sub(el, t(tag), text)

    return render


def _headers(el: etree._Element, item: Item) -> None:
    if item.delivered:  # items created in the mailbox (sent copies, drafts) carry no transport headers
        parent = sub(el, t("InternetMessageHeaders"))
        for name, value in item.headers():
            sub(parent, t("InternetMessageHeader"), value, HeaderName=name)


def _flags(item: Item) -> int:
    return (MSGFLAG_READ if item.is_read else 0) | (MSGFLAG_UNSENT if item.is_draft else 0)


def _extended(item: Item, tag: int, kind: str) -> str | None:
    if (tag, kind) in item.extended:
        return item.extended[(tag, kind)]
    computed = {0x0E07: _flags(item), 0x0E08: len(item.raw), 0x1090: item.flag_status}
    if tag == 0x1090 and not item.flag_status:
        return None
    return str(computed[tag]) if tag in computed and kind.startswith("Integer") else None


def _bool(value: bool) -> str:
    return "true" if value else "false"


# (FieldURI, renderer) in the order of the EWS schema's ItemType, then MessageType, sequences
ITEM_FIELDS: list[tuple[str, Callable[[etree._Element, Item], None]]] = [
    ("item:MimeContent", lambda el, i: None),  # rendered before ItemId, see render_item
    ("item:ParentFolderId", lambda el, i: None),  # needs the mailbox, see render_item
    ("item:ItemClass", _text("ItemClass", lambda i: "IPM.Note")),
    ("item:Subject", _text("Subject", lambda i: i.header("Subject"))),
    ("item:DateTimeReceived", _text("DateTimeReceived", lambda i: when(i.received))),
    ("item:Size", _text("Size", lambda i: str(len(i.raw)))),
    ("item:InReplyTo", _text("InReplyTo", lambda i: i.header("In-Reply-To"))),
    ("item:IsDraft", _text("IsDraft", lambda i: _bool(i.is_draft))),
    ("item:InternetMessageHeaders", _headers),
    ("item:DateTimeSent", _text("DateTimeSent", lambda i: when(i.sent))),
    ("item:DateTimeCreated", _text("DateTimeCreated", lambda i: when(i.received))),
    ("item:HasAttachments", _text("HasAttachments", lambda i: "false")),
    ("item:ExtendedProperty", lambda el, i: None),  # see render_item
    ("item:ConversationId", lambda el, i: None),  # see render_item
    ("message:Sender", _single("Sender", "Sender")),
    ("message:ToRecipients", _many("ToRecipients", "To")),
    ("message:CcRecipients", _many("CcRecipients", "Cc")),
    ("message:BccRecipients", _many("BccRecipients", "Bcc")),
    ("message:From", _single("From", "From")),
    ("message:InternetMessageId", _text("InternetMessageId", lambda i: i.header("Message-ID"))),
    ("message:IsRead", _text("IsRead", lambda i: _bool(i.is_read))),
    ("message:References", _text("References", lambda i: i.header("References"))),
    ("message:ReplyTo", _many("ReplyTo", "Reply-To")),
]


def render_item(parent: etree._Element, item: Item, fields: Sequence[Field], box: EwsMailbox) -> etree._Element:
    """``<t:Message>`` with ItemId and the requested properties, in schema order."""
    wanted = set(fields)
    el = sub(parent, t("Message"))
    if "item:MimeContent" in wanted:
        sub(el, t("MimeContent"), base64.b64encode(item.raw).decode("ascii"), CharacterSet="UTF-8")
    sub(el, t("ItemId"), Id=item.id, ChangeKey=item.change_key)
    for uri, render in ITEM_FIELDS:
        if uri == "item:ParentFolderId" and uri in wanted:
            folder = box.folders[item.folder_id]
            sub(el, t("ParentFolderId"), Id=folder.id, ChangeKey=folder.change_key)
        elif uri == "item:ExtendedProperty":
            for prop in fields:
                if isinstance(prop, tuple) and (value := _extended(item, *prop)) is not None:
                    ext = sub(el, t("ExtendedProperty"))
                    sub(ext, t("ExtendedFieldURI"), PropertyTag=hex(prop[0]), PropertyType=prop[1])
                    sub(ext, t("Value"), value)
        elif uri == "item:ConversationId" and uri in wanted:
            sub(el, t("ConversationId"), Id=item.conversation_id)
        elif uri in wanted:
            render(el, item)
    return el
