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


def test_previous_keys_stay_readable_and_everything_is_sealed_under_the_current_key() -> None:
    old, new = "the-old-secret-key-0123456789", "the-new-secret-key-9876543210"
    under_old = SecretBox(old).seal({"password": "p"})
    box = SecretBox(new, previous_keys=[old])
    assert box.open(under_old) == {"password": "p"}
    sealed = box.seal({"password": "q"})
    assert SecretBox(new).open(sealed) == {"password": "q"}  # the current key alone opens what is sealed now
    with pytest.raises(SecretError, match=r"nor any of security\.previous_keys"):
        SecretBox(old).open(sealed)


def test_reseal_moves_a_secret_to_the_current_key_and_leaves_current_ones_alone() -> None:
    old, new = "the-old-secret-key-0123456789", "the-new-secret-key-9876543210"
    box = SecretBox(new, previous_keys=[old])
    moved = box.reseal(SecretBox(old).seal({"refresh_token": "rt"}))
    assert moved is not None and SecretBox(new).open(moved) == {"refresh_token": "rt"}
    assert box.reseal(moved) is None
    with pytest.raises(SecretError, match=r"cannot be decrypted with security\.secret_key or any of"):
        box.reseal(SecretBox("a-key-nobody-has-any-more-000").seal({"x": 1}))
