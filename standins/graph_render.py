"""Graph JSON for the stand-in's items and folders, and MIME built from Graph's JSON message shape.

:func:`message_json` renders an :class:`~standins.graph_store.Item` the way Graph does:
every property by default, only the ``$select``-ed ones (plus ``id``) otherwise;
``internetMessageHeaders`` only when selected (and only for delivered mail), and
``singleValueExtendedProperties`` only through ``$expand`` with an ``id eq '...'``
filter. :func:`mime_from_json` turns the ``message`` of sendMail or of a JSON
create into RFC 5322 bytes, honouring ``internetMessageId`` and the MAPI
properties for In-Reply-To and References. Error answers (:func:`error_answer`) are
worded as Graph words them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from standins.faults import Fault
from standins.graph_schema import check
from standins.graph_store import (
    PROP_IN_REPLY_TO,
    PROP_MESSAGE_FLAGS,
    PROP_MESSAGE_SIZE,
    PROP_REFERENCES,
    Folder,
    GraphError,
    GraphMailbox,
    Item,
    addresses,
    graph_time,
    header_date,
)

MESSAGE_PROPERTIES = (
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
)
DEFAULT_HIDDEN = {"internetMessageHeaders"}  # returned only when $select names it
_EXPAND = re.compile(r"^singleValueExtendedProperties\(\$filter=(.+)\)$", re.IGNORECASE)
_ID_EQ = re.compile(r"id\s+eq\s+'([^']+)'", re.IGNORECASE)


def property_id(text: str) -> tuple[str, int]:
    """``"Integer 0x0E08"`` -> ``("integer", 0xE08)``; a bad id is a 400."""
    kind, _, tag = text.strip().partition(" ")
    try:
        return kind.lower(), int(tag, 16)
    except ValueError:
        raise GraphError(400, "ErrorInvalidProperty", f"The extended property id {text!r} is not valid.") from None


def parse_select(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n != "id" and n not in MESSAGE_PROPERTIES]
    if unknown:
        raise GraphError(
            400,
            "RequestBroker--ParseUri",
            f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.message'.",
        )
    return names


def parse_expand(value: str | None) -> list[str] | None:
    """The extended property ids an ``$expand=singleValueExtendedProperties($filter=...)`` asks for."""
    if value is None:
        return None
    match = _EXPAND.match(value.strip())
    if match is None:
        raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: {value!r} is not supported.")
    ids = _ID_EQ.findall(match.group(1))
    if not ids:
        raise GraphError(400, "BadRequest", "The $filter of singleValueExtendedProperties must compare id.")
    return ids


def _recipient(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name or address, "address": address}}


def _text_body(msg: Message) -> tuple[str, str]:
    """(contentType, content): the HTML part if there is one, else the text part."""
    text = html = None
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        decoded = payload.decode(part.get_content_charset() or "utf-8", "replace")
        if part.get_content_type() == "text/html" and html is None:
            html = decoded
        elif part.get_content_type() == "text/plain" and text is None:
            text = decoded
    return ("html", html) if html is not None else ("text", text or "")


def _flags(item: Item) -> int:
    return (0x1 if item.is_read else 0) | (0x8 if item.is_draft else 0)


def extended_properties(item: Item, wanted: Sequence[str]) -> list[dict[str, str]]:
    """The MAPI properties of ``item`` that ``wanted`` names and it has (ids in Graph's spelling)."""
    headers = item.headers()
    values: dict[tuple[str, int], str] = {
        ("integer", 0x0E08): str(len(item.raw)),
        ("integer", 0x0E07): str(_flags(item)),
    }
    for prop, name in ((PROP_IN_REPLY_TO, "In-Reply-To"), (PROP_REFERENCES, "References")):
        if headers.get(name):
            values[property_id(prop)] = " ".join(str(headers[name]).split())
    out = []
    for wanted_id in wanted:
        key = property_id(wanted_id)
        if key in values:
            out.append({"id": f"{key[0].title()} 0x{key[1]:x}", "value": values[key]})
    return out


def message_json(
    mailbox: GraphMailbox, item: Item, select: Sequence[str] | None = None, expand: Sequence[str] | None = None
) -> dict[str, Any]:
    """Graph's JSON for one message."""
    msg = item.headers()
    wanted = set(MESSAGE_PROPERTIES) - DEFAULT_HIDDEN if select is None else set(select)
    full: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in wanted and value is not None:
            full[name] = value

    sent = header_date(msg)
    senders = addresses(msg, "From")
    put("createdDateTime", graph_time(item.created))
    put("lastModifiedDateTime", graph_time(item.created))
    put("changeKey", f"CQAAABYAAA{item.change:08d}")
    put("categories", [])
    put("receivedDateTime", graph_time(item.received))
    put("sentDateTime", graph_time(sent) if sent else None)
    put("internetMessageId", str(msg.get("Message-ID", "")).strip() or None)
    put("subject", _decoded(msg.get("Subject", "")))
    put("importance", "normal")
    put("parentFolderId", item.folder_id)
    put("conversationId", item.conversation_id)
    put("isDeliveryReceiptRequested", False)
    put("isReadReceiptRequested", False)
    put("isRead", item.is_read)
    put("isDraft", item.is_draft)
    put("webLink", f"https://outlook.office365.com/owa/?ItemID={item.id}&exvsurl=1&viewmodel=ReadMessageItem")
    put("inferenceClassification", "focused")
    if senders:
        put("sender", _recipient(*senders[0]))
        put("from", _recipient(*senders[0]))
    for prop, header in (
        ("toRecipients", "To"),
        ("ccRecipients", "Cc"),
        ("bccRecipients", "Bcc"),
        ("replyTo", "Reply-To"),
    ):
        put(prop, [_recipient(n, a) for n, a in addresses(msg, header)])
    put("flag", {"flagStatus": item.flag})
    if wanted & {"body", "bodyPreview", "hasAttachments"}:
        from email import message_from_bytes
        from email.policy import compat32

        whole = message_from_bytes(item.raw, policy=compat32)
        content_type, content = _text_body(whole)
        put("body", {"contentType": content_type, "content": content})
        put("bodyPreview", " ".join(re.sub(r"<[^>]+>", " ", content).split())[:255])
        put("hasAttachments", any(p.get_content_disposition() == "attachment" for p in whole.walk()))
    if "internetMessageHeaders" in wanted and item.delivered:
        full["internetMessageHeaders"] = [{"name": k, "value": " ".join(str(v).split())} for k, v in msg.items()]
    out: dict[str, Any] = {"@odata.etag": f'W/"CQAAABYAAA{item.change:08d}"', "id": item.id, **full}
    if expand is not None:
        out["singleValueExtendedProperties"] = extended_properties(item, expand)
    return out


def _decoded(value: Any) -> str:
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, ValueError):
        return str(value)


