"""Encryption of stored secrets (passwords, refresh tokens) at rest.

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) under a key derived from ``security.secret_key`` with
HKDF, so the configured key can be any long random string. Losing or changing
the secret key makes stored credentials unreadable: accounts then need to be
reconnected, which :class:`SecretError` reports in one sentence.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretError(Exception):
    """A stored secret cannot be decrypted with the configured key."""


class SecretBox:
    """Encrypts and decrypts small JSON-able secrets with the configured key."""

    def __init__(self, secret_key: str) -> None:
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"postroom-secrets-v1", info=b"fernet").derive(
            secret_key.encode("utf-8")
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(raw))

    def seal(self, value: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            return json.loads(self._fernet.decrypt(bytes(token)))  # type: ignore[no-any-return]
        except InvalidToken:
            raise SecretError(
                "A stored credential cannot be decrypted with the configured security.secret_key; "
                "restore the original key or reconnect the account."
            ) from None
