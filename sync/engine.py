"""The per-account sync engine: folders → changes → header index → threads →
applicant history → bodies.

Per-folder state machine (persisted in ``folders.state`` and ``folders.cursor``)::

    initial ──(every id indexed, cursor committed)──▶ incremental ◀──┐
       ▲                                                  │         │
       │                                     cursor still valid ────┘
       │                                                  │
       └──── resync ◀──(CursorInvalidError: UIDVALIDITY changed, history expired)

* ``initial``: no cursor. The provider lists every id; ids already in the
  header index (a previous run that crashed part-way) are skipped; the rest are
  indexed in batches, each batch one transaction. The cursor obtained *before*
  listing is committed only after the last batch, so anything that arrives
  meanwhile is picked up by the next incremental pass.
* ``incremental``: changes since the cursor: new ids are indexed like above,
  flag changes update the index, removed ids (or ids missing from a full
  listing) delete their copies. Then the new cursor is committed.
* ``resync``: the cursor is no longer valid. Every copy of the folder is
  dropped in one transaction together with the state change, then the folder
  is synced as ``initial``. Emails are keyed by Message-ID per organisation, so
  threads and applicant histories keep their rows and gain no duplicates.

Crash safety: every write is an idempotent upsert keyed by provider identity
(folder, remote id) or by Message-ID, and the cursor moves only after the data
it covers is committed. Killing the process at any point and running again
loses nothing and duplicates nothing. No transaction is held open across
network I/O: the engine fetches, then writes.

Failure isolation: a message whose headers cannot be understood is recorded as
a quarantined copy (reason kept) and never blocks the folder; a folder that
fails is recorded on the folder and the other folders still sync; an
:class:`~providers.errors.AuthError` stops the account and marks it
``reconnect-needed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretError
from postroom.models import Folder, MailAccount, MessageCopy
from providers.base import Capability, ChangeSet, MailProvider, RemoteFolder
from providers.errors import AuthError, CursorInvalidError, FolderNotFound, ProviderError, TransientError
from sync.accounts import AccountError, open_account
from sync.bodies import BodyFetcher
from sync.indexer import Indexer
from sync.store import chunks

log = logging.getLogger("postroom.sync")


@dataclass
class FolderResult:
    name: str
    new: int = 0
    changed: int = 0
    removed: int = 0
    quarantined: int = 0
    bodies: int = 0
    resynced: bool = False
    error: str | None = None


@dataclass
class AccountResult:
    """What one pass did. ``error_class`` names the failure (for retry policy and metrics);
    ``needs_reconnect`` means the credentials were refused; ``retry_after`` is the server's hint."""

    account_id: int
    email: str
    ok: bool = True
    error: str | None = None
    error_class: str | None = None
    needs_reconnect: bool = False
    retry_after: float | None = None
    skipped: bool = False  # another worker holds the account
    status: str = "active"  # set by sync.scheduler once the result is recorded
    folders: list[FolderResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def new(self) -> int:
        return sum(f.new for f in self.folders)

    def fail(self, exc: BaseException, message: str, *, reconnect: bool = False) -> None:
        self.ok, self.error, self.error_class, self.needs_reconnect = False, message, type(exc).__name__, reconnect
        self.retry_after = getattr(exc, "retry_after", None)

    def summary(self) -> str:
        if self.skipped:
            return f"account {self.account_id} ({self.email}): skipped, another worker is syncing it"
        if not self.ok:
            return f"account {self.account_id} ({self.email}): FAILED: {self.error}"
        tot = lambda attr: sum(getattr(f, attr) for f in self.folders)  # noqa: E731
        text = (
            f"account {self.account_id} ({self.email}): {len(self.folders)} folders, {tot('new')} new, "
            f"{tot('changed')} changed, {tot('removed')} removed, {tot('bodies')} bodies, "
            f"{tot('quarantined')} quarantined in {self.seconds:.2f}s"
        )
        failed = [f for f in self.folders if f.error]
        if failed:
            text += "; folder errors: " + "; ".join(f"{f.name}: {f.error}" for f in failed)
        return text


def _now() -> datetime:
    return datetime.now(UTC)


class AccountSync:
    """Syncs one account once. Build it per pass; it holds no state across passes.

    ``heartbeat`` is called between folders and batches, so a caller holding a
    lease on the account can renew it during a long initial sync.
    """

    def __init__(
        self,
        config: Config,
        sessions: sessionmaker[Session],
        account_id: int,
        provider: MailProvider | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.account_id = account_id
        self._provider = provider
        self.heartbeat = heartbeat or (lambda: None)
        self.log = logging.LoggerAdapter(log, {"account_id": account_id})

    def run(self) -> AccountResult:
        started = time.monotonic()
        with self.sessions.begin() as s:
            account = s.get(MailAccount, self.account_id)
            if account is None:
                raise AccountError(f"No mail account with id {self.account_id}.")
            result = AccountResult(account.id, account.email)
            org_id = account.org_id
            account.last_sync_at = _now()
            try:
                provider = self._provider or open_account(account, self.config)
            except SecretError as exc:
                result.fail(exc, str(exc), reconnect=True)
            except ProviderError as exc:
                result.fail(exc, str(exc))
        if result.ok:
            try:
                self._sync_folders(provider, org_id, result)
            except AuthError as exc:
                result.fail(exc, f"Login failed: {exc}", reconnect=True)
            except TransientError as exc:
                result.fail(exc, f"Server unavailable: {exc}")
            except ProviderError as exc:
                result.fail(exc, str(exc) or type(exc).__name__)
            finally:
                if self._provider is None:
                    try:
                        provider.close()
                    except ProviderError:
                        pass
        result.seconds = time.monotonic() - started
        with self.sessions.begin() as s:
            account = s.get(MailAccount, self.account_id)
            if account is not None:
                folder_error = next((f.error for f in result.folders if f.error), None)
                account.last_error = result.error or folder_error
                account.last_error_class = result.error_class or ("ProtocolError" if folder_error else None)
                if result.ok:
                    account.last_success_at = _now()
        self.log.debug("%s", result.summary())
        return result

    # -- folders ---------------------------------------------------------------

    def _sync_folders(self, provider: MailProvider, org_id: int, result: AccountResult) -> None:
        remote_folders = provider.list_folders()
        folders = self._reconcile_folders(remote_folders)
        indexer = Indexer(
            self.sessions,
            org_id,
            self.account_id,
            use_thread_hints=Capability.SERVER_THREAD_IDS in provider.capabilities,
            body_policy=self.config.sync.body_policy,
        )
        bodies = BodyFetcher(self.sessions, self.config, self.account_id)
        for folder_id, remote in folders:
            self.heartbeat()
            fres = FolderResult(remote.name)
            result.folders.append(fres)
            try:
                self._sync_folder(provider, indexer, folder_id, remote, fres)
                fres.bodies = bodies.fetch_wanted(provider, folder_id, remote)
            except (AuthError, TransientError):
                raise  # the whole account stops: retrying folder by folder would not help
            except ProviderError as exc:
                fres.error = str(exc) or exc.__class__.__name__
                self.log.warning("folder %s failed: %s", remote.name, fres.error)
                with self.sessions.begin() as s:
                    s.execute(update(Folder).where(Folder.id == folder_id).values(last_error=fres.error))

    def _reconcile_folders(self, remote_folders: Sequence[RemoteFolder]) -> list[tuple[int, RemoteFolder]]:
        """Create rows for new folders, mark vanished ones; returns (folder id, remote) to sync."""
        wanted = [f for f in remote_folders if f.selectable]
        with self.sessions.begin() as s:
            rows = {f.name: f for f in s.scalars(select(Folder).where(Folder.account_id == self.account_id))}
            out = []
            for remote in wanted:
                row = rows.pop(remote.name, None)
                if row is None:
                    row = Folder(account_id=self.account_id, name=remote.name, state="initial")
                    s.add(row)
                row.role = remote.role.value if remote.role else None
                row.delimiter = remote.delimiter
                row.exists_remote = True
                s.flush()
                out.append((row.id, remote))
            for gone in rows.values():  # deleted on the server: its copies are gone too
                if gone.exists_remote:
                    s.execute(delete(MessageCopy).where(MessageCopy.folder_id == gone.id))
                    gone.exists_remote = False
                    gone.cursor, gone.state = None, "initial"
        # Inbox and Sent first: they matter most to recruiters.
        order = {"inbox": 0, "sent": 1}
        return sorted(out, key=lambda fr: order.get(fr[1].role.value if fr[1].role else "", 2))

    def _sync_folder(
        self, provider: MailProvider, indexer: Indexer, folder_id: int, remote: RemoteFolder, fres: FolderResult
    ) -> None:
        with self.sessions.begin() as s:
            folder = s.get_one(Folder, folder_id)
            cursor = folder.cursor
        try:
            changes = provider.fetch_changes(remote, cursor)
        except CursorInvalidError as exc:
            self.log.warning("folder %s: cursor no longer valid (%s); resyncing", remote.name, exc)
            self._reset_folder(folder_id)
            fres.resynced = True
            changes = provider.fetch_changes(remote, None)
        except FolderNotFound:
            with self.sessions.begin() as s:
                s.execute(delete(MessageCopy).where(MessageCopy.folder_id == folder_id))
                s.execute(
                    update(Folder)
                    .where(Folder.id == folder_id)
                    .values(exists_remote=False, cursor=None, state="initial")
                )
            return
        self._apply_removals(folder_id, changes, fres)
        self._apply_flag_changes(folder_id, changes, fres)
        new_ids = self._unknown_ids(folder_id, changes.new)
        batch = self.config.sync.batch_size
        for ids in chunks(new_ids, batch):
            messages = list(provider.fetch_headers(remote, ids))
            stats = indexer.index(folder_id, messages)
            fres.new += stats.indexed
            fres.quarantined += stats.quarantined
            self.heartbeat()
        with self.sessions.begin() as s:
            s.execute(
                update(Folder)
                .where(Folder.id == folder_id)
                .values(cursor=changes.cursor, state="incremental", last_synced_at=_now(), last_error=None)
            )

    def _reset_folder(self, folder_id: int) -> None:
        with self.sessions.begin() as s:
            s.execute(delete(MessageCopy).where(MessageCopy.folder_id == folder_id))
            s.execute(update(Folder).where(Folder.id == folder_id).values(cursor=None, state="resync"))

    def _unknown_ids(self, folder_id: int, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        with self.sessions() as s:
            known = set(s.scalars(select(MessageCopy.remote_id).where(MessageCopy.folder_id == folder_id)))
        return [i for i in ids if i not in known]

    def _apply_removals(self, folder_id: int, changes: ChangeSet, fres: FolderResult) -> None:
        removed = set(changes.removed)
        if changes.present is not None:
            with self.sessions() as s:
                known = set(s.scalars(select(MessageCopy.remote_id).where(MessageCopy.folder_id == folder_id)))
            removed |= known - set(changes.present)
        if not removed:
            return
        with self.sessions.begin() as s:
            for ids in chunks(sorted(removed)):
                res = s.execute(
                    delete(MessageCopy).where(MessageCopy.folder_id == folder_id, MessageCopy.remote_id.in_(ids))
                )
                fres.removed += res.rowcount or 0  # type: ignore[attr-defined]

    def _apply_flag_changes(self, folder_id: int, changes: ChangeSet, fres: FolderResult) -> None:
        """Write the flags that really differ (a backend without CONDSTORE reports every message)."""
        if not changes.changed:
            return
        with self.sessions.begin() as s:
            known = dict(
                s.execute(select(MessageCopy.remote_id, MessageCopy.flags).where(MessageCopy.folder_id == folder_id))
                .tuples()
                .all()
            )
            rows = []
            for upd in changes.changed:
                flags = " ".join(sorted(upd.flags))
                if upd.remote_id in known and known[upd.remote_id] != flags:
                    rows.append({"fid": folder_id, "rid": upd.remote_id, "flags": flags})
            if rows:
                t = cast(Table, MessageCopy.__table__)
                s.execute(
                    update(t)
                    .where(t.c.folder_id == bindparam("fid"), t.c.remote_id == bindparam("rid"))
                    .values(flags=bindparam("flags")),
                    rows,
                )
            fres.changed += len(rows)
