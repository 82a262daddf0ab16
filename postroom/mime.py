"""MIME parsing: pure functions over bytes, no I/O.

Two parsers with different jobs:

* :func:`parse_headers` is the hot path of the header index (every message of
  every mailbox goes through it). It is hand-written: split lines, unfold,
  keep only the fields we index, decode RFC 2047 only when ``=?`` is present,
  and parse address lists with a regex fast path that falls back to
  :func:`email.utils.getaddresses` for anything unusual (comments, groups,
  quoted commas). It never raises; what was wrong goes into ``defects``.
* :func:`parse_message` parses a stored body with the stdlib parser under
  ``policy.compat32`` (about 3x faster than ``policy.default``) and does its
  own charset decoding with fallbacks. It raises only :class:`MalformedMessage`
  for input that is not a message at all.

Charset decoding lives in :mod:`postroom.charsets` and composing in
:mod:`postroom.compose`; their public functions are re-exported here.

Message-IDs are kept exactly as written apart from whitespace, comments and
missing angle brackets: RFC 5322 makes them opaque, and lower-casing even the
domain part would join ids that another system considers different.

Anyone can email a recruiter, so every value :func:`parse_headers` returns is
cleaned once, here, before it can reach a database or a page: no NUL or other
control characters, text that round-trips through UTF-8 (lone surrogates from
broken encoded-words become U+FFFD), Message-IDs only of the form ``<[!-~]+>``
(anything else could smuggle a header line into a reply), ids longer than
:data:`MAX_MSGID_LEN` replaced by a hash of themselves (deterministic, so two
copies of one message still match), at most :data:`MAX_REFERENCES` References
(the first and the nearest), addresses that fit their column, bounded subject,
names and address lists, and dates only within :data:`DATE_RANGE`. What was
dropped or changed is listed in ``defects``.

>>> h = parse_headers(b"Message-ID: <A1@Example.COM>\\r\\nSubject: =?utf-8?q?Caf=C3=A9?=\\r\\n\\r\\nbody")
>>> h.message_id, h.subject
('<A1@Example.COM>', 'Café')
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

from postroom.charsets import decode_bytes, decode_encoded_words

__all__ = [
    "DATE_RANGE",
    "MAX_ADDRESSES",
    "MAX_MSGID_LEN",
    "MAX_REFERENCES",
    "Address",
    "MalformedMessage",
    "ParsedHeaders",
    "ParsedMessage",
    "auto_reply_marker",
    "clean_text",
    "decode_bytes",
    "decode_encoded_words",
    "fingerprint",
    "is_msgid",
    "normalise_msgid",
    "parse_headers",
    "parse_message",
    "synthetic_message_id",
]


class MalformedMessage(Exception):
    """Raised by :func:`parse_message` for input that is not a message at all
    (empty, or no header line before the first blank line, e.g. binary
    garbage). The engine quarantines the message with ``str(exc)`` as reason."""


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header; ``name`` is decoded, may be ``""``."""

    name: str
    email: str


