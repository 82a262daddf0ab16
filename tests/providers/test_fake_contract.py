"""The shared provider contract against the in-memory fake (tests/rig/fake_provider.py): the
fake the engine contract runs beside the real backends behaves as a backend must."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.base import FolderRole, MailProvider, ProviderFactory
from providers.errors import CursorInvalidError
from tests.providers.contract import ProviderContract, ProviderEnv
from tests.rig.fake_provider import FakeProvider, FakeServer

ADDRESS = "rita@fake.test"
PEER = "ann@fake.test"


def make_env(server: FakeServer) -> ProviderEnv:
    box = server.add_mailbox(ADDRESS, "Spring2026!")
    peer = server.add_mailbox(PEER)
    return ProviderEnv(
        provider=FakeProvider.open(server.settings(ADDRESS)),
        address=ADDRESS,
        deliver=lambda raw, role: box.deliver(raw, role),
        expunge=lambda rid, role: box.remove(rid, role),
        set_flags=lambda rid, flags, role: box.set_flags(rid, flags, role),
        raw_messages=lambda role: [m.raw for m in box.messages(role)],
        bad_password_provider=lambda: FakeProvider.open(server.settings(ADDRESS, "not-the-password")),
        revoked_token_provider=None,  # the fake logs in with a password only
        peer=PEER,
        peer_inbox=lambda: [m.raw for m in peer.messages(FolderRole.INBOX)],
    )


class TestFakeContract(ProviderContract):
    @pytest.fixture
    def provider_env(self) -> Iterator[ProviderEnv]:
        with FakeServer().running() as server:
            env = make_env(server)
            yield env
            env.provider.close()


def test_the_fake_is_a_backend_as_the_registry_and_the_engine_see_one() -> None:
    with FakeServer().running() as server:
        env = make_env(server)
        assert isinstance(FakeProvider, ProviderFactory) and isinstance(env.provider, MailProvider)


def test_an_expired_cursor_is_invalid_but_remote_ids_stay() -> None:
    """What the engine contract's "expire the cursor" does to the fake: a new epoch per folder."""
    with FakeServer().running() as server:
        env = make_env(server)
        kept = env.deliver(b"Message-ID: <kept@fake.test>\r\nSubject: kept\r\n\r\nbody\r\n", FolderRole.INBOX)
        (inbox,) = [f for f in env.provider.list_folders() if f.role == FolderRole.INBOX]
        first = env.provider.fetch_changes(inbox, None)
        server.mailbox(ADDRESS).expire_cursors()
        with pytest.raises(CursorInvalidError):
            env.provider.fetch_changes(inbox, first.cursor)
        assert env.provider.fetch_changes(inbox, None).new == (kept,)
