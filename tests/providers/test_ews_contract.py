"""The shared provider contract against the EWS stand-in, driven by the real exchangelib."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from providers.ews import EwsProvider
from tests.providers.contract import ProviderContract, ProviderEnv
from tests.standins.ews_rig import EwsRig, ews_rig

PEER = "ann@outside.example"  # outside the tenant: kept in the stand-in's outbound


def make_env(rig: EwsRig) -> ProviderEnv:
    box = rig.ews.mailbox(rig.address)

    def revoked_token() -> EwsProvider:
        token = secrets.token_urlsafe(16)
        rig.ews.add_token(token, rig.address)
        rig.ews.revoke_token(token)
        return rig.token_provider(token)

    return ProviderEnv(
        provider=rig.provider(),
        address=rig.address,
        deliver=rig.deliver,
        expunge=lambda rid, role: box.delete(rid),
        set_flags=lambda rid, flags, role: box.set_flags(rid, flags),
        raw_messages=rig.raw_messages,
        bad_password_provider=lambda: rig.provider("not-the-password"),
        revoked_token_provider=revoked_token,
        peer=PEER,
        peer_inbox=lambda: [raw for _, recipients, raw in rig.ews.outbound if PEER in recipients],
    )


class TestEwsContract(ProviderContract):
    @pytest.fixture
    def provider_env(self) -> Iterator[ProviderEnv]:
        with ews_rig(https=True) as rig:
            env = make_env(rig)
            yield env
            env.provider.close()
