"""The Gmail API methods of the stand-in, one function each, over :mod:`standins.gmail_store`.

Each handler gets ``(standin, mailbox, path_args, query_params, body)`` (query
parameters already typed and checked against the discovery document, the body
already validated against the method's request schema) and returns the response
object, or None for an empty 204 answer.
"""

from __future__ import annotations

import binascii
import email.utils
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from standins.gmail_render import id_only, render_message, unb64url
from standins.gmail_store import (
    GmailError,
    HistoryRecord,
    Mailbox,
    StoredMessage,
    parse_headers,
    recipients,
    without_bcc,
)

if TYPE_CHECKING:
    from standins.gmail import GmailStandIn

Handler = Callable[["GmailStandIn", Mailbox, dict[str, str], dict[str, Any], Any], "dict[str, Any] | None"]
HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")


def _page(params: dict[str, Any], default: int, limit: int) -> tuple[int, int]:
    size = params.get("maxResults", default)
    if size < 1:
        raise GmailError(400, "maxResults must be positive", "invalidArgument")
    try:
        offset = int(params.get("pageToken") or 0)
    except ValueError:
        raise GmailError(400, "Invalid pageToken", "invalidArgument") from None
    return min(size, limit), offset


def _raw(body: dict[str, Any]) -> bytes:
    if not body.get("raw"):
        raise GmailError(
            400,
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
            "invalidArgument",
        )
    try:
        return unb64url(body["raw"])
    except (binascii.Error, ValueError):
        raise GmailError(400, "Invalid value for ByteString", "invalidArgument") from None


