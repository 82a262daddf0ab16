"""Signing and verifying webhooks per the Standard Webhooks spec: pure functions, no I/O.

Postroom announces events (``inbound.processed``, ``message.bounced``, …) to the URLs an
organisation subscribes, and signs every delivery the way https://www.standardwebhooks.com
specifies, so a receiver can check it with any of that project's libraries:

* The **secret** is ``whsec_`` followed by the base64 of 24 to 64 random bytes (the spec's
  192 to 512 bits). The HMAC key is the *decoded* bytes, never the base64 text. It is shown to
  the subscriber once, when the subscription is made; each endpoint has its own.
* The **signed content** is ``{webhook-id}.{webhook-timestamp}.{body}``: the message id, the
  attempt's Unix time in seconds and the raw body bytes, joined by full stops. The id is the
  same on every retry of one event (receivers use it as an idempotency key); the timestamp is
  the attempt's, so each retry is signed afresh. Neither may contain a full stop.
* The **signature** is ``v1,`` followed by the base64 of HMAC-SHA256 over that content.
* Three **headers** carry it: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.
  The last is a space-separated list, one signature per secret: while a secret is being
  rotated, a delivery is signed with the new secret and the old one, and a receiver that knows
  either accepts it (zero-downtime rotation).

A receiver (:func:`verify`) accepts a delivery when its timestamp is within ``tolerance``
seconds of its own clock, in either direction (a replayed request is refused), and one of the
``v1`` signatures in the header matches one computed with one of its secrets, compared in
constant time. Entries of other versions (``v1a`` is the spec's asymmetric scheme) are
skipped. Anything else raises :class:`WebhookVerificationError`.

The spec's test vector, which every Standard Webhooks library checks:

>>> sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
...      b'{"test": 2432232314}')
'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
>>> h = headers(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "msg_1", 1700000000, b"{}")
>>> sorted(h)
['webhook-id', 'webhook-signature', 'webhook-timestamp']
>>> verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, b"{}", now=1700000060)
>>> verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, b"{}", now=1700000301)
Traceback (most recent call last):
  ...
postroom.webhook_signing.WebhookVerificationError: webhook-timestamp is 301 seconds from now; the tolerance is 300.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Iterable, Mapping

__all__ = [
    "DEFAULT_TOLERANCE",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "headers",
    "new_secret",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds either side of the receiver's clock, as the reference libraries use
MIN_SECRET_BYTES = 24  # 192 bits, the spec's floor
MAX_SECRET_BYTES = 64  # 512 bits, the spec's ceiling
_VERSION = "v1"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookVerificationError(Exception):
    """Raised by :func:`verify` when a delivery cannot be trusted: a header is missing or
    malformed, its timestamp is outside the tolerance, or no signature matches any secret.
    The message says which; a receiver answers it with 401 and processes nothing."""


def new_secret(nbytes: int = 32) -> str:
    """A fresh signing secret: ``whsec_`` + base64 of ``nbytes`` random bytes (24 to 64)."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"a webhook secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {nbytes}")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode("ascii")


def _key(secret: str) -> bytes:
    """The HMAC key in a secret: the base64 after ``whsec_`` (the prefix may be left off, as
    the reference libraries allow), decoded. A malformed secret is a setup mistake, not a bad
    delivery, so it raises ValueError without echoing the secret."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret must hold at least {MIN_SECRET_BYTES} bytes, this one has {len(key)}")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _check_id(msg_id: str) -> None:
    if not msg_id or "." in msg_id or any(c.isspace() for c in msg_id):
        raise ValueError(f"a webhook id must be non-empty, without full stops or spaces: {msg_id!r}")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    _check_id(msg_id)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError(f"a webhook timestamp is a non-negative integer of Unix seconds, not {timestamp!r}")
    digest = _digest(_key(secret), msg_id, timestamp, body)
    return f"{_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _as_list(secret_or_secrets: str | Iterable[str]) -> list[str]:
    found = [secret_or_secrets] if isinstance(secret_or_secrets, str) else list(secret_or_secrets)
    if not found:
        raise ValueError("at least one webhook secret is needed")
    return found


def headers(secret_or_secrets: str | Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a delivery. With several secrets (the current one first, then the
    one being retired), ``webhook-signature`` carries one signature per secret, in that order."""
    signatures = [sign(secret, msg_id, timestamp, body) for secret in _as_list(secret_or_secrets)]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def _header(received: Mapping[str, str], name: str) -> str:
    """A header by name, whatever its case (HTTP header names are case-insensitive)."""
    for key, value in received.items():
        if key.lower() == name:
            return value.strip()
    raise WebhookVerificationError(f"the {name} header is missing.")


def verify(
    secrets: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return quietly when ``headers`` carry a valid signature of ``body`` by one of
    ``secrets``, made within ``tolerance`` seconds of ``now`` (Unix seconds); otherwise raise
    :class:`WebhookVerificationError`. ``body`` must be the raw bytes received, not re-serialised JSON."""
    keys = [_key(secret) for secret in _as_list(secrets)]
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signature = _header(headers, "webhook-signature")
    if not msg_id:
        raise WebhookVerificationError("the webhook-id header is empty.")
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError("webhook-timestamp is not an integer of Unix seconds.")
    skew = int(now) - int(stamp)
    if abs(skew) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {abs(skew)} seconds from now; the tolerance is {tolerance}."
        )
    offered: list[bytes] = []
    for entry in signature.split():
        version, _, encoded = entry.partition(",")
        if version != _VERSION:
            continue  # v1a (asymmetric) or a future scheme: not ours to check
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not offered:
        raise WebhookVerificationError("webhook-signature holds no v1 signature.")
    matched = False
    for key in keys:
        expected = _digest(key, msg_id, stamp, body)
        for candidate in offered:
            # Every pair is compared, each in constant time: how long this takes says nothing
            # about which bytes of a forged signature were right.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no webhook-signature matches a secret of this endpoint.")
