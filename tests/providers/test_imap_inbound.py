"""What a processing mailbox asks of the IMAP backend, against the rig's Dovecot: a folder's UIDs
with its UIDVALIDITY, folders created when missing (twice is fine), a message found by
Message-ID, and moving by UID MOVE or — with ``disable_move`` — COPY + STORE + UID EXPUNGE."""

from __future__ import annotations

import pytest

from providers.base import RemoteFolder
from providers.common.backend import Backend
from providers.errors import NotSupported
from providers.imap import ImapProvider
from tests.rig.fixtures import Mailbox, make_message


def _seed(box: Mailbox, n: int) -> list[int]:
    return [box.append(make_message(message_id=f"<m{i}@example.org>", subject=f"m{i}")) for i in range(n)]


@pytest.mark.parametrize("disable_move", [False, True])
def test_list_create_find_and_move(mailbox: Mailbox, disable_move: bool) -> None:
    uids = _seed(mailbox, 3)
    provider = ImapProvider.open(mailbox.settings(disable_move=disable_move))
    try:
        inbox = RemoteFolder("INBOX")
        listing = provider.list_ids(inbox)
        assert listing.ids == tuple(str(u) for u in uids) and listing.validity > 0
        done = provider.ensure_folder("Inbound/done")
        assert provider.ensure_folder("Inbound/done") == done == RemoteFolder("Inbound/done")  # ALREADYEXISTS
        assert provider.find_message(inbox, "<m1@example.org>") == str(uids[1])
        assert provider.find_message(inbox, "<nowhere@example.org>") is None

        provider.list_ids(inbox)  # selected afresh
        before = provider.command_count
        provider.move(inbox, [str(uids[0]), str(uids[2])], done)
        assert provider.command_count - before == (3 if disable_move else 1)  # COPY, STORE, UID EXPUNGE | MOVE
        assert provider.list_ids(inbox).ids == (str(uids[1]),)
        assert len(provider.list_ids(done).ids) == 2
        assert provider.list_ids(RemoteFolder("Inbound/done")).validity != 0
    finally:
        provider.close()
    assert mailbox.uids("INBOX") == [uids[1]] and len(mailbox.uids("Inbound/done")) == 2


def test_other_backends_say_not_supported() -> None:
    class Other(Backend):
        pass

    other = Other.__new__(Other)
    with pytest.raises(NotSupported, match="not supported by this backend"):
        other.list_ids(RemoteFolder("INBOX"))
    with pytest.raises(NotSupported):
        other.ensure_folder("processed")
    assert not Other.supports_inbound and ImapProvider.supports_inbound