def folder_json(mailbox: GraphMailbox, folder: Folder) -> dict[str, Any]:
    items = mailbox.in_folder(folder.id)
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": len(mailbox.children(folder.id)),
        "unreadItemCount": sum(not i.is_read for i in items),
        "totalItemCount": len(items),
        "isHidden": False,
    }


# ---------------------------------------------------------------- JSON -> MIME


def _addresses(entries: Any, field: str) -> list[str]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise GraphError(400, "ErrorInvalidRecipients", f"{field} must be a collection of recipients.")
    out = []
    for entry in entries:
        email = entry.get("emailAddress", {}) if isinstance(entry, dict) else {}
        address = email.get("address")
        if not isinstance(address, str) or "@" not in address:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")
        out.append(formataddr((email.get("name") or "", address)))
    return out


def mime_from_json(mailbox: GraphMailbox, message: Mapping[str, Any]) -> tuple[bytes, int | None]:
    """RFC 5322 bytes for a Graph JSON message, and its PidTagMessageFlags if it set them."""
    msg = EmailMessage(policy=SMTP)
    sender = message.get("from") or {"emailAddress": {"address": mailbox.address, "name": mailbox.display_name}}
    msg["From"] = _addresses([sender], "from")[0]
    for field, header in (
        ("toRecipients", "To"),
        ("ccRecipients", "Cc"),
        ("bccRecipients", "Bcc"),
        ("replyTo", "Reply-To"),
    ):
        values = _addresses(message.get(field), field)
        if values:
            msg[header] = ", ".join(values)
    msg["Subject"] = str(message.get("subject") or "")
    props = {property_id(p["id"]): str(p["value"]) for p in message.get("singleValueExtendedProperties") or []}
    sent = props.get(("systemtime", 0x0039))
    when = datetime.fromisoformat(sent.replace("Z", "+00:00")) if sent else datetime.now(UTC)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = str(message.get("internetMessageId") or make_msgid(domain="standin.prod.outlook.com"))
    if ("string", 0x1042) in props:
        msg["In-Reply-To"] = props[("string", 0x1042)]
    if ("string", 0x1039) in props:
        msg["References"] = props[("string", 0x1039)]
    for header in message.get("internetMessageHeaders") or []:
        if not str(header.get("name", "")).lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{header.get('name')}' should start with 'x-' or 'X-'.",
            )
        msg[header["name"]] = header["value"]
    msg["MIME-Version"] = "1.0"
    body = message.get("body") or {}
    subtype = "html" if str(body.get("contentType", "text")).lower() == "html" else "plain"
    msg.set_content(str(body.get("content") or ""), subtype=subtype)
    for attachment in message.get("attachments") or []:
        if attachment.get("@odata.type") != "#microsoft.graph.fileAttachment":
            raise GraphError(400, "ErrorInvalidAttachment", "Only file attachments are supported by the stand-in.")
        maintype, _, subtype_ = str(attachment.get("contentType") or "application/octet-stream").partition("/")
        data = base64.b64decode(str(attachment.get("contentBytes", "")))
        msg.add_attachment(data, maintype=maintype, subtype=subtype_ or "octet-stream", filename=attachment.get("name"))
    flags = props.get(property_id(PROP_MESSAGE_FLAGS))
    return msg.as_bytes(policy=SMTP), int(flags) if flags is not None else None