@dataclass(frozen=True, slots=True)
class ParsedHeaders:
    """The indexed header fields of one message.

    Address fields combine every occurrence of the header (some mailers
    repeat ``To:``/``Cc:``); single-valued fields take the first occurrence.
    """

    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    subject: str = ""
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    date: datetime | None = None
    defects: tuple[str, ...] = ()
    delivered_to: tuple[Address, ...] = ()
    auto_reply: str = ""  # why this is an automatic reply (RFC 3834 and kin), e.g. "Auto-Submitted: auto-replied"

    def participants(self) -> tuple[Address, ...]:
        """Every address on the message (From, Sender, Reply-To, To, Cc, Bcc)."""
        return self.from_ + self.sender + self.reply_to + self.to + self.cc + self.bcc


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A fully parsed stored message. ``attachments`` holds
    ``(filename or None, content_type, decoded size in bytes)``."""

    headers: ParsedHeaders
    text_body: str
    html_body: str | None
    attachments: tuple[tuple[str | None, str, int], ...]
    defects: tuple[str, ...]


# --------------------------------------------------------------------------- limits and cleaning

MAX_MSGID_LEN = 250  # longer ids are replaced by a hash (real ones are < 100 characters)
MAX_REFERENCES = 50  # References kept for threading: the first (the root) and the 49 nearest
MAX_IN_REPLY_TO = 5
MAX_ADDRESSES = 1000  # per address field; a bulk mailing's excess recipients are dropped
MAX_ADDRESS_LEN = 320  # the longest address a column holds (RFC 5321 allows 254)
MAX_SUBJECT_LEN = 1000
MAX_NAME_LEN = 200
DATE_RANGE = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))

_UNSAFE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_STRICT_MSGID_RE = re.compile(r"<[!-~]+>")


def _unsafe(match: re.Match[str]) -> str:
    return "\ufffd" if match.group() >= "\ud800" else ""


def clean_text(value: str, limit: int | None = None) -> str:
    """``value`` without control characters (tab, CR and LF kept) and with lone surrogates
    (what a broken encoded-word can decode to) replaced by U+FFFD, cut to ``limit``
    characters: text every database stores and every page can show.

    >>> clean_text("a\\x00b\\ud800c") == "ab\\ufffdc"
    True
    """
    if not (value.isascii() and value.isprintable()):
        value = _UNSAFE_RE.sub(_unsafe, value)
    return value[:limit] if limit is not None and len(value) > limit else value


def is_msgid(value: str) -> bool:
    """Whether ``value`` is a Message-ID Postroom accepts: ``<`` printable ASCII without
    spaces ``>``, nothing that could end a header line."""
    return _STRICT_MSGID_RE.fullmatch(value) is not None


def _fit_msgid(value: str) -> str:
    """An id that fits its columns: over-long ids become a hash of themselves."""
    if len(value) <= MAX_MSGID_LEN:
        return value
    return f"<{hashlib.sha256(value.encode('ascii')).hexdigest()[:40]}.long@postroom.invalid>"


def fingerprint(sender: str | None, date: datetime | None, subject: str) -> str:
    """What tells two messages with the same Message-ID apart: the sender's address (as
    :func:`postroom.addresses.normalise_address` gives it), the Date header to the second
    and the subject, hashed. Every copy of one message has the same fingerprint.

    >>> len(fingerprint("ann@example.org", None, "Hello"))
    32
    """
    when = int(date.timestamp()) if date else ""
    text = f"{(sender or '').lower()}\x00{when}\x00{' '.join(subject.split()).casefold()}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


# --------------------------------------------------------------------------- msg-ids

_MSGID_RE = re.compile(r"<[^<>]*>")
_COMMENT_RE = re.compile(r"\([^()]*\)")
_WS_RE = re.compile(r"\s+")


def _msgid_tokens(value: str) -> list[str]:
    """All acceptable msg-ids in a header value, normalised to ``<...>`` form and fitted
    to their columns; anything that is not ``<[!-~]+>`` once whitespace is removed is
    dropped."""
    found = _MSGID_RE.findall(value)
    if not found:
        if "<" in value:
            return []
        # Garbage like "foo@bar" without brackets: keep words that look like ids.
        while "(" in value and _COMMENT_RE.search(value):
            value = _COMMENT_RE.sub(" ", value)
        found = [f"<{w}>" for w in (w.strip("\"'") for w in value.split() if "@" in w) if w]
    out = []
    for t in found:
        if not (t.isascii() and t.isprintable()):
            t = _WS_RE.sub("", t)
        elif " " in t:
            t = t.replace(" ", "")
        if _STRICT_MSGID_RE.fullmatch(t):
            out.append(_fit_msgid(t))
    return out


def normalise_msgid(value: str | None) -> str | None:
    """``" <a@B> (comment)"`` -> ``"<a@B>"``; ``"foo@bar"`` -> ``"<foo@bar>"``;
    no acceptable id (see :func:`is_msgid`) -> None. Case is kept exactly (ids are opaque).

    >>> normalise_msgid("<a@ example.org>")  # folded: unfolded
    '<a@example.org>'
    >>> normalise_msgid("<caf\u00e9@example.org>") is None  # not printable ASCII
    True
    """
    if not value:
        return None
    tokens = _msgid_tokens(value)
    if tokens:
        return tokens[0]
    if "<" in value or ">" in value:
        return None
    bare = _WS_RE.sub("", _COMMENT_RE.sub("", value))
    return _fit_msgid(f"<{bare}>") if bare and is_msgid(f"<{bare}>") else None


# --------------------------------------------------------------------------- addresses

_ONE_ADDR_RE = re.compile(r'\s*(?:"([^"\\]*)"|([^"<>,;:()\\]*?))\s*<([^<>"\s,;]*)>\s*')
_BARE_ADDR_RE = re.compile(r'\s*([^\s"<>,;:()\\]+@[^\s"<>,;:()\\]+)\s*')
_LIST_ADDR_RE = re.compile(
    r'\s*(?:(?:"((?:[^"\\]|\\.)*)"|([^"<>,;:()\\]*?))\s*<([^<>"\s,;]*)>|([^\s"<>,;:()\\]+@[^\s"<>,;:()\\]+))\s*'
    r"(?:,|$)"
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)")


def _address(name: str, email: str) -> Address:
    if "=?" in name:
        name = decode_encoded_words(name)
    return Address(" ".join(name.split()), email)


def _one(piece: str, out: list[Address]) -> bool:
    """Parse one simple mailbox into ``out``; False if it is not simple."""
    m = _ONE_ADDR_RE.fullmatch(piece) if "<" in piece else None
    if m is not None:
        quoted, plain, email = m.groups()
        if email:
            out.append(_address(quoted if quoted is not None else plain, email))
        return True
    m = _BARE_ADDR_RE.fullmatch(piece)
    if m is not None:
        out.append(Address("", m.group(1)))
        return True
    return not piece.strip()


def _addresses(value: str) -> tuple[Address, ...]:
    """Parse an address list: regex fast paths, stdlib fallback for comments,
    groups and other rarities."""
    out: list[Address] = []
    if "," not in value or '"' not in value:
        if all(_one(piece, out) for piece in value.split(",")):
            return tuple(out)
        out.clear()
    pos, end = 0, len(value)
    while pos < end:
        m = _LIST_ADDR_RE.match(value, pos)
        if m is None or m.end() == pos:
            if value[pos:].strip(" \t,"):
                return _addresses_slow(value)
            break
        quoted, plain, bracketed, bare = m.groups()
        if bare is not None:
            out.append(Address("", bare))
        elif bracketed:
            name = _QUOTED_PAIR_RE.sub(r"\1", quoted) if quoted is not None else plain
            out.append(_address(name, bracketed))
        pos = m.end()
    return tuple(out)


def _addresses_slow(value: str) -> tuple[Address, ...]:
    return tuple(_address(name, email) for name, email in getaddresses([value]) if email)


# --------------------------------------------------------------------------- dates

_DATE_RE = re.compile(
    r"\s*(?:[A-Za-z]{3},\s?)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2})(?::(\d{2}))? ([+-])(\d{2})(\d{2})"
    r"(?:\s*\([^()]*\))?\s*"
)
_MONTHS = {
    m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)
}
_offsets: dict[str, timedelta] = {}


def _parse_date(value: str) -> datetime | None:
    """An aware UTC datetime, or None for garbage. Naive (``-0000``) is UTC."""
    m = _DATE_RE.fullmatch(value)
    if m is not None:
        day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
        month = _MONTHS.get(mon.lower())
        if month is not None:
            try:
                dt = datetime(int(year), month, int(day), int(hh), int(mm), int(ss or 0), tzinfo=UTC)
            except ValueError:
                return None
            key = sign + oh + om
            offset = _offsets.get(key)
            if offset is None:
                offset = timedelta(hours=int(oh), minutes=int(om))
                offset = _offsets[key] = -offset if sign == "-" else offset
            try:
                return dt - offset
            except OverflowError:
                return None
    try:
        dt = parsedate_to_datetime(value.strip())
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------- headers

_ADDRESS_FIELDS = {"from": 0, "to": 1, "cc": 2, "bcc": 3, "reply-to": 4, "sender": 5, "delivered-to": 6}
# One C-level scan picks the indexed fields (with continuation lines) out of the block.
_FIELD_RE = re.compile(
    r"^(message-id|in-reply-to|references|subject|date|from|to|cc|bcc|reply-to|sender|delivered-to"
    r"|auto-submitted|x-autoreply|x-autorespond|precedence)[ \t]*:"
    r"(.*(?:\r?\n[ \t].*)*)",
    re.MULTILINE | re.IGNORECASE,
)
_FIELD_NAME_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def _header_text(raw: bytes) -> tuple[str, bool]:
    """The header block of ``raw`` as text, and whether 8-bit bytes needed a fallback."""
    end = raw.find(b"\n\n")
    end2 = raw.find(b"\r\n\r\n")
    if end2 != -1 and (end == -1 or end2 < end):
        end = end2
    block = raw if end == -1 else raw[:end]
    if block.isascii():
        return block.decode("ascii"), False
    try:
        return block.decode("utf-8"), False
    except UnicodeDecodeError:
        pass
    try:
        return block.decode("cp1252"), True
    except UnicodeDecodeError:
        return block.decode("latin-1"), True


def parse_headers(raw: bytes) -> ParsedHeaders:
    """Parse the indexed fields of a raw header block (or whole message).

    Never raises. Raw 8-bit header bytes are read as UTF-8, falling back to
    cp1252; encoded-words in any charset fall back the same way.
    """
    text, fallback = _header_text(raw)
    if "\n" not in text and "\r" in text:  # old Mac line endings
        text = text.replace("\r", "\n")
    defects: list[str] = ["8-bit header bytes not UTF-8, read as cp1252"] if fallback else []
    single: dict[str, str] = {}
    addr_values: list[list[str]] = [[] for _ in _ADDRESS_FIELDS]
    for name, value in _FIELD_RE.findall(text):
        if "\n" in value:  # unfold
            value = value.replace("\r\n", "").replace("\n", "")
        field = name.lower()
        slot = _ADDRESS_FIELDS.get(field)
        if slot is not None:
            addr_values[slot].append(value)
        elif field not in single:
            single[field] = value

    message_id = None
    raw_id = single.get("message-id")
    if raw_id is None:
        defects.append("no Message-ID")
    else:
        message_id = normalise_msgid(raw_id)
        if message_id is None:
            defects.append("unparseable Message-ID")
        elif "<" not in raw_id:
            defects.append("Message-ID without angle brackets")

    in_reply_to: tuple[str, ...] = ()
    raw_irt = single.get("in-reply-to")
    if raw_irt:
        in_reply_to = tuple(dict.fromkeys(_msgid_tokens(raw_irt)))[:MAX_IN_REPLY_TO]
    references: tuple[str, ...] = ()
    raw_refs = single.get("references")
    if raw_refs:
        refs = dict.fromkeys(_msgid_tokens(raw_refs))
        if message_id in refs:
            defects.append("References contains the message's own id")
            del refs[message_id]
        references = tuple(refs)
        if len(references) > MAX_REFERENCES:  # the root and the nearest ancestors thread it
            defects.append(f"{len(references) - MAX_REFERENCES} of {len(references)} References dropped")
            references = references[:1] + references[1 - MAX_REFERENCES :]

    subject = single.get("subject", "")
    if "=?" in subject:
        subject = decode_encoded_words(subject)
    subject = clean_text(" ".join(subject.split()), MAX_SUBJECT_LEN)

    date = None
    raw_date = single.get("date")
    if raw_date is None:
        defects.append("no Date")
    else:
        date = _parse_date(raw_date)
        if date is None:
            defects.append("unparseable Date")
        elif not DATE_RANGE[0] <= date < DATE_RANGE[1]:
            defects.append("Date out of range")
            date = None

    addrs = [
        _clean_addresses(_addresses(v[0] if len(v) == 1 else ", ".join(v)), name, defects) if v else ()
        for v, name in zip(addr_values, _ADDRESS_FIELDS, strict=True)
    ]
    if not addrs[0]:
        defects.append("no From")
    return ParsedHeaders(
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        subject=subject,
        from_=addrs[0],
        to=addrs[1],
        cc=addrs[2],
        bcc=addrs[3],
        reply_to=addrs[4],
        sender=addrs[5],
        date=date,
        defects=tuple(defects),
        delivered_to=addrs[6],
        auto_reply=auto_reply_marker(single),
    )


def auto_reply_marker(fields: Mapping[str, str]) -> str:
    """Why a message is an automatic reply, from its lower-cased header fields, or ``""``:
    ``Auto-Submitted`` other than ``no`` (RFC 3834), ``X-Autoreply``, ``X-Autorespond``, or
    ``Precedence: auto_reply``. ``X-Auto-Response-Suppress`` is no marker: it is a request
    not to answer, and Exchange puts it on ordinary mail from distribution lists.

    >>> auto_reply_marker({"auto-submitted": "auto-replied; owner-email=a@b"})
    'Auto-Submitted: auto-replied'
    >>> auto_reply_marker({"auto-submitted": "No"}), auto_reply_marker({"x-auto-response-suppress": "All"})
    ('', '')
    """
    submitted = fields.get("auto-submitted", "").split(";", 1)[0].strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {clean_text(submitted, 100)}"
    for name, label in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond")):
        if name in fields:
            return f"{label}: {clean_text(fields[name].strip(), 100)}".rstrip(": ")
    if fields.get("precedence", "").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    return ""


def _clean_addresses(found: tuple[Address, ...], field: str, defects: list[str]) -> tuple[Address, ...]:
    """The addresses of one field as the database can hold them: names and addresses
    cleaned (:func:`clean_text`), addresses too long for any mailbox dropped, and at most
    :data:`MAX_ADDRESSES` of them."""
    if len(found) > MAX_ADDRESSES:
        defects.append(f"{len(found) - MAX_ADDRESSES} of {len(found)} {field} addresses dropped")
        found = found[:MAX_ADDRESSES]
    out = []
    for a in found:
        name, email = a.name, a.email
        if not (email.isascii() and email.isprintable() and len(email) <= MAX_ADDRESS_LEN):
            email = clean_text(email)
            if len(email) > MAX_ADDRESS_LEN:
                defects.append(f"{field} address longer than {MAX_ADDRESS_LEN} characters dropped")
                continue
        if not (name.isascii() and name.isprintable() and len(name) <= MAX_NAME_LEN):
            name = clean_text(name, MAX_NAME_LEN)
        if email:
            out.append(a if (name, email) == (a.name, a.email) else Address(name, email))
    return tuple(out)


def synthetic_message_id(h: ParsedHeaders) -> str:
    """A stable id for a message without Message-ID, from Date, From, To, Cc
    and Subject (not Bcc, which only the sender's copy carries), so the same
    message seen in two mailboxes gets the same id.

    Two id-less messages with identical date, sender, recipients and subject
    collide; that is the price of cross-mailbox stability.
    """
    parts = [
        h.date.isoformat() if h.date else "",
        ",".join(a.email.lower() for a in h.from_),
        ",".join(a.email.lower() for a in h.to),
        ",".join(a.email.lower() for a in h.cc),
        h.subject,
    ]
    digest = hashlib.sha1("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"<{digest}@postroom.invalid>"


# --------------------------------------------------------------------------- full messages

_BYTES_PARSER = BytesParser(policy=policy.compat32)


def check_message(raw: bytes) -> None:
    """Raise :class:`MalformedMessage` if ``raw`` is not an email message at all.

    This is the cheap test the sync path applies to every stored body; the full
    MIME parse (:func:`parse_message`) happens when a message is displayed.
    """
    reason = _looks_like_message(raw)
    if reason:
        raise MalformedMessage(reason)


def _looks_like_message(raw: bytes) -> str | None:
    """Why ``raw`` is not a message, or None if its first line is a header."""
    if not raw.strip():
        return "empty message"
    first, _, rest = raw.lstrip(b"\r\n").partition(b"\n")
    if first.startswith(b"From ") and raw.startswith(b"From "):  # mbox separator line
        first = rest.partition(b"\n")[0]
    if not _FIELD_NAME_RE.match(first):
        return "not a message: no header line before the body"
    return None


class _HTMLText(HTMLParser):
    """Plain text from HTML: drops script/style/head, breaks lines at blocks."""

    _SKIP = frozenset({"script", "style", "head", "title"})
    _BLOCK = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    """Readable plain text from an HTML body (never raises)."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # HTMLParser is lenient; this is belt and braces
        return html.unescape(re.sub(r"<[^>]*>", " ", markup)).strip()
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _part_text(part: Message, defects: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset()
    text, fallback = decode_bytes(payload, charset)
    if fallback:
        defects.append(f"{part.get_content_type()} part not valid {charset or 'us-ascii'}, decoded with fallback")
    return text


def header_str(part: Message, name: str) -> str:
    """A header as text; compat32 returns Header objects for 8-bit values."""
    value = part.get(name)
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return str(value)
    except Exception:
        return ""


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
        if isinstance(name, str) and "\ufffd" in name:
            # Raw 8-bit parameter (common: UTF-8 filenames without RFC 2231):
            # re-read the header bytes with our charset fallbacks.
            fixed = Message()
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
    return name or None


def _payload_size(part: Message) -> int:
    try:
        if part.is_multipart():
            return len(part.as_bytes())
        payload = part.get_payload(decode=True)
    except Exception:
        return 0
    return len(payload) if isinstance(payload, bytes) else 0


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a stored message; never raises except :class:`MalformedMessage`.

    ``text_body`` is the first inline text/plain part, or text derived from the
    first text/html part when there is no plain one. Attached messages
    (message/*) are listed as attachments, except a top-level message/rfc822
    wrapper, whose body is used.
    """
    check_message(raw)
    headers = parse_headers(raw)
    try:
        root = _BYTES_PARSER.parsebytes(raw)
    except Exception as exc:  # compat32 is very lenient; guard anyway
        raise MalformedMessage(f"unparseable MIME structure: {exc}") from exc
    defects: list[str] = list(headers.defects)
    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[tuple[str | None, str, int]] = []

    def walk(part: Message, depth: int) -> None:
        defects.extend(type(d).__name__ for d in part.defects)
        ctype = part.get_content_type()
        if part.is_multipart():
            payload = part.get_payload()
            if ctype.startswith("message/") and not (depth == 0 and ctype == "message/rfc822"):
                attachments.append((_filename(part), ctype, _payload_size(part)))
                return
            if depth > 50:
                defects.append("MIME nesting too deep")
                return
            for sub in payload if isinstance(payload, list) else ():
                if isinstance(sub, Message):
                    walk(sub, depth + 1)
            return
        disposition = header_str(part, "content-disposition").split(";")[0].strip().lower()
        filename = _filename(part)
        if ctype in ("text/plain", "text/html") and disposition != "attachment":
            bucket = texts if ctype == "text/plain" else htmls
            if not bucket or filename is None:
                text = _part_text(part, defects)
                if not bucket and (text.strip() or filename is None):
                    bucket.append(text)
                    return
                if filename is None:
                    return  # a second inline body part (list footer, alternative copy)
        attachments.append((filename, ctype, _payload_size(part)))

    walk(root, 0)
    html_body = htmls[0] if htmls else None
    if texts and (texts[0].strip() or html_body is None):
        text_body = texts[0]
    elif html_body is not None:
        text_body = html_to_text(html_body)
    else:
        text_body = ""
    return ParsedMessage(
        headers=headers,
        text_body=text_body,
        html_body=html_body,
        attachments=tuple(attachments),
        defects=tuple(dict.fromkeys(defects)),
    )
