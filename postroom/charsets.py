"""Charset handling and RFC 2047 encoded-word decoding: pure functions, no I/O.

Mail in the wild mislabels its charset constantly, so declared labels are read
as their WHATWG supersets and undecodable data falls back to UTF-8, then cp1252
(see :func:`decode_bytes`). Encoded-words in headers decode the same way.

>>> decode_encoded_words("=?utf-8?q?Caf=C3=A9?= au lait")
'Café au lait'
>>> decode_bytes(b"caf\\xe9", "iso-8859-1")
('café', False)
"""

from __future__ import annotations

import binascii
import codecs
import re

__all__ = ["decode_bytes", "decode_encoded_words"]


# --------------------------------------------------------------------------- charsets

# Labels whose bytes are, in practice, a superset (WHATWG Encoding Standard).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "ansi-x3.4-1968": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "utf8": "utf-8",
}
_codec_cache: dict[str, str | None] = {}


def _codec(charset: str | None) -> str | None:
    """A Python codec name for a MIME charset label, or None if unknown."""
    if not charset:
        return None
    try:
        return _codec_cache[charset]
    except KeyError:
        pass
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        name: str | None = codecs.lookup(label).name
    except LookupError:
        name = None
    if len(_codec_cache) < 512:
        _codec_cache[charset] = name
    return name


_UTF8_SEQ_RE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")
_ASCII_SUPERSETS = frozenset({"ascii", "cp1252", "utf-8", "iso8859-15", "cp1251", "cp1250"})


def decode_bytes(data: bytes, charset: str | None = None) -> tuple[str, bool]:
    """Decode ``data`` labelled ``charset``; never raises.

    The declared charset is read as its WHATWG superset (ISO-8859-1 as cp1252,
    GB2312 as GB18030, ...). Unlabelled or US-ASCII-labelled 8-bit data is tried
    as UTF-8, then cp1252. Data that is invalid in its declared charset, or has
    an unknown charset, is tried as UTF-8, then cp1252, then decoded with
    replacement characters. Returns the text and whether the label was wrong
    (or unknown).
    """
    label = charset.strip().lower() if charset else None
    unlabelled = label is None or label in ("us-ascii", "ascii", "ansi_x3.4-1968", "ansi-x3.4-1968")
    codec = None if unlabelled else _codec(label)
    if data.isascii() and (codec is None or codec in _ASCII_SUPERSETS):
        return data.decode("ascii"), False
    for candidate in (codec, "utf-8", "cp1252"):
        if candidate is None:
            continue
        try:
            text = data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            if candidate == "utf-8":
                # Mostly valid UTF-8 with a few broken sequences (truncation, a stray
                # byte): keep it UTF-8 rather than turning everything into mojibake.
                text = data.decode("utf-8", "replace")
                if len(_UTF8_SEQ_RE.findall(data)) >= 10 * text.count("\ufffd"):
                    return text, True
            continue
        return text, candidate != codec and not (label is None and candidate == "utf-8")
    return data.decode(codec or "utf-8", "replace"), True


# --------------------------------------------------------------------------- RFC 2047

_EW_RE = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_QHEX_RE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _ew_bytes(enc: str, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if enc in "Qq":
        return _QHEX_RE.sub(lambda m: bytes((int(m.group(1), 16),)), raw.replace(b"_", b" "))
    raw = raw.rstrip(b"=")
    try:
        return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
    except binascii.Error:
        return binascii.a2b_base64(raw[: len(raw) - len(raw) % 4] or b"")


def decode_encoded_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in ``value``; never raises.

    Whitespace between adjacent encoded-words is dropped, and adjacent words in
    the same charset are joined as bytes before decoding, so a multi-byte
    character split across two words (common with B-encoded UTF-8 and GB2312)
    survives. Unknown or wrong charsets fall back as in :func:`decode_bytes`.
    """
    out: list[str] = []
    pending: list[bytes] = []
    pending_cs: str | None = None
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_cs)[0])
            pending.clear()

    for m in _EW_RE.finditer(value):
        gap = value[pos : m.start()]
        if gap and not (pending and gap.isspace()):
            flush()
            out.append(gap)
        cs = m.group(1).lower()
        if pending and cs != pending_cs:
            flush()
        pending_cs = cs
        pending.append(_ew_bytes(m.group(2), m.group(3)))
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)
