"""The contract every mail backend must pass, written once and run per backend.

A backend's test module subclasses :class:`ProviderContract` and defines a
``provider_env`` fixture returning a :class:`ProviderEnv`: an opened provider plus
server-side helpers that do not go through the provider (deliver, expunge, set
flags, read a folder), and factories for providers with bad credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from providers.base import ChangeSet, FolderRole, MailProvider, OutgoingMessage, RemoteFolder
from providers.errors import AuthError, CursorInvalidError, NotSupported
from tests.rig.messages import make_message, new_message_id


@dataclass
class ProviderEnv:
    provider: MailProvider
    address: str  # the account's own address (a send to it lands in its inbox)
    deliver: Callable[[bytes, FolderRole], str]  # -> remote id
    expunge: Callable[[str, FolderRole], None]
    set_flags: Callable[[str, frozenset[str], FolderRole], None]
    raw_messages: Callable[[FolderRole], list[bytes]]  # every message in the folder, server-side
    bad_password_provider: Callable[[], MailProvider]
    revoked_token_provider: Callable[[], MailProvider] | None
    peer: str  # another address the provider can send to
    peer_inbox: Callable[[], list[bytes]]  # what reached the peer, server-side
    seen_flag: str = "\\Seen"


def _norm(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


class ProviderContract:
    """Behaviour a user would notice; subclasses provide ``provider_env``."""

    @pytest.fixture
    def env(self, provider_env: ProviderEnv) -> ProviderEnv:
        return provider_env

    def folder(self, env: ProviderEnv, role: FolderRole) -> RemoteFolder:
        folders = {f.role: f for f in env.provider.list_folders() if f.role is not None}
        assert role in folders, f"no {role} folder in {folders}"
        return folders[role]

    def changes(self, env: ProviderEnv, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        return env.provider.fetch_changes(folder, cursor)

    # -------------------------------------------------------------- folders
    def test_folders_with_roles(self, env: ProviderEnv) -> None:
        roles = {f.role for f in env.provider.list_folders()}
        assert {FolderRole.INBOX, FolderRole.SENT, FolderRole.TRASH} <= roles

    # -------------------------------------------------------------- sync
    def test_initial_fetch_lists_every_message_once(self, env: ProviderEnv) -> None:
        ids = [env.deliver(make_message(subject=f"initial {i}"), FolderRole.INBOX) for i in range(5)]
        changes = self.changes(env, self.folder(env, FolderRole.INBOX), None)
        assert sorted(changes.new) == sorted(ids)
        assert len(set(changes.new)) == len(changes.new)
        assert changes.cursor

    def test_headers_carry_message_id_and_subject(self, env: ProviderEnv) -> None:
        mid, parent = new_message_id(), new_message_id()
        raw = make_message(message_id=mid, subject="Interview on Tuesday", in_reply_to=parent, references=[parent])
        env.deliver(raw, FolderRole.INBOX)
        inbox = self.folder(env, FolderRole.INBOX)
        changes = self.changes(env, inbox, None)
        (msg,) = list(env.provider.fetch_headers(inbox, changes.new))
        assert mid.encode() in msg.headers
        assert b"Subject: Interview on Tuesday" in msg.headers
        assert f"In-Reply-To: {parent}".encode() in msg.headers
        assert msg.size and msg.size >= len(raw) - raw.count(b"\n")
        assert msg.internal_date is not None

    def test_new_message_appears_in_next_change_set_only(self, env: ProviderEnv) -> None:
        env.deliver(make_message(), FolderRole.INBOX)
        inbox = self.folder(env, FolderRole.INBOX)
        first = self.changes(env, inbox, None)
        new_id = env.deliver(make_message(subject="fresh"), FolderRole.INBOX)
        second = self.changes(env, inbox, first.cursor)
        assert second.new == (new_id,)
        assert not second.removed
        third = self.changes(env, inbox, second.cursor)
        assert third.empty

    def test_no_change_pass_is_empty(self, env: ProviderEnv) -> None:
        for _ in range(3):
            env.deliver(make_message(), FolderRole.INBOX)
        inbox = self.folder(env, FolderRole.INBOX)
        first = self.changes(env, inbox, None)
        again = self.changes(env, inbox, first.cursor)
        assert again.empty, again

    def test_flag_change_reported(self, env: ProviderEnv) -> None:
        target = env.deliver(make_message(), FolderRole.INBOX)
        env.deliver(make_message(), FolderRole.INBOX)
        inbox = self.folder(env, FolderRole.INBOX)
        first = self.changes(env, inbox, None)
        env.set_flags(target, frozenset({env.seen_flag, "\\Flagged"}), FolderRole.INBOX)
        second = self.changes(env, inbox, first.cursor)
        reported = {u.remote_id: u.flags for u in second.changed}
        assert target in reported
        assert {env.seen_flag, "\\Flagged"} <= reported[target]
        # no other message is reported as new; a backend whose change feed cannot tell a
        # changed message from a new one (Graph's delta) may list the changed one in
        # ``new`` too: the engine skips ids it has already indexed
        assert set(second.new) <= {target}

    def test_expunge_reported(self, env: ProviderEnv) -> None:
        keep = env.deliver(make_message(), FolderRole.INBOX)
        gone = env.deliver(make_message(), FolderRole.INBOX)
        inbox = self.folder(env, FolderRole.INBOX)
        first = self.changes(env, inbox, None)
        env.expunge(gone, FolderRole.INBOX)
        second = self.changes(env, inbox, first.cursor)
        if second.present is not None:
            assert gone not in second.present and keep in second.present
        else:
            assert second.removed == (gone,)
        assert not second.new
        assert self.changes(env, inbox, second.cursor).empty

    def test_garbage_cursor_is_invalid(self, env: ProviderEnv) -> None:
        inbox = self.folder(env, FolderRole.INBOX)
        with pytest.raises(CursorInvalidError):
            self.changes(env, inbox, "not a cursor")

    # -------------------------------------------------------------- bodies
    def test_bodies_are_exact_and_vanished_ids_skipped(self, env: ProviderEnv) -> None:
        raws = [make_message(subject=f"body {i}", body=f"line one\nline {i}\n") for i in range(3)]
        ids = [env.deliver(raw, FolderRole.INBOX) for raw in raws]
        env.expunge(ids[1], FolderRole.INBOX)
        inbox = self.folder(env, FolderRole.INBOX)
        bodies = env.provider.fetch_bodies(inbox, ids)
        assert set(bodies) == {ids[0], ids[2]}
        assert _norm(bodies[ids[0]]) == _norm(raws[0])
        assert _norm(bodies[ids[2]]) == _norm(raws[2])
        headers = list(env.provider.fetch_headers(inbox, ids))
        assert [m.remote_id for m in headers] == [ids[0], ids[2]]

    # -------------------------------------------------------------- writing
    def test_send_delivers_and_sent_copy_stored(self, env: ProviderEnv) -> None:
        mid = new_message_id()
        raw = make_message(message_id=mid, from_=env.address, to=env.address, subject="Your application")
        result = env.provider.send(OutgoingMessage(raw, env.address, (env.address,), mid))
        assert result.message_id == mid and not result.refused
        _wait(lambda: any(mid.encode() in m for m in env.raw_messages(FolderRole.INBOX)))
        env.provider.store_sent_copy(raw)
        sent = env.raw_messages(FolderRole.SENT)
        assert [m for m in sent if mid.encode() in m]

    def test_send_without_copy_delivers_and_sent_gets_only_the_copy_stored(self, env: ProviderEnv) -> None:
        mid = new_message_id()
        raw = make_message(message_id=mid, from_=env.address, to=env.peer, subject="Your interview")
        result = env.provider.send_without_copy(OutgoingMessage(raw, env.address, (env.peer,), mid))
        assert result.message_id == mid and not result.refused
        _wait(lambda: any(mid.encode() in m for m in env.peer_inbox()))
        if result.sent_copy_stored:  # a copy may be in Sent (a server that files submitted mail): removed so
            found = env.provider.find_sent(mid)
            if found is not None:
                env.provider.delete(self.folder(env, FolderRole.SENT), [found], for_good=True)
        assert not [m for m in env.raw_messages(FolderRole.SENT) if mid.encode() in m]
        env.provider.store_sent_copy(raw)
        assert len([m for m in env.raw_messages(FolderRole.SENT) if mid.encode() in m]) == 1

    def test_delete_moves_to_trash_or_removes_for_good(self, env: ProviderEnv) -> None:
        inbox, trash = self.folder(env, FolderRole.INBOX), self.folder(env, FolderRole.TRASH)
        binned = env.deliver(make_message(subject="to the bin"), FolderRole.INBOX)
        purged = env.deliver(make_message(subject="gone for good"), FolderRole.INBOX)
        vanished = env.deliver(make_message(subject="vanished meanwhile"), FolderRole.INBOX)
        env.deliver(make_message(subject="stays"), FolderRole.INBOX)
        env.expunge(vanished, FolderRole.INBOX)
        env.provider.delete(inbox, [binned, vanished])
        env.provider.delete(inbox, [purged], for_good=True)
        assert [b"stays" in m for m in env.raw_messages(FolderRole.INBOX)] == [True]
        in_trash = env.raw_messages(FolderRole.TRASH)
        assert [b"to the bin" in m for m in in_trash] == [True]
        (trashed,) = self.changes(env, trash, None).new
        env.provider.delete(trash, [trashed], for_good=True)
        assert env.raw_messages(FolderRole.TRASH) == []

    def test_find_sent_finds_the_copy_in_sent_by_message_id_only(self, env: ProviderEnv) -> None:
        mid, in_inbox = new_message_id(), new_message_id()
        assert env.provider.find_sent(mid) is None
        env.deliver(make_message(message_id=in_inbox, subject="not sent by us"), FolderRole.INBOX)
        # a reply in Sent that only refers to the message is not the message
        env.deliver(make_message(from_=env.address, in_reply_to=mid, references=[mid]), FolderRole.SENT)
        assert env.provider.find_sent(mid) is None
        copy = env.deliver(make_message(message_id=mid, from_=env.address, subject="Your interview"), FolderRole.SENT)
        assert env.provider.find_sent(mid) == copy
        assert env.provider.find_sent(in_inbox) is None  # only Sent is searched
        assert env.provider.find_sent("<quote'and\"back\\slash@example.test>") is None  # quoted safely

    def test_move(self, env: ProviderEnv) -> None:
        moving = env.deliver(make_message(subject="to archive"), FolderRole.INBOX)
        staying = env.deliver(make_message(subject="stays"), FolderRole.INBOX)
        inbox, trash = self.folder(env, FolderRole.INBOX), self.folder(env, FolderRole.TRASH)
        env.provider.move(inbox, [moving], trash)
        assert [b"to archive" in m for m in env.raw_messages(FolderRole.TRASH)] == [True]
        remaining = env.raw_messages(FolderRole.INBOX)
        assert len(remaining) == 1 and b"stays" in remaining[0]
        assert staying in self.changes(env, inbox, None).new

    # -------------------------------------------------------------- processing mailbox
    def test_processing_mailbox_lists_creates_finds_and_moves(self, env: ProviderEnv) -> None:
        provider = env.provider
        if not getattr(type(provider), "supports_inbound", False):  # refused in one sentence naming why
            for call in (lambda: provider.list_ids(RemoteFolder("INBOX")), lambda: provider.ensure_folder("done")):
                with pytest.raises(NotSupported, match="cannot serve as a processing mailbox"):
                    call()
            return
        mids = [new_message_id() for _ in range(3)]
        raws = [make_message(message_id=m, subject=f"inbound {i}") for i, m in enumerate(mids)]
        ids = [env.deliver(raw, FolderRole.INBOX) for raw in raws]
        inbox = self.folder(env, FolderRole.INBOX)
        listing = provider.list_ids(inbox)
        assert sorted(listing.ids) == sorted(ids)
        assert provider.list_ids(RemoteFolder("INBOX")) == listing  # named as a processing mailbox names it

        done = provider.ensure_folder("Inbound/done")
        assert provider.ensure_folder("Inbound/done") == done  # twice: one folder
        provider.close()
        assert provider.ensure_folder("Inbound/done") == done  # found again by a fresh connection
        assert [f.name for f in provider.list_folders()].count(done.name) == 1
        assert provider.list_ids(done).ids == ()

        assert provider.find_message(inbox, mids[1]) == ids[1]
        assert provider.find_message(RemoteFolder("INBOX"), mids[2]) == ids[2]
        assert provider.find_message(inbox, new_message_id()) is None
        assert provider.find_message(done, mids[1]) is None  # only that folder is searched

        provider.move(inbox, [ids[0], ids[2]], done)
        assert provider.list_ids(inbox).ids == (ids[1],)
        moved = provider.list_ids(RemoteFolder("Inbound/done")).ids  # by name, as a retry asks
        assert len(moved) == 2
        assert provider.find_message(RemoteFolder("Inbound/done"), mids[2]) in moved
        provider.move(RemoteFolder("INBOX"), [ids[1]], done)
        assert provider.list_ids(inbox).ids == ()
        assert env.raw_messages(FolderRole.INBOX) == []
        assert len(provider.list_ids(done).ids) == 3

    # -------------------------------------------------------------- auth
    def test_bad_password_is_auth_error(self, env: ProviderEnv) -> None:
        provider = env.bad_password_provider()
        try:
            with pytest.raises(AuthError):
                provider.list_folders()
        finally:
            provider.close()

    def test_revoked_token_is_auth_error(self, env: ProviderEnv) -> None:
        if env.revoked_token_provider is None:
            pytest.skip("backend has no OAuth login")
        provider = env.revoked_token_provider()
        try:
            with pytest.raises(AuthError):
                provider.list_folders()
        finally:
            provider.close()

    def test_close_twice(self, env: ProviderEnv) -> None:
        env.provider.list_folders()
        env.provider.close()
        env.provider.close()


def _wait(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