def json_body(body: bytes) -> dict[str, Any]:
    """A request's JSON object; anything else is a 400."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(value, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return value


def mime_body(body: bytes) -> bytes:
    """The MIME of a text/plain body holding base64, as sendMail and create take it."""
    try:
        raw = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise GraphError(
            400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
        ) from None
    if b":" not in raw.split(b"\n", 1)[0]:
        raise GraphError(400, "ErrorMimeContentInvalid", "The MIME content is not a valid message.")
    return raw


def without_bcc(raw: bytes) -> bytes:
    """The message as its recipients get it: no Bcc header."""
    head, sep, rest = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines, skipping = [], False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                lines.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            lines.append(line)
    return (b"\n".join(lines) + sep + rest).replace(b"\n", b"\r\n")


__all__ = [
    "PROP_MESSAGE_SIZE",
    "extended_properties",
    "folder_json",
    "json_body",
    "message_json",
    "mime_body",
    "mime_from_json",
    "without_bcc",
]


# ---------------------------------------------------------------------------- error answers
Answer = tuple[int, dict[str, str], bytes]
_UNREADABLE = {  # what Graph answers for an item it cannot read
    500: ("ErrorInternalServerError", "An internal server error occurred. The operation failed."),
    400: ("ErrorCorruptData", "The item is corrupt and cannot be read."),
}


def error_answer(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    """Graph's error answer: ``{"error": {"code", "message", "innerError": {...}}}`` with a request id."""
    rid = str(uuid.uuid4())
    inner = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": rid, "client-request-id": rid}
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    assert check(body, "error") == []
    out = {"Content-Type": "application/json; charset=utf-8", "request-id": rid, **(headers or {})}
    return status, out, json.dumps(body).encode()


def unauthorized_answer(reason: str) -> Answer:
    challenge = (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return error_answer(401, "InvalidAuthenticationToken", reason, {"WWW-Authenticate": challenge})


def fault_answer(fault: Fault) -> Answer:
    """The answer for an injected fault (:mod:`standins.faults`), worded as Graph words it."""
    extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
    code, text = {
        429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
        503: ("ServiceUnavailable", "Service is temporarily unavailable. Please try again later."),
        504: ("GatewayTimeout", "The gateway timed out."),
    }.get(fault.status, ("InternalServerError", "An internal server error occurred."))
    return error_answer(fault.status, code, text, extra)


def unreadable_answer(status: int) -> Answer:
    """The answer for a message that cannot be read (``GraphStandIn.break_message``)."""
    return error_answer(status, *_UNREADABLE.get(status, _UNREADABLE[500]))
