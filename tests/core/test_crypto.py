"""Stored credentials are encrypted at rest and unreadable with another key."""

from __future__ import annotations

import pytest

from postroom.crypto import SecretBox, SecretError


def test_secrets_round_trip_and_never_appear_in_clear() -> None:
    box = SecretBox("a-long-secret-key-for-tests")
    sealed = box.seal({"username": "alice", "password": "hunter2-very-secret"})
    assert b"hunter2" not in sealed and b"alice" not in sealed
    assert box.open(sealed) == {"username": "alice", "password": "hunter2-very-secret"}


def test_wrong_key_gives_a_clear_error() -> None:
    sealed = SecretBox("a-long-secret-key-for-tests").seal({"password": "x"})
    with pytest.raises(SecretError, match=r"cannot be decrypted with the configured security\.secret_key"):
        SecretBox("another-long-secret-key-xx").open(sealed)
