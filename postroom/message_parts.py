"""A stored message taken apart for reading: its text, its HTML, its attachments, a preview.
Pure functions over bytes, no I/O.

What is the body and what is an attachment follows :func:`postroom.mime.parse_message`: the
first inline ``text/plain`` part is the text, the first inline ``text/html`` part the HTML
(a message with only HTML gets text derived from it), a top-level ``message/rfc822`` wrapper is
looked through, and every other part — named files, inline images, attached messages — is an
attachment, numbered from 0 in the order the message holds them. :func:`read_parts` and
:func:`attachment_data` walk the message the same way, so attachment ``n`` of the listing is
the ``n`` that downloads.

The stdlib parser runs under ``policy.compat32``, as :mod:`postroom.mime` does: about three
times faster than ``policy.default``, and it never raises on the hostile header values anyone
can send (``policy.default`` parses parameters lazily and some malformed ones raise from deep
inside it). Text is decoded with :func:`postroom.charsets.decode_bytes`, which reads any label
and falls back rather than failing.

Work is bounded, since anyone can email a recruiter: at most :data:`MAX_TEXT_BYTES` of a text
part are decoded, at most :data:`MAX_ATTACHMENTS` attachments are listed, nesting stops at
:data:`MAX_DEPTH`; :func:`preview` reads only the first :data:`SNIPPET_SCAN` bytes.

>>> raw = (b"From: a@example.org\\r\\nSubject: Hi\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n\\r\\n"
...        b"> quoted\\r\\nThanks  for the\\r\\ninterview!\\r\\n")
>>> preview(raw)
Preview(snippet='Thanks for the interview!', attachments=0)
>>> download_type("text/html"), download_type("application/PDF")
('application/octet-stream', 'application/pdf')
>>> safe_filename("../../etc/passwd\\x00.pdf", 2, "application/pdf")
'passwd_.pdf'
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser

from postroom.charsets import decode_bytes, decode_encoded_words
from postroom.mime import MalformedMessage, check_message, header_str, html_to_text

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_DEPTH",
    "MAX_TEXT_BYTES",
    "SAFE_DOWNLOAD_TYPES",
    "SNIPPET_LEN",
    "SNIPPET_SCAN",
    "AttachmentInfo",
    "MalformedMessage",
    "MessageParts",
    "Preview",
    "attachment_data",
    "download_type",
    "preview",
    "read_parts",
    "safe_filename",
    "snippet_of",
]

MAX_TEXT_BYTES = 4 * 1024 * 1024  # of one text or HTML part decoded for display; the rest is cut off
MAX_ATTACHMENTS = 500  # attachments listed; a message with more is a bomb, not a CV
MAX_DEPTH = 50  # MIME nesting followed
SNIPPET_SCAN = 256 * 1024  # bytes of a message read for its snippet
SNIPPET_LEN = 160  # characters of a snippet

# served with their own type (as a download: Content-Disposition: attachment); anything else
# is application/octet-stream. No HTML, SVG, XML or script type: a browser could run them.
SAFE_DOWNLOAD_TYPES = frozenset({
    "application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff",
    "text/plain", "text/csv", "text/calendar", "application/rtf", "application/zip",
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
})  # fmt: skip

_PARSER = BytesParser(policy=policy.compat32)


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """One attachment: its number in the message, its name as sent (None if unnamed), its
    declared type and its decoded size in bytes."""

    index: int
    filename: str | None
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class MessageParts:
    """``text``: the plain-text body (derived from the HTML when there is none); ``html``:
    the HTML body as sent (unsanitised!) or None; ``truncated``: a body part was cut off at
    :data:`MAX_TEXT_BYTES`."""

    text: str
    html: str | None
    has_plain: bool
    attachments: tuple[AttachmentInfo, ...]
    truncated: bool


class _Walk:
    """One pass over a message's parts, choosing the bodies and numbering the attachments."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[tuple[str | None, str, Message]] = []
        self.truncated = False

    def run(self, raw: bytes) -> _Walk:
        check_message(raw)
        try:
            root = _PARSER.parsebytes(raw)
        except Exception as exc:  # compat32 is very lenient; guard anyway
            raise MalformedMessage(f"unparseable MIME structure: {exc}") from exc
        self._walk(root, 0)
        return self

    def _walk(self, part: Message, depth: int) -> None:
        if len(self.attachments) >= MAX_ATTACHMENTS:
            return
        ctype = part.get_content_type()
        if part.is_multipart():
            if ctype.startswith("message/") and not (depth == 0 and ctype == "message/rfc822"):
                self.attachments.append((part_filename(part), ctype, part))
                return
            if depth > MAX_DEPTH:
                return
            payload = part.get_payload()
            for sub in payload if isinstance(payload, list) else ():
                if isinstance(sub, Message):
                    self._walk(sub, depth + 1)
            return
        disposition = header_str(part, "content-disposition").split(";")[0].strip().lower()
        filename = part_filename(part)
        if ctype in ("text/plain", "text/html") and disposition != "attachment":
            bucket = self.texts if ctype == "text/plain" else self.htmls
            if not bucket or filename is None:
                text = self._text(part) if not bucket else ""
                if not bucket and (text.strip() or filename is None):
                    bucket.append(text)
                    return
                if filename is None:
                    return  # a second inline body part (a list footer, an alternative copy)
        self.attachments.append((filename, ctype, part))

    def _text(self, part: Message) -> str:
        data = _payload(part)
        if len(data) > MAX_TEXT_BYTES:
            data, self.truncated = data[:MAX_TEXT_BYTES], True
        return decode_bytes(data, _charset(part))[0]


