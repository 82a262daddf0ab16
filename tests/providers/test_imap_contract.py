"""The provider contract against real Dovecot + Postfix, in several configurations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from providers.base import Credentials, FolderRole
from providers.imap import ImapProvider
from tests.providers.contract import ProviderContract, ProviderEnv
from tests.rig.fixtures import Mailbox
from tests.rig.mailrig import MailRig

ROLE_FOLDERS = {FolderRole.INBOX: "INBOX", FolderRole.SENT: "Sent", FolderRole.TRASH: "Trash"}

CONFIGS: dict[str, dict[str, Any]] = {
    "plain-password": {},
    "imaps-cafile": {"security": "ssl"},
    "starttls": {"security": "starttls", "smtp_security": "starttls"},
    "xoauth2": {"auth": "XOAUTH2"},
    "oauthbearer": {"auth": "OAUTHBEARER"},
    "no-condstore": {"disable_extensions": ["CONDSTORE", "QRESYNC"]},
    "condstore-no-qresync": {"disable_extensions": ["QRESYNC"]},
    "no-move": {"disable_move": True},
}


def make_env(mailbox: Mailbox, config: dict[str, Any], peer: Mailbox) -> tuple[ProviderEnv, ImapProvider]:
    mailbox.ensure_folders()
    settings = mailbox.settings(**config)
    provider = ImapProvider.open(settings)

    def deliver(raw: bytes, role: FolderRole) -> str:
        return str(mailbox.append(raw, ROLE_FOLDERS[role]))

    def bad_password() -> ImapProvider:
        creds = Credentials(mailbox.address, password="wrong")
        return ImapProvider.open(dataclasses.replace(settings, credentials=creds))

    def revoked_token() -> ImapProvider:
        mailbox.rig.revoke_token(mailbox.token)
        creds = Credentials(mailbox.address, access_token=mailbox.token, oauth_mechanism="OAUTHBEARER")
        return ImapProvider.open(dataclasses.replace(settings, credentials=creds))

    env = ProviderEnv(
        provider=provider,
        address=mailbox.address,
        deliver=deliver,
        expunge=lambda rid, role: mailbox.expunge(int(rid), ROLE_FOLDERS[role]),
        set_flags=lambda rid, flags, role: mailbox.set_flags(int(rid), flags, ROLE_FOLDERS[role]),
        raw_messages=lambda role: list(mailbox.fetch_raw(ROLE_FOLDERS[role]).values()),
        bad_password_provider=bad_password,
        revoked_token_provider=revoked_token,
        peer=peer.address,
        peer_inbox=lambda: list(peer.fetch_raw("INBOX").values()),
    )
    return env, provider


@pytest.fixture(scope="module")
def peer(mail_rig: MailRig) -> Mailbox:
    """One recipient for every configuration's sends (messages are told apart by Message-ID)."""
    address = mail_rig.free_users.pop()  # type: ignore[attr-defined]
    return Mailbox(mail_rig, address, mail_rig.users[address], token="")


class TestImapContract(ProviderContract):
    @pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
    def provider_env(self, request: pytest.FixtureRequest, mailbox: Mailbox, peer: Mailbox) -> Iterator[ProviderEnv]:
        env, provider = make_env(mailbox, CONFIGS[request.param], peer)
        yield env
        provider.close()
