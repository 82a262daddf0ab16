"""Reply identifiers: what lets a reply find the message it answers when its In-Reply-To and
References are gone (forwarded, written on a phone, sent from another address).

Every message sent from Postroom carries two, both exact (never a guess from the subject's
words):

* a **reply token** in its Reply-To, as a plus-address: ``alice+k7q2...@example.com`` (or the
  configured processing address). 20 random characters (100 bits): opaque and unguessable,
  never a database id. A reply addressed to it names the message.
* a **short id** in its subject: ``[k3x9q2] Your interview``. Six characters, letters and at
  least one digit; it counts only when it is one Postroom gave out.

>>> token = new_reply_token()
>>> plus_address("alice@example.com", token) == f"alice+{token}@example.com"
True
>>> reply_tokens([f"Alice+{token.upper()}@Example.com", "bob+news@example.com"]) == [token]
True
>>> short_ids("Re: [k3x9q2] Your interview [urgent]")
['k3x9q2']
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
TOKEN_LENGTH = 20
_TOKEN = re.compile(rf"[a-z2-7]{{{TOKEN_LENGTH}}}")
_SHORT_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l/1/o/0 to misread
_SHORT_ID = re.compile(r"\[([a-z0-9]{6})\]", re.IGNORECASE)

REPLY_KEY = "reply:"  # thread key of a reply token
SHORT_KEY = "short:"  # thread key of a short id


def new_reply_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def new_short_id() -> str:
    """Six characters with at least one letter and one digit, so no word looks like one."""
    while True:
        candidate = "".join(secrets.choice(_SHORT_ALPHABET) for _ in range(6))
        if any(c.isdigit() for c in candidate) and any(c.isalpha() for c in candidate):
            return candidate


def plus_address(address: str, token: str) -> str:
    """``alice@example.com`` → ``alice+<token>@example.com``."""
    local, _, domain = address.rpartition("@")
    return f"{local}+{token}@{domain}"


def reply_tokens(addresses: Iterable[str]) -> list[str]:
    """The reply tokens in these addresses' plus tags (lower-cased, in order, once each)."""
    found: dict[str, None] = {}
    for address in addresses:
        local = address.rpartition("@")[0]
        if "+" in local:
            tag = local.rpartition("+")[2].lower()
            if _TOKEN.fullmatch(tag):
                found[tag] = None
    return list(found)


def short_ids(subject: str) -> list[str]:
    """The bracketed six-character ids of a subject that could be Postroom's (lower-cased)."""
    found = dict.fromkeys(m.lower() for m in _SHORT_ID.findall(subject))
    return [s for s in found if any(c.isdigit() for c in s) and any(c.isalpha() for c in s)]


def with_short_id(subject: str, short_id: str) -> str:
    """The subject with ``[short_id]`` in front, unless it already carries that id."""
    if short_id in short_ids(subject):
        return subject
    return f"[{short_id}] {subject}".rstrip()


def identifier_keys(addresses: Iterable[str], subject: str) -> tuple[str, ...]:
    """Thread keys of the reply identifiers a message carries. They join a thread only where
    Postroom has recorded them for a message it sent (:mod:`sync.threads`)."""
    return tuple(REPLY_KEY + t for t in reply_tokens(addresses)) + tuple(SHORT_KEY + s for s in short_ids(subject))


def is_identifier_key(key: str) -> bool:
    return key.startswith((REPLY_KEY, SHORT_KEY))