def get_profile(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    with box.lock:
        return {
            "emailAddress": box.email,
            "messagesTotal": len(box.messages),
            "threadsTotal": len(box.threads),
            "historyId": str(box.history_id),
        }


def list_labels(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    with box.lock:
        labels = [{"id": lb.id, "name": lb.name, "type": lb.type} for lb in box.labels.values()]
    for label in labels:
        if label["type"] == "user":
            label.update(messageListVisibility="show", labelListVisibility="labelShow")
    return {"labels": labels}


def create_label(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    """labels.create: a user label; a name taken by another label (case aside, system labels
    included) answers 409 "Label name exists or conflicts", as Gmail does."""
    name = str((body or {}).get("name") or "").strip()
    if not name:
        raise GmailError(400, "Invalid label name", "invalidArgument")
    label_id = box.add_label(name)
    out = {"id": label_id, "name": name, "type": "user"}
    out.update(messageListVisibility="show", labelListVisibility="labelShow")
    for key in ("messageListVisibility", "labelListVisibility"):
        if key in (body or {}):
            out[key] = body[key]
    return out


def _search(query: str) -> Callable[[StoredMessage], bool]:
    """A predicate for a Gmail search ``q``. The stand-in knows one operator,
    ``rfc822msgid:``: the message whose Message-ID header is that id, with or without its
    angle brackets (as Gmail's search box takes it); anything else is refused rather
    than answered wrongly."""
    terms = query.split()
    ids = [t[len("rfc822msgid:") :] for t in terms if t.lower().startswith("rfc822msgid:")]
    if len(ids) != len(terms) or len(ids) != 1 or not ids[0].strip("<>"):
        raise GmailError(400, f"The stand-in only implements q=rfc822msgid:<id>, not {query!r}.", "invalidArgument")
    wanted = ids[0].strip("<>")
    return lambda m: m.message_id.strip("<>") == wanted


def list_messages(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    matches = _search(params["q"]) if params.get("q") else None
    size, offset = _page(params, 100, 500)
    found = box.listing(params.get("labelIds", []), params.get("includeSpamTrash", False))
    if matches is not None:
        found = [m for m in found if matches(m)]
    page = found[offset : offset + size]
    out: dict[str, Any] = {"resultSizeEstimate": len(found)}
    if page:
        out["messages"] = [id_only(m) for m in page]
    if offset + size < len(found):
        out["nextPageToken"] = str(offset + size)
    return out


def get_message(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    with box.lock:
        msg = box.get(args["id"])
        return render_message(msg, params.get("format", "full"), params.get("metadataHeaders"))


def _with_message_id(raw: bytes) -> bytes:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if any(line.lower().startswith(b"message-id:") for line in head.splitlines()):
        return raw
    return f"Message-ID: <{uuid.uuid4().hex}@mail.gmail.com>\r\n".encode() + raw


def send_message(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    """Gmail keeps the sender's copy (SENT) and delivers to recipients it hosts."""
    raw = _with_message_id(_raw(body))
    targets = recipients(parse_headers(raw))
    if not targets:
        raise GmailError(400, "Invalid To header", "invalidArgument")
    to_self = ["INBOX", "UNREAD"] if box.email in targets else []
    sent = box.add(raw, ["SENT", *to_self], thread_id=body.get("threadId"))
    for address in targets:
        if address != box.email and address in s.mailboxes:
            s.mailbox(address).add(without_bcc(raw), ["INBOX", "UNREAD"])
    return id_only(sent, labels=True)


def insert_message(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    """insert and import: place a message directly, with the labels the body names."""
    raw = _raw(body)
    when = None
    if params.get("internalDateSource") == "dateHeader":
        parsed = email.utils.parsedate_to_datetime(_header(raw, "Date")) if _header(raw, "Date") else None
        when = int(parsed.timestamp() * 1000) if parsed is not None else None
    msg = box.add(raw, body.get("labelIds", []), thread_id=body.get("threadId"), internal_date_ms=when)
    return id_only(msg, labels=True)


def _header(raw: bytes, name: str) -> str:
    return next((v for k, v in parse_headers(raw) if k.lower() == name.lower()), "")


def trash_message(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    return id_only(box.trash(args["id"]), labels=True)


def untrash_message(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    return id_only(box.untrash(args["id"]), labels=True)


def delete_message(s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any) -> None:
    box.delete(args["id"])
    return None


def modify_message(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    msg = box.modify(args["id"], body.get("addLabelIds", []), body.get("removeLabelIds", []))
    return id_only(msg, labels=True)


def get_thread(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    with box.lock:
        ids = box.threads.get(args["id"])
        if not ids:
            raise GmailError(404, "Requested entity was not found.", "notFound")
        members = [box.messages[i] for i in ids]
        fmt, headers = params.get("format", "full"), params.get("metadataHeaders")
        return {
            "id": args["id"],
            "historyId": str(max(m.history_id for m in members)),
            "messages": [render_message(m, fmt, headers) for m in members],
        }


def _history_json(rec: HistoryRecord, types: set[str]) -> dict[str, Any]:
    message: dict[str, Any] = {"id": rec.message_id, "threadId": rec.thread_id}
    if rec.labels_after:
        message["labelIds"] = list(rec.labels_after)
    out: dict[str, Any] = {"id": str(rec.id), "messages": [{"id": rec.message_id, "threadId": rec.thread_id}]}
    if rec.added and "messageAdded" in types:
        out["messagesAdded"] = [{"message": message}]
    if rec.deleted and "messageDeleted" in types:
        out["messagesDeleted"] = [{"message": message}]
    if rec.labels_added and "labelAdded" in types:
        out["labelsAdded"] = [{"message": message, "labelIds": list(rec.labels_added)}]
    if rec.labels_removed and "labelRemoved" in types:
        out["labelsRemoved"] = [{"message": message, "labelIds": list(rec.labels_removed)}]
    return out


def list_history(
    s: GmailStandIn, box: Mailbox, args: dict[str, str], params: dict[str, Any], body: Any
) -> dict[str, Any]:
    """Records after startHistoryId (404 when it is older than the retained history),
    filtered by labelId and historyTypes, paged by the last record id returned."""
    if "startHistoryId" not in params:  # "Required." says its description, not its schema
        raise GmailError(400, "Required parameter: startHistoryId", "required")
    size = min(params.get("maxResults", 100), 500)
    types = set(params.get("historyTypes") or HISTORY_TYPES)
    label = params.get("labelId")
    with box.lock:
        records = box.history_since(int(params["startHistoryId"]))
        current = box.history_id
    after = int(params.get("pageToken") or 0)
    matching = [r for r in records if r.id > after and r.kinds & types and (label is None or r.touches(label))]
    out: dict[str, Any] = {"historyId": str(current)}
    if matching[:size]:
        out["history"] = [_history_json(r, types) for r in matching[:size]]
    if len(matching) > size:
        out["nextPageToken"] = str(matching[size - 1].id)
    return out


HANDLERS: dict[str, Handler] = {
    "users.getProfile": get_profile,
    "users.labels.list": list_labels,
    "users.labels.create": create_label,
    "users.messages.list": list_messages,
    "users.messages.get": get_message,
    "users.messages.send": send_message,
    "users.messages.insert": insert_message,
    "users.messages.import": insert_message,
    "users.messages.trash": trash_message,
    "users.messages.untrash": untrash_message,
    "users.messages.delete": delete_message,
    "users.messages.modify": modify_message,
    "users.threads.get": get_thread,
    "users.history.list": list_history,
}
