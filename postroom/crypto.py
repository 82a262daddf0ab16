"""Encryption of stored secrets (passwords, refresh tokens) at rest.

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) under a key derived from ``security.secret_key`` with
HKDF, so the configured key can be any long random string. Losing or changing
the secret key makes stored credentials unreadable: accounts then need to be
reconnected, which :class:`SecretError` reports in one sentence.

To change the key without that, the old one goes into ``security.previous_keys``:
secrets sealed under a previous key stay readable, everything is sealed under the
current one, and :meth:`SecretBox.reseal` (``postroom keys rotate``) moves stored
secrets over (docs/security.md has the whole procedure).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from postroom.config import SecurityConfig
from postroom.errors import UserError


class SecretError(UserError):
    """A stored secret cannot be decrypted with the configured key or any previous key."""


def _fernet(secret_key: str) -> Fernet:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"postroom-secrets-v1", info=b"fernet").derive(
        secret_key.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(raw))


class SecretBox:
    """Encrypts small JSON-able secrets under the current key; decrypts under it or a previous one."""

    def __init__(self, secret_key: str, previous_keys: Sequence[str] = ()) -> None:
        self._current = _fernet(secret_key)
        self._any = MultiFernet([self._current, *(_fernet(k) for k in previous_keys)])

    @classmethod
    def for_config(cls, security: SecurityConfig) -> SecretBox:
        return cls(security.key(), security.previous_keys)

    def seal(self, value: dict[str, Any]) -> bytes:
        return self._current.encrypt(json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            return json.loads(self._any.decrypt(bytes(token)))  # type: ignore[no-any-return]
        except InvalidToken:
            raise SecretError(
                "A stored credential cannot be decrypted with the configured security.secret_key "
                "(nor any of security.previous_keys); restore the original key or reconnect the account."
            ) from None

    def reseal(self, token: bytes) -> bytes | None:
        """``token`` sealed under the current key, or None if it already is; the secret inside
        is not changed. Raises :class:`SecretError` if no key opens it."""
        token = bytes(token)
        try:
            self._current.decrypt(token)
            return None
        except InvalidToken:
            pass
        try:
            return self._any.rotate(token)
        except InvalidToken:
            raise SecretError(
                "A stored credential cannot be decrypted with security.secret_key or any of security.previous_keys."
            ) from None
