"""Tracking URLs carry signed tokens: only Postroom can make them, none can be bent to another
recipient or another destination, and nothing in them is readable."""

from __future__ import annotations

import base64
import doctest
import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import pytest

import postroom.tracking_tokens
from postroom.tracking_tokens import TrackingKeys, derive_key

SECRET = "test-secret-key-0123456789abcdef"
BASE = "https://t.example.com"
KEYS = TrackingKeys.from_secret(SECRET)


def _open_token(url: str) -> str:
    return urlsplit(url).path.removeprefix("/t/o/").removesuffix(".gif")


def _click_parts(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.path.removeprefix("/t/c/"), parse_qs(parts.query)["u"][0]


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(postroom.tracking_tokens).failed == 0


@pytest.mark.parametrize("recipient_id", [1, 127, 128, 16383, 16384, 2**31, 2**62])
def test_open_urls_round_trip_and_stay_short(recipient_id: int) -> None:
    url = KEYS.open_url(BASE + "/", recipient_id)  # a trailing slash on the base is not doubled
    assert url.startswith(BASE + "/t/o/") and url.endswith(".gif")
    token = _open_token(url)
    assert KEYS.verify_open(token) == recipient_id
    assert len(token) <= 32 and token.isascii() and "=" not in token


@pytest.mark.parametrize(
    "target",
    [
        "https://example.com/jobs/42?ref=mail&x=a+b",
        "http://example.com/path with space/",
        "https://exämple.com/caf\u00e9?q=%20already-encoded",
        "https://example.com/#section",
    ],
)
def test_click_urls_carry_their_target_and_bind_it(target: str) -> None:
    url = KEYS.click_url(BASE, 7, 3, target)
    token, carried = _click_parts(url)
    assert carried == target  # what a browser sends back decodes to exactly the original
    assert KEYS.verify_click(token, carried) == (7, 3)
    assert KEYS.verify_click(token, "https://evil.example/") is None  # no open redirect
    assert KEYS.verify_click(token, target + "x") is None


def test_tokens_are_not_readable_data() -> None:
    token = KEYS.click_token(12345, 2, "https://example.com/secret-offer")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"{" not in raw and b"example" not in raw and b"12345" not in raw
    assert len(raw) == 1 + 2 + 1 + 12  # kind, varint id, varint link, 96-bit tag


def test_tampered_truncated_foreign_and_garbage_tokens_are_refused() -> None:
    token = KEYS.open_token(42)
    flipped = [token[:i] + ("A" if c != "A" else "B") + token[i + 1 :] for i, c in enumerate(token)]
    assert all(KEYS.verify_open(t) is None for t in flipped)
    assert all(KEYS.verify_open(token[:n]) is None for n in range(len(token)))
    assert KEYS.verify_open(token + "A") is None
    assert TrackingKeys.from_secret("another-secret-key-0123456789").verify_open(token) is None
    for junk in [
        "",
        "x",
        "....",
        "a" * 200,
        "../../etc/passwd",
        token + "=",
        token[:5] + "+" + token[6:],
        token[:5] + "/" + token[6:],
        "é" * 20,
    ]:
        assert KEYS.verify_open(junk) is None


def test_another_spelling_of_the_same_bytes_is_refused() -> None:
    token = KEYS.open_token(42)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) % 3 == 2  # the last character carries two unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    assert base64.urlsafe_b64decode(sibling + "=" * (-len(sibling) % 4)) == raw
    assert KEYS.verify_open(sibling) is None


def test_an_open_token_is_not_a_click_token_nor_the_other_way_round() -> None:
    click = KEYS.click_token(42, 0, "https://example.com/")
    assert KEYS.verify_open(click) is None
    assert KEYS.verify_click(KEYS.open_token(42), "https://example.com/") is None


def test_only_web_targets_are_redirected_to_even_when_signed() -> None:
    token = KEYS.click_token(1, 0, "javascript:alert(1)")
    assert KEYS.verify_click(token, "javascript:alert(1)") is None


def test_the_mac_key_is_derived_and_never_the_secret_itself() -> None:
    key = derive_key(SECRET)
    assert key != SECRET.encode() and len(key) == 32
    # a token MAC'd with the raw secret does not pass
    body = bytes([1, 42])
    forged = base64.urlsafe_b64encode(body + hmac.digest(SECRET.encode(), body, hashlib.sha256)[:12]).rstrip(b"=")
    assert KEYS.verify_open(forged.decode()) is None
    assert KEYS.verify_open(KEYS.open_token(42)) == 42


def test_tokens_made_before_a_key_rotation_keep_working() -> None:
    old = TrackingKeys.from_secret("the-old-secret-key-0123456789")
    rotated = TrackingKeys.from_secret(SECRET, previous=["the-old-secret-key-0123456789"])
    assert rotated.verify_open(old.open_token(9)) == 9
    assert rotated.verify_click(old.click_token(9, 1, "https://example.com/"), "https://example.com/") == (9, 1)
    assert old.verify_open(rotated.open_token(9)) is None  # new tokens are made under the new key only


def test_negative_ids_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        KEYS.open_token(-1)
