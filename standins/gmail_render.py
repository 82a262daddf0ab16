"""Gmail's Message resource as the stand-in renders it, for each ``format``.

* ``minimal``: id, threadId, labelIds, snippet, sizeEstimate, historyId, internalDate;
* ``metadata``: plus ``payload.headers`` (only ``metadataHeaders`` when given);
* ``raw``: plus ``raw``, the exact RFC 822 bytes in base64url;
* ``full``: plus the parsed MIME tree in ``payload`` (bodies inline as base64url).
"""

from __future__ import annotations

import base64
import email
import email.policy
import html
from email.message import Message
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from standins.gmail_store import StoredMessage

SNIPPET_LENGTH = 200


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def snippet_of(raw: bytes) -> str:
    """The first words of the first text/plain part, whitespace collapsed, HTML-escaped."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            if part.get_content_type() == "text/plain" and not part.is_multipart():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    charset = part.get_content_charset() or "utf-8"
                    text = payload.decode(charset, "replace")
                    return html.escape(" ".join(text.split())[:SNIPPET_LENGTH], quote=True)
    except (LookupError, ValueError):
        pass
    return ""


def _part(msg: Message, part_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "partId": part_id,
        "mimeType": msg.get_content_type(),
        "filename": msg.get_filename() or "",
        "headers": [{"name": k, "value": str(v)} for k, v in msg.items()],
    }
    if msg.is_multipart():
        children = msg.get_payload()
        assert isinstance(children, list)
        out["body"] = {"size": 0}
        prefix = "" if part_id == "" else part_id + "."
        out["parts"] = [_part(child, f"{prefix}{i}") for i, child in enumerate(children)]
    else:
        data = msg.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        out["body"] = {"size": len(data), "data": b64url(data)} if data else {"size": 0}
    return out


def render_message(msg: StoredMessage, fmt: str = "full", metadata_headers: list[str] | None = None) -> dict[str, Any]:
    """The Message resource for ``msg`` in ``fmt``."""
    out: dict[str, Any] = {"id": msg.id, "threadId": msg.thread_id}
    if msg.labels:
        out["labelIds"] = sorted(msg.labels)
    out["snippet"] = msg.snippet
    out["sizeEstimate"] = len(msg.raw)
    out["historyId"] = str(msg.history_id)
    out["internalDate"] = str(msg.internal_date_ms)
    if fmt == "raw":
        out["raw"] = b64url(msg.raw)
    elif fmt == "metadata":
        wanted = {h.lower() for h in metadata_headers or ()}
        headers = [{"name": k, "value": v} for k, v in msg.headers if not wanted or k.lower() in wanted]
        out["payload"] = {"mimeType": msg.mime_type, "headers": headers}
    elif fmt == "full":
        out["payload"] = _part(email.message_from_bytes(msg.raw, policy=email.policy.compat32), "")
    return out


def id_only(msg: StoredMessage, *, labels: bool = False) -> dict[str, Any]:
    """``{id, threadId}`` as listings and history records show a message."""
    out: dict[str, Any] = {"id": msg.id, "threadId": msg.thread_id}
    if labels and msg.labels:
        out["labelIds"] = sorted(msg.labels)
    return out
