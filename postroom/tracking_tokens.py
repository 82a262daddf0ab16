"""Signed tokens for the tracking pixel and the click redirect: pure functions, no I/O.

Every tracked copy carries its own pixel URL and its own link URLs. The token in them says
whose copy it is (the recipient's id in ``outbox_recipients``) and, for a link, which link it
is; the link's target URL travels beside the token in the query string and is bound to it by
the MAC, so the redirect can only go to a URL that was in the message (no open redirect), and
neither checking a token nor redirecting needs the database.

Format: one kind byte (1 = open, 2 = click), the recipient id and (clicks) the link index as
unsigned LEB128 varints, then a 96-bit tag: HMAC-SHA256 over the kind byte, the varints and
(clicks) the UTF-8 target URL, truncated to 12 bytes. The whole is base64url without padding:
an open token for a recipient id below 16384 is 19 or 20 characters. Nothing in it is readable, and
nothing but the tag is secret-dependent: ids are not hidden, only unforgeable.

The MAC key is derived from ``security.secret_key`` with HKDF under a label of its own
(never the secret itself, and unrelated to the keys that seal credentials or sign cookies).
Tokens made under a key listed in ``security.previous_keys`` keep verifying, so rotating the
key does not break the links in mail already sent.

>>> keys = TrackingKeys.from_secret("correct horse battery staple 1234")
>>> url = keys.open_url("https://t.example.com", 42)
>>> url.startswith("https://t.example.com/t/o/") and url.endswith(".gif")
True
>>> keys.verify_open(url.rsplit("/", 1)[1].removesuffix(".gif"))
42
>>> click = keys.click_url("https://t.example.com", 42, 0, "https://example.com/jobs?id=7")
>>> click.split("?u=")[1]
'https%3A%2F%2Fexample.com%2Fjobs%3Fid%3D7'
>>> token = click.split("/t/c/")[1].split("?")[0]
>>> keys.verify_click(token, "https://example.com/jobs?id=7")
(42, 0)
>>> keys.verify_click(token, "https://evil.example/") is None
True
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CLICK_PATH", "OPEN_PATH", "TrackingKeys", "derive_key"]

OPEN_PATH = "/t/o/"  # + token + ".gif"
CLICK_PATH = "/t/c/"  # + token + "?u=" + percent-encoded target
TAG_BYTES = 12  # 96 bits
MAX_TOKEN_CHARS = 64  # a recipient id and a link index never need more; longer is not ours
_OPEN, _CLICK = 1, 2
_TOKEN_CHARS = re.compile(rf"[A-Za-z0-9_-]{{{TAG_BYTES + 2},{MAX_TOKEN_CHARS}}}")


def derive_key(secret: str) -> bytes:
    """The 32-byte tracking MAC key for ``secret`` (HKDF-SHA256, labelled for tracking only)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"postroom-tracking", info=b"postroom tracking v1").derive(
        secret.encode("utf-8")
    )


@dataclass(frozen=True)
class TrackingKeys:
    """Makes tokens under ``current``; accepts tokens under ``current`` or any of ``previous``."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def from_secret(cls, secret: str, previous: Iterable[str] = ()) -> TrackingKeys:
        """Keys for ``security.secret_key`` (and ``security.previous_keys``, still accepted)."""
        return cls(derive_key(secret), tuple(derive_key(p) for p in previous if p != secret))

    # ------------------------------------------------------------------ making

    def open_token(self, recipient_id: int) -> str:
        body = bytes([_OPEN]) + _varint(recipient_id)
        return _encode(body + _tag(self.current, body))

    def click_token(self, recipient_id: int, link: int, url: str) -> str:
        body = bytes([_CLICK]) + _varint(recipient_id) + _varint(link)
        return _encode(body + _tag(self.current, body + url.encode("utf-8")))

    def open_url(self, base: str, recipient_id: int) -> str:
        """``{base}/t/o/{token}.gif``: the pixel of recipient ``recipient_id``'s copy."""
        return f"{base.rstrip('/')}{OPEN_PATH}{self.open_token(recipient_id)}.gif"

    def click_url(self, base: str, recipient_id: int, link: int, url: str) -> str:
        """``{base}/t/c/{token}?u={url}``: link number ``link`` (from 0) of that copy, going to ``url``."""
        return f"{base.rstrip('/')}{CLICK_PATH}{self.click_token(recipient_id, link, url)}?u={quote(url, safe='')}"

    # ------------------------------------------------------------------ checking

    def verify_open(self, token: str) -> int | None:
        """The recipient id of a genuine open token; None for anything else (tampered,
        truncated, made under another key, a click token, garbage)."""
        raw = _decode(token)
        if raw is None or raw[0] != _OPEN:
            return None
        fields = _read_varints(raw[1:-TAG_BYTES], 1)
        if fields is None or not self._genuine(raw[:-TAG_BYTES], raw[-TAG_BYTES:]):
            return None
        return fields[0]

    def verify_click(self, token: str, url: str) -> tuple[int, int] | None:
        """``(recipient_id, link)`` if ``token`` is a genuine click token for exactly ``url``
        (an http or https URL); None otherwise."""
        raw = _decode(token)
        if raw is None or raw[0] != _CLICK or not url.lower().startswith(("http://", "https://")):
            return None
        fields = _read_varints(raw[1:-TAG_BYTES], 2)
        try:
            signed = raw[:-TAG_BYTES] + url.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no URL we wrote
            return None
        if fields is None or not self._genuine(signed, raw[-TAG_BYTES:]):
            return None
        return fields[0], fields[1]

    def _genuine(self, signed: bytes, tag: bytes) -> bool:
        ok = False
        for key in (self.current, *self.previous):  # every key is tried: the time does not say which matched
            ok |= hmac.compare_digest(_tag(key, signed), tag)
        return ok


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG_BYTES]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(token: str) -> bytes | None:
    """The bytes of a canonical base64url token (no padding, no stray characters), or None."""
    if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token) or len(token) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if _encode(raw) != token:  # unused low bits set: another spelling of the same bytes
        return None
    return raw if len(raw) > TAG_BYTES + 1 else None


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"tracking ids are never negative, not {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varints(data: bytes, count: int) -> tuple[int, ...] | None:
    """Exactly ``count`` minimal varints filling ``data``, or None."""
    values: list[int] = []
    n = shift = 0
    for i, byte in enumerate(data):
        if shift > 63:
            return None
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and shift > 7:  # a redundant zero byte: not how we write numbers
                return None
            values.append(n)
            n = shift = 0
        elif i == len(data) - 1:
            return None
    return tuple(values) if len(values) == count else None
