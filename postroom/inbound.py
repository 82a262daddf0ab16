"""Inbound mail for the processing mailbox, turned into structured input. Pure functions over
bytes: no database, no network, no IMAP (the caller fetches, routes, stores and moves).

:func:`parse_inbound` is liberal in what it accepts and bounded in what it does:

* **Headers** come from :func:`postroom.mime.parse_headers` (cleaned, never raising); an
  automatic reply (RFC 3834 and kin) is flagged in ``auto_reply`` so the caller records it as
  such, not as data.
* **Text**: every inline ``text/plain`` part, concatenated in order; when there is none, every
  inline ``text/html`` part converted to text (selectolax/lexbor, scripts, styles and the head
  dropped, a line break at each block). Any charset label is read with
  :func:`postroom.charsets.decode_bytes`, which falls back (UTF-8, then cp1252) rather than
  failing; a fallback is a defect. At most :data:`MAX_TEXT_BYTES` of a part are decoded.
* **Data** (:mod:`postroom.inbound_data`): from an ``application/json`` (or ``…+json``) part
  when there is a valid one; otherwise from a JSON or YAML document at the start of the text.
  The rest of the text is free text.
* **Free text**: the signature (``-- ``) and quoted history (Gmail's ``On … wrote:``,
  Outlook's ``-----Original Message-----`` and ``From: … Sent: …`` blocks, in the languages
  given) are removed with mail-parser-reply. The newest fragment that says something is kept:
  a message that only forwards another (``---------- Forwarded message ---------``) keeps the
  forwarded text. At most :data:`MAX_REPLY_CHARS` characters go through its regexes.
* **Attachments**: images, video, PDF and office documents (``application/vnd.*``, Word,
  RTF, …) are kept with a safe file name (:func:`postroom.message_parts.safe_filename`), up to
  :data:`MAX_ATTACHMENT_BYTES` each and :data:`MAX_ATTACHMENTS_TOTAL` in all; anything else
  (executables, archives, calendar files, attached messages as such) is left out with a
  defect naming it. Attachments inside a forwarded ``message/rfc822`` are kept too.
* **Routing identifiers** (:func:`routing_identifiers`): in routing order, the reply tokens of
  To/Cc/Delivered-To plus-addresses, then In-Reply-To and References ids, then the subject's
  short ids. Which of them Postroom gave out is for the caller to look up.

>>> msg = parse_inbound(b"From: a@example.org\\r\\nSubject: [k3x9q2] Re: Hi\\r\\n\\r\\nName: Ada\\r\\nRole: Dev\\r\\n")
>>> msg.data, msg.data_source, msg.identifiers
({'name': 'Ada', 'role': 'Dev'}, 'yaml', (Identifier(kind='short_id', value='k3x9q2'),))
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any, Literal

from mailparser_reply.parser import EmailMessage
from selectolax.lexbor import LexborHTMLParser

from postroom.charsets import decode_bytes
from postroom.inbound_data import DataResult, alias_table, data_from_json, data_from_text
from postroom.message_parts import (
    part_filename,  # one reading of file names (RFC 2231, 2047, raw 8-bit)
    safe_filename,
)
from postroom.mime import Address, MalformedMessage, ParsedHeaders, check_message, header_str, parse_headers
from postroom.reply_ids import reply_tokens, short_ids

__all__ = [
    "DEFAULT_LANGUAGES",
    "MAX_ATTACHMENTS_TOTAL",
    "MAX_ATTACHMENT_BYTES",
    "MAX_REPLY_CHARS",
    "MAX_TEXT_BYTES",
    "Identifier",
    "InboundAttachment",
    "InboundMessage",
    "MalformedMessage",
    "attachment_kind",
    "html_text",
    "parse_inbound",
    "reply_text",
    "routing_identifiers",
]

MAX_TEXT_BYTES = 1024 * 1024  # of one text or HTML part decoded
MAX_REPLY_CHARS = 200_000  # of free text searched for quotes and signatures; the rest is cut off
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024  # one attachment kept (what common mail servers accept)
MAX_ATTACHMENTS_TOTAL = 50 * 1024 * 1024  # all attachments of one message kept
MAX_PARTS = 500  # MIME parts visited
MAX_DEPTH = 50  # MIME nesting followed
DEFAULT_LANGUAGES = ("en", "de", "fr", "es")

AttachmentKind = Literal["image", "video", "pdf", "office", "other"]
IdentifierKind = Literal["reply_token", "message_id", "short_id"]

_PARSER = BytesParser(policy=policy.compat32)
_OFFICE_TYPES = frozenset({
    "application/msword", "application/rtf", "text/rtf", "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint", "application/x-rtf",
})  # fmt: skip
_OFFICE_EXTENSIONS = frozenset({
    "doc", "docx", "odt", "rtf", "xls", "xlsx", "ods", "ppt", "pptx", "odp", "pages", "numbers", "key",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class InboundAttachment:
    """One attachment kept: its safe file name, declared type (lower-case, no parameters),
    decoded size in bytes, kind and bytes."""

    filename: str
    content_type: str
    size: int
    kind: AttachmentKind
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Identifier:
    """A routing identifier a message carries: a ``reply_token`` (from a plus-address), a
    ``message_id`` (from In-Reply-To or References) or a ``short_id`` (from the subject)."""

    kind: IdentifierKind
    value: str


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An inbound message as structured input.

    ``data`` has canonical top-level keys (:mod:`postroom.inbound_data`); ``data_source`` says
    where it came from (``"json part"``, ``"json"``, ``"yaml"`` or None). ``text`` is the free
    text without data, signature and quoted history. ``auto_reply`` is ``""`` or why the
    message is an automatic reply. ``defects`` lists what was refused, cut or decoded with a
    fallback, for the operator."""

    message_id: str | None
    subject: str
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    delivered_to: tuple[Address, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: datetime | None
    data: dict[str, Any]
    data_source: str | None
    text: str
    attachments: tuple[InboundAttachment, ...]
    auto_reply: str
    identifiers: tuple[Identifier, ...]
    defects: tuple[str, ...]


# --------------------------------------------------------------------------- the message


def parse_inbound(
    raw: bytes,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
) -> InboundMessage:
    """Parse one inbound message (see the module docstring for the policy). ``aliases`` maps
    canonical data keys to other spellings; ``languages`` are those whose quoting headers and
    sign-offs are recognised. Raises only :class:`MalformedMessage`, for input that is not a
    message at all."""
    check_message(raw)
    headers = parse_headers(raw)
    try:
        root = _PARSER.parsebytes(raw)
    except Exception as exc:  # compat32 is very lenient; guard anyway
        raise MalformedMessage(f"unparseable MIME structure: {exc}") from exc
    walk = _Walk()
    walk.visit(root, 0)
    defects = list(headers.defects) + walk.defects

    if walk.plains:
        body = "\n\n".join(t.strip("\r\n") for t in walk.plains)
    else:
        body = "\n\n".join(html_text(h) for h in walk.htmls)
    body = body.replace("\r\n", "\n").replace("\r", "\n")

    found: DataResult | None = None
    table = alias_table(aliases)
    for payload in walk.jsons:
        candidate = data_from_json(payload, table)
        defects.extend(candidate.defects)
        if candidate.source is not None:
            found = DataResult(candidate.data, candidate.source, body, ())
            break
    if found is None:
        found = data_from_text(body, aliases)
        defects.extend(found.defects)

    return InboundMessage(
        message_id=headers.message_id,
        subject=headers.subject,
        from_=headers.from_,
        to=headers.to,
        cc=headers.cc,
        delivered_to=headers.delivered_to,
        in_reply_to=headers.in_reply_to,
        references=headers.references,
        date=headers.date,
        data=found.data,
        data_source=found.source,
        text=reply_text(found.rest, languages),
        attachments=tuple(walk.attachments),
        auto_reply=headers.auto_reply,
        identifiers=routing_identifiers(headers),
        defects=tuple(dict.fromkeys(defects)),
    )


class _Walk:
    """One pass over the parts: text, HTML and JSON bodies, and the attachments kept."""

    def __init__(self) -> None:
        self.plains: list[str] = []
        self.htmls: list[str] = []
        self.jsons: list[str] = []
        self.attachments: list[InboundAttachment] = []
        self.defects: list[str] = []
        self.parts = 0
        self.kept_bytes = 0

    def visit(self, part: Message, depth: int) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            if self.parts == MAX_PARTS + 1:
                self.defects.append(f"more than {MAX_PARTS} MIME parts, the rest ignored")
            return
        ctype = part.get_content_type()
        if part.is_multipart():
            if depth >= MAX_DEPTH:
                self.defects.append("MIME nesting too deep, the rest ignored")
                return
            payload = part.get_payload()
            inner = depth + 1
            for sub in payload if isinstance(payload, list) else ():
                if isinstance(sub, Message):
                    if ctype.startswith("message/"):
                        self._visit_attached(sub, inner)
                    else:
                        self.visit(sub, inner)
            return
        disposition = header_str(part, "content-disposition").split(";")[0].strip().lower()
        filename = part_filename(part)
        if disposition != "attachment" and filename is None:
            if ctype == "text/plain":
                self.plains.append(self._text(part))
                return
            if ctype == "text/html":
                self.htmls.append(self._text(part))
                return
        if ctype == "application/json" or ctype.endswith("+json"):
            self.jsons.append(self._text(part))
            return
        self._attachment(part, ctype, filename)

    def _visit_attached(self, message: Message, depth: int) -> None:
        """A forwarded message/rfc822: its attachments count, its text does not (the text is
        what the forwarder wrote, or the inline copy most clients add)."""
        outer = (self.plains, self.htmls, self.jsons)
        self.plains, self.htmls, self.jsons = [], [], []
        try:
            self.visit(message, depth)
        finally:
            self.plains, self.htmls, self.jsons = outer

    def _text(self, part: Message) -> str:
        data = _payload(part)
        if len(data) > MAX_TEXT_BYTES:
            self.defects.append(f"{part.get_content_type()} part longer than {MAX_TEXT_BYTES} bytes, cut")
            data = data[:MAX_TEXT_BYTES]
        charset = _charset(part)
        text, fallback = decode_bytes(data, charset)
        if fallback:
            label = charset or "us-ascii"
            self.defects.append(f"{part.get_content_type()} part not valid {label}, decoded with fallback")
        return text

    def _attachment(self, part: Message, ctype: str, filename: str | None) -> None:
        kind = attachment_kind(ctype, filename)
        shown = filename or ctype
        if kind == "other":
            self.defects.append(f"attachment {shown!r} ({ctype}) not kept: not an image, video, PDF or document")
            return
        data = _payload(part)
        if len(data) > MAX_ATTACHMENT_BYTES:
            self.defects.append(f"attachment {shown!r} larger than {MAX_ATTACHMENT_BYTES} bytes, not kept")
            return
        if self.kept_bytes + len(data) > MAX_ATTACHMENTS_TOTAL:
            self.defects.append(f"attachment {shown!r} not kept: attachments over {MAX_ATTACHMENTS_TOTAL} bytes")
            return
        self.kept_bytes += len(data)
        name = safe_filename(filename, len(self.attachments), ctype)
        self.attachments.append(InboundAttachment(name, ctype, len(data), kind, data))


def attachment_kind(content_type: str, filename: str | None = None) -> AttachmentKind:
    """What an attachment is, from its declared type, or, for the generic types mailers use
    (``application/octet-stream``), its file name's extension.

    >>> attachment_kind("image/png"), attachment_kind("application/vnd.oasis.opendocument.text")
    ('image', 'office')
    >>> attachment_kind("application/octet-stream", "CV.PDF"), attachment_kind("application/x-msdownload", "a.exe")
    ('pdf', 'other')
    """
    ctype = content_type.split(";")[0].strip().lower()
    major = ctype.partition("/")[0]
    if major == "image" and ctype != "image/svg+xml":  # SVG is a document that can run script
        return "image"
    if major == "video":
        return "video"
    if ctype in ("application/pdf", "application/x-pdf"):
        return "pdf"
    if ctype in _OFFICE_TYPES or ctype.startswith("application/vnd."):
        return "office"
    if ctype in ("application/octet-stream", "application/x-download", "binary/octet-stream") and filename:
        ext = filename.rpartition(".")[2].lower() if "." in filename else ""
        if ext == "pdf":
            return "pdf"
        if ext in _OFFICE_EXTENSIONS:
            return "office"
        if ext in ("png", "jpg", "jpeg", "gif", "webp", "heic", "tif", "tiff", "bmp"):
            return "image"
        if ext in ("mp4", "mov", "webm", "m4v", "avi"):
            return "video"
    return "other"


# --------------------------------------------------------------------------- text

_SKIPPED_TAGS = ["script", "style", "head", "template", "noscript", "title"]
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "form", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
})  # fmt: skip
_SPACES = re.compile(r"[ \t\xa0\u200b]+")
_BLANK_RUN = re.compile(r"\n{3,}")
_BANNER = re.compile(r"^-{3,}[^\n]{0,80}-{3,}$|^Begin forwarded message:$", re.MULTILINE)