def read_parts(raw: bytes) -> MessageParts:
    """The text, HTML and attachments of a stored message; raises only :class:`MalformedMessage`
    for input that is not a message at all."""
    walk = _Walk().run(raw)
    html = walk.htmls[0] if walk.htmls else None
    has_plain = bool(walk.texts and (walk.texts[0].strip() or html is None))
    text = walk.texts[0].replace("\r\n", "\n") if has_plain else (html_to_text(html) if html is not None else "")
    attachments = tuple(
        AttachmentInfo(i, name, ctype, _size(part)) for i, (name, ctype, part) in enumerate(walk.attachments)
    )
    return MessageParts(text, html, has_plain, attachments, walk.truncated)


def attachment_data(raw: bytes, index: int) -> tuple[AttachmentInfo, bytes] | None:
    """Attachment ``index`` (as :func:`read_parts` numbers them) and its decoded bytes, or None."""
    walk = _Walk().run(raw)
    if not 0 <= index < len(walk.attachments):
        return None
    name, ctype, part = walk.attachments[index]
    data = part.as_bytes() if part.is_multipart() else _payload(part)
    return AttachmentInfo(index, name, ctype, len(data)), data


_QUOTE_INTRO = re.compile(r"^(On .{0,200} wrote:|-----Original Message-----)$")


@dataclass(frozen=True, slots=True)
class Preview:
    """What a list shows of a message without opening it: its first words and how many
    attachments it has."""

    snippet: str
    attachments: int


def preview(raw: bytes, limit: int = SNIPPET_LEN) -> Preview:
    """The snippet of a message's text (quoted lines left out, whitespace collapsed, at most
    ``limit`` characters) and its number of attachments, both read from the first
    :data:`SNIPPET_SCAN` bytes of ``raw`` only (an attachment that starts later is not
    counted); empty for something that is not a message. Never raises."""
    try:
        parts = read_parts(raw[:SNIPPET_SCAN])
    except Exception:  # a preview is a nicety: never let one stop a sync or a page
        return Preview("", 0)
    return Preview(snippet_of(parts.text, limit), len(parts.attachments))


def snippet_of(text: str, limit: int = SNIPPET_LEN) -> str:
    """The first words of ``text``: quoted lines left out, whitespace collapsed, cut at a word
    near ``limit`` characters."""
    kept = []
    for line in text[: SNIPPET_SCAN * 2].splitlines():
        line = line.strip()
        if line.startswith(">") or _QUOTE_INTRO.match(line):
            continue
        kept.append(line)
    text = " ".join(" ".join(kept).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def download_type(content_type: str) -> str:
    """The type an attachment is served as: its own when on :data:`SAFE_DOWNLOAD_TYPES`, else
    ``application/octet-stream``."""
    ctype = content_type.split(";")[0].strip().lower()
    return ctype if ctype in SAFE_DOWNLOAD_TYPES else "application/octet-stream"


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
MAX_FILENAME = 150


def safe_filename(name: str | None, index: int, content_type: str) -> str:
    """A file name that is safe to offer for saving: the last path segment of ``name``, no
    control or reserved characters, no leading dots, at most :data:`MAX_FILENAME` characters;
    ``attachment-<n>.<ext>`` when nothing is left."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" ._")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        name = stem[: MAX_FILENAME - len(ext) - 1].rstrip(" ._") + ("." + ext if ext else "")
    if not name:
        ext = mimetypes.guess_extension(download_type(content_type)) or ".bin"
        name = f"attachment-{index + 1}{ext}"
    return name


# --------------------------------------------------------------------------- part helpers


def _charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:  # a malformed RFC 2231 charset parameter
        return None
    return charset if isinstance(charset, str) else None


def _payload(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return b""
    return payload if isinstance(payload, bytes) else b""


def _size(part: Message) -> int:
    try:
        return len(part.as_bytes()) if part.is_multipart() else len(_payload(part))
    except Exception:
        return 0


def part_filename(part: Message) -> str | None:
    """The part's file name, decoded (RFC 2231 and, as mailers send them, RFC 2047 and raw
    8-bit), or None."""
    try:
        name = part.get_filename()
        if isinstance(name, str) and "\ufffd" in name:
            fixed = Message()  # raw 8-bit parameter: read the header bytes with charset fallbacks
            for key, value in part.raw_items():
                if key.lower() in ("content-disposition", "content-type"):
                    fixed[key] = decode_bytes(value.encode("ascii", "surrogateescape"))[0]
            name = fixed.get_filename() or name
    except Exception:  # RFC 2231 parameters in the wild can be arbitrarily broken
        return None
    if not isinstance(name, str):
        return None
    if "=?" in name:
        name = decode_encoded_words(name)
    name = "".join(ch for ch in name if ch.isprintable())
    return name or None
