"""The shared provider contract against the Gmail stand-in, driven by google-api-python-client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.gmail import GmailProvider
from tests.providers.contract import ProviderContract, ProviderEnv
from tests.standins.gmail_rig import GmailRig, gmail_rig

PEER = "ann@gmail-peer.test"


def make_env(rig: GmailRig) -> ProviderEnv:
    box = rig.standin.mailbox(rig.address)
    peer = rig.standin.add_user(PEER)

    def revoked_token() -> GmailProvider:
        token = rig.standin.grant(rig.address)
        rig.standin.revoke(token)
        return rig.provider(token)

    return ProviderEnv(
        provider=rig.provider(),
        address=rig.address,
        deliver=rig.deliver,
        expunge=lambda rid, role: box.delete(rid),
        set_flags=lambda rid, flags, role: box.set_flags(rid, flags),
        raw_messages=rig.raw_messages,
        bad_password_provider=lambda: rig.provider("1//not-a-grant"),
        revoked_token_provider=revoked_token,
        peer=PEER,
        peer_inbox=lambda: [m.raw for m in peer.by_label("INBOX")],
    )


class TestGmailContract(ProviderContract):
    @pytest.fixture
    def provider_env(self) -> Iterator[ProviderEnv]:
        with gmail_rig() as rig:
            env = make_env(rig)
            yield env
            env.provider.close()
