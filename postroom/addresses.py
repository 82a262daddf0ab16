"""Email address canonicalisation for matching people across mailboxes.

Two forms:

* :func:`normalise_address` -- the exact address, lower-cased: what we show
  and what we compare a mailbox's own addresses against.
* :func:`canonical_address` -- the key that identifies a *person*: used to
  match messages to applicants however they spelled their address.

Choices (deliberate, documented because they trade precision for recall):

* The local part is lower-cased. RFC 5321 allows case-sensitive local parts,
  but no mainstream provider uses them, and applicants type their address in
  every case imaginable.
* ``+tag`` sub-addressing is dropped for **every** domain, not only those
  known to support it (Gmail, Outlook.com, Fastmail, iCloud, most Postfix and
  Exchange setups). A false merge needs two different people at one domain
  whose addresses differ only after a ``+``, which in practice does not occur.
* Dots in the local part are removed only for gmail.com / googlemail.com,
  where Google documents them as insignificant; googlemail.com maps to gmail.com.
* Punycode domain labels are decoded to Unicode, so ``xn--bcher-kva.de`` and
  ``bücher.de`` give the same key.

>>> canonical_address('"Jane Doe" <Jane.Doe+jobs@GoogleMail.com>')
'janedoe@gmail.com'
>>> canonical_address("not an address") is None
True
"""

from __future__ import annotations

import functools
import re
from email.utils import parseaddr

__all__ = ["canonical_address", "normalise_address"]

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_DOT_ATOM_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+(?:\.[^\s.\"(),:;<>@\[\\\]]+)*")
_LABEL_RE = re.compile(r"[^\s\"(),:;<>@\[\\\]./]+")


def _addr_spec(addr: str) -> str:
    """The addr-spec inside ``addr`` (display names, brackets, mailto: removed)."""
    addr = addr.strip()
    if addr[:7].lower() == "mailto:":
        addr = addr[7:].strip()
    if any(c in addr for c in '<>"( \t'):
        addr = parseaddr(addr)[1] if ("<" in addr or "(" in addr or '"' not in addr) else addr
    return addr.strip()


def normalise_address(addr: str) -> str:
    """The exact address, lower-cased, without display name or brackets.

    No validation and no tag stripping: ``"Bob <Bob+X@Example.COM>"`` ->
    ``"bob+x@example.com"``; a string with no address gives ``""`` or the
    lower-cased input.
    """
    return _addr_spec(addr).lower()


def _split(spec: str) -> tuple[str, str] | None:
    """``(local, domain)`` for a syntactically plausible addr-spec."""
    if spec.startswith('"'):
        close = spec.find('"@', 1)
        if close == -1:
            return None
        local, domain = spec[: close + 1], spec[close + 2 :]
        inner = local[1:-1].replace('\\"', '"')
        if not inner:
            return None
        local = inner if _DOT_ATOM_RE.fullmatch(inner) else local
    else:
        local, sep, domain = spec.rpartition("@")
        if not sep or not local or not _DOT_ATOM_RE.fullmatch(local):
            return None
    domain = domain.rstrip(".")
    if domain.startswith("[") and domain.endswith("]"):  # address literal
        return local, domain
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    return local, domain


def _unicode_domain(domain: str) -> str:
    if "xn--" not in domain:
        return domain
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except UnicodeError:
                pass
        labels.append(label)
    return ".".join(labels)


@functools.lru_cache(maxsize=65536)  # the same few thousand people recur on every message
def canonical_address(addr: str) -> str | None:
    """The person-identifying key for ``addr``, or None if it is not an address.

    ``"Jane.Doe+jobs@GoogleMail.com"`` -> ``"janedoe@gmail.com"``;
    ``"Bob+x@Example.com."`` -> ``"bob@example.com"``.
    """
    if not addr:
        return None
    parts = _split(_addr_spec(addr))
    if parts is None:
        return None
    local, domain = parts
    local = local.lower()
    domain = _unicode_domain(domain.lower())
    if not local.startswith('"'):
        base = local.split("+", 1)[0]
        local = base or local
        if domain in _GMAIL_DOMAINS:
            local = local.replace(".", "") or local
            domain = "gmail.com"
    return f"{local}@{domain}"
