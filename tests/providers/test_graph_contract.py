"""The shared provider contract against the Graph and identity stand-ins, driven by msal and requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.graph import GraphProvider
from tests.providers.contract import ProviderContract, ProviderEnv
from tests.standins.graph_rig import GraphRig, graph_rig

PEER = "ann@outside.example"  # outside the tenant: kept in the stand-in's outbound


def make_env(rig: GraphRig) -> ProviderEnv:
    box = rig.graph.mailbox(rig.address)

    def revoked_token() -> GraphProvider:
        token = rig.identity.grant(rig.address)
        rig.identity.revoke(token)
        return rig.provider(token)

    return ProviderEnv(
        provider=rig.provider(),
        address=rig.address,
        deliver=rig.deliver,
        expunge=lambda rid, role: box.delete(rid),
        set_flags=lambda rid, flags, role: box.set_flags(rid, flags),
        raw_messages=rig.raw_messages,
        bad_password_provider=lambda: rig.provider("1.AQ-not-a-grant"),
        revoked_token_provider=revoked_token,
        peer=PEER,
        peer_inbox=lambda: [raw for _, recipients, raw in rig.graph.outbound if PEER in recipients],
    )


class TestGraphContract(ProviderContract):
    @pytest.fixture
    def provider_env(self) -> Iterator[ProviderEnv]:
        with graph_rig() as rig:
            env = make_env(rig)
            yield env
            env.provider.close()
