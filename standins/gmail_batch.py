"""The Google batch wire format (``POST /batch``), as google-api-python-client speaks it.

A request is ``multipart/mixed``; each part is ``Content-Type: application/http``
with a ``Content-ID`` such as ``<8f1c... + 1>``, then an HTTP request: request
line, headers, blank line, body. The client writes LF line endings, not CRLF.

The answer is ``multipart/mixed`` too; each part carries
``Content-ID: <response-8f1c... + 1>`` and an HTTP response whose headers end in
``\\r\\n\\r\\n`` exactly (the client splits the inner body on that).
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

MAX_PARTS = 100  # Gmail refuses larger batches


class BatchFormatError(ValueError):
    """The batch body is not a multipart of application/http requests."""


@dataclass(frozen=True)
class BatchPart:
    content_id: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def parse_batch(content_type: str, body: bytes) -> list[BatchPart]:
    """The inner requests of a batch body, in order."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise BatchFormatError(f"expected multipart/mixed, got {content_type!r}")
    text = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    outer = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(text)
    if not outer.is_multipart():
        raise BatchFormatError("the batch body has no parts")
    parts = []
    for part in outer.get_payload():
        if not isinstance(part, email.message.Message):
            raise BatchFormatError("a batch part is not a MIME part")
        payload = part.get_payload(decode=False)
        if not isinstance(payload, str):
            raise BatchFormatError("a batch part is not an application/http request")
        parts.append(_parse_part(part.get("Content-ID", ""), payload))
    return parts


def _parse_part(content_id: str, payload: str) -> BatchPart:
    request_line, _, rest = payload.replace("\r\n", "\n").partition("\n")
    try:
        method, target, _version = request_line.split(" ", 2)
    except ValueError:
        raise BatchFormatError(f"bad request line {request_line!r}") from None
    head, _, body = rest.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    split = urlsplit(target)
    return BatchPart(content_id.strip(), method.upper(), split.path, split.query, headers, body.encode("utf-8"))


def format_batch(responses: list[tuple[str, int, dict[str, str], bytes]]) -> tuple[str, bytes]:
    """``(content_type, body)`` for ``[(content_id, status, headers, body), ...]``."""
    boundary = f"batch_{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for content_id, status, headers, body in responses:
        inner = content_id.strip("<>")
        reason = HTTPStatus(status).phrase
        fields = {**headers, "Content-Length": str(len(body))}  # never an empty header block
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in fields.items())]
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{inner}>\r\n\r\n".encode()
            + "\r\n".join(lines).encode()
            + b"\r\n\r\n"
            + body
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/mixed; boundary={boundary}", b"".join(chunks)