def html_text(markup: str) -> str:
    """Readable text from mail HTML: scripts, styles, the head and templates dropped, a line
    break at every block element, spaces collapsed within lines, at most one blank line in a
    row. Never raises.

    >>> html_text("<style>p{}</style><p>Hello <b>Ada</b>,</p><script>x()</script><div>Line&nbsp;2</div>")
    'Hello Ada,\\nLine 2'
    """
    try:
        tree = LexborHTMLParser(markup)
        tree.strip_tags(_SKIPPED_TAGS)
        root = tree.body or tree.root
        if root is None:
            return ""
        chunks: list[str] = []
        for node in root.traverse(include_text=True):
            if node.tag == "-text":
                chunks.append(node.text_content or "")
            elif node.tag in _BLOCK_TAGS:
                chunks.append("\n")
    except Exception:  # lexbor is lenient; keep a message readable whatever happens
        return re.sub(r"<[^>]*>", " ", markup).strip()
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(chunks).splitlines())
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip()


def reply_text(text: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> str:
    """What the sender wrote: ``text`` without its signature and quoted history
    (mail-parser-reply, with these ``languages`` and English). Fragments are the newest
    reply, then each quoted message; the first that still says something once forwarding
    banners are dropped is kept, so a bare forward keeps the forwarded text. Hyphen lists
    (``- item``) are kept, not taken for a signature.

    >>> reply_text("Yes, Tuesday works.\\n\\n-- \\nAda\\n\\nOn Mon, 3 Mar 2025, Bob <b@example.org> wrote:\\n> When?")
    'Yes, Tuesday works.'
    """
    if not text.strip():
        return ""
    text = text[:MAX_REPLY_CHARS]
    try:
        message = EmailMessage(text=text, languages=list(languages), keep_hyphen_lists=True).read()
        fragments = [reply.body for reply in message.replies]
    except Exception:  # a third-party regex set: never let it stop a message
        return text.strip()
    for fragment in fragments:
        cleaned = _BANNER.sub("", fragment).strip()
        if cleaned:
            return _BLANK_RUN.sub("\n\n", cleaned)
    return ""


# --------------------------------------------------------------------------- routing


def routing_identifiers(headers: ParsedHeaders) -> tuple[Identifier, ...]:
    """The routing identifiers of a message, in the order routing tries them: reply tokens
    of plus-addresses in To, Cc and Delivered-To; In-Reply-To then References ids (nearest
    first: the message answered, then its ancestors); the subject's short ids. Each once."""
    addresses = [a.email for a in headers.to + headers.cc + headers.delivered_to]
    found: list[Identifier] = [Identifier("reply_token", t) for t in reply_tokens(addresses)]
    ids = dict.fromkeys((*headers.in_reply_to, *reversed(headers.references)))
    found += [Identifier("message_id", m) for m in ids]
    found += [Identifier("short_id", s) for s in short_ids(headers.subject)]
    return tuple(found)


# --------------------------------------------------------------------------- part helpers


def _payload(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return b""
    return payload if isinstance(payload, bytes) else b""


def _charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:  # a malformed RFC 2231 charset parameter
        return None
    return charset if isinstance(charset, str) else None
