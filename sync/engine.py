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

Failure isolation: no message can block its folder, and no folder the account.
A message the database refuses (sync.indexer) or the server refuses or garbles
on every fetch (sync.isolation) is quarantined with the reason (sync.quarantine)
and the folder's cursor moves past it. Anything else that goes wrong in a folder
— a provider error, or an unexpected exception — fails that folder for this pass
(recorded on the folder) and the other folders still sync; the account backs off
only when every folder failed, or the server or the database is away. An
:class:`~providers.errors.AuthError` (refused credentials) or a
:class:`~providers.errors.ConfigurationError` (settings that cannot work) stops the
account and marks it ``reconnect-needed``: retrying would not help.

Progress: ``folders.messages_found`` / ``messages_indexed`` say how far a folder's sync got
(:mod:`services.progress` reads them), cheaply. An initial sync (or resync) writes the length of
its complete listing and how many of those ids are already indexed once, before its first batch,
then ``messages_indexed`` once per batch, and the exact count of the folder's copies with the
cursor. An incremental pass adds what it indexed to both in the statement that saves its cursor
(a pass with more than one batch also before each further batch) and takes removals off in the
transaction that removes them, so an idle pass still writes nothing. (A pass killed between a
batch and its cursor save leaves an incremental folder's counts short by that batch until the
folder is next resynced.)

Leases: the caller passes a :class:`Lease` (sync.scheduler holds one on the
account while it syncs). ``lease.heartbeat()`` runs between folders and batches
and raises :class:`LeaseLost` as soon as a renewal finds the lease gone, which
ends the pass at once; every cursor save and every removal of copies runs in a
transaction that first proves, in the database, that the lease is still held
(``lease.hold``), so a worker that lost its account can never write over the
one that took it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretError
from postroom.db import is_unavailable
from postroom.errors import AccountError
from postroom.logs import error_summary, where
from postroom.models import Folder, MailAccount, MessageCopy, QuarantinedMessage, utcnow
from postroom.states import AccountStatus, FolderState
from providers.base import Capability, ChangeSet, MailProvider, RemoteFolder
from providers.errors import (
    AuthError,
    ConfigurationError,
    CursorInvalidError,
    FolderNotFound,
    ProviderError,
    TransientError,
)
from sync.bodies import BodyFetcher
from sync.credentials import open_account
from sync.indexer import Indexer
from sync.isolation import isolate
from sync.leases import Lease, LeaseLost, NoLease
from sync.quarantine import Placeholder, drop_placeholders, pending_header_retries, quarantine_headers
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
    lease_lost: bool = False  # the lease ran out mid-pass; nothing more was written
    status: str = AccountStatus.ACTIVE  # set by sync.scheduler once the result is recorded
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
        if self.lease_lost:
            return f"account {self.account_id} ({self.email}): stopped, its lease ran out and another worker took it"
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


_ACCOUNTS = cast(Table, MailAccount.__table__)
_FOLDERS = cast(Table, Folder.__table__)


# The account's folders with their sync state, and whether some quarantined message of each is
# to be tried again (postroom quarantine retry): one read per pass, built once.
_FOLDERS_OF_ACCOUNT = select(
    _FOLDERS,
    select(QuarantinedMessage.id)
    .where(QuarantinedMessage.folder_id == _FOLDERS.c.id, QuarantinedMessage.retry_requested)
    .exists()
    .label("retry"),
).where(_FOLDERS.c.account_id == bindparam("aid"))


def outcome_values(result: AccountResult, now: datetime | None = None) -> dict[str, Any]:
    """The account columns a finished pass sets: its error (or none) and, if it worked, when."""
    folder_error = next((f.error for f in result.folders if f.error), None)
    values: dict[str, Any] = {
        "last_error": result.error or folder_error,
        "last_error_class": result.error_class or ("ProtocolError" if folder_error else None),
    }
    if result.ok:
        values["last_success_at"] = now or utcnow()
    return values


@dataclass(frozen=True)
class _FolderState:
    """A folder to sync: its row id, the server's view, and the stored sync state."""

    id: int
    remote: RemoteFolder
    cursor: str | None
    state: str
    last_error: str | None
    retry: bool = False  # some quarantined message of the folder is to be tried again


# progress of a folder whose copies are all gone: not listed yet, nothing indexed
_NO_PROGRESS: dict[str, Any] = {"messages_found": None, "messages_indexed": 0}


def _counted(delta: int) -> dict[str, Any]:
    """The progress columns of a folder past its initial sync (found == indexed), ``delta`` copies
    more (or fewer): values for the UPDATE that records it."""
    return {
        "messages_found": func.coalesce(_FOLDERS.c.messages_found, _FOLDERS.c.messages_indexed) + delta,
        "messages_indexed": _FOLDERS.c.messages_indexed + delta,
    }


def _forget_folder(folder_id: int, s: Session, lease: Lease) -> None:
    """The folder is gone from the server: drop its copies and start over if it comes back."""
    lease.hold(s)
    s.execute(delete(MessageCopy).where(MessageCopy.folder_id == folder_id))
    s.execute(
        update(_FOLDERS)
        .where(_FOLDERS.c.id == folder_id)
        .values(exists_remote=False, cursor=None, state=FolderState.INITIAL, **_NO_PROGRESS)
    )


class AccountSync:
    """Syncs one account once. Build it per pass; it holds no state across passes.

    ``lease`` is the caller's hold on the account (see :class:`Lease`); its heartbeat
    runs between folders and batches, so a long initial sync keeps it.
    """

    def __init__(
        self,
        config: Config,
        sessions: sessionmaker[Session],
        account_id: int,
        provider: MailProvider | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.account_id = account_id
        self._provider = provider
        self.lease: Lease = lease or NoLease()
        self.heartbeat = self.lease.heartbeat
        self.log = logging.LoggerAdapter(log, {"account_id": account_id})
        self._moved_cursors: list[dict[str, Any]] = []  # folders whose cursor alone moved this pass
        # copies an incremental pass added to a folder and not yet counted in its progress columns
        self._uncounted: dict[int, int] = {}
        self._folder_failures: list[BaseException] = []

    def run(self, *, record: bool = True) -> AccountResult:
        """Sync every folder once. With ``record`` (the default) the outcome is written to
        the account (:func:`outcome_values`); the scheduler passes False and writes it
        together with the lease release, in one statement."""
        started = time.monotonic()
        with self.sessions() as s:
            account = s.execute(select(MailAccount.__table__).where(MailAccount.id == self.account_id)).one_or_none()
        if account is None:
            raise AccountError(f"No mail account with id {self.account_id}.")
        if record:
            with self.sessions.begin() as s:
                s.execute(update(_ACCOUNTS).where(_ACCOUNTS.c.id == self.account_id).values(last_sync_at=utcnow()))
        result = AccountResult(account.id, account.email)
        try:
            provider = self._provider or open_account(account, self.config, self.sessions)
        except SecretError as exc:
            result.fail(exc, str(exc), reconnect=True)
        except ConfigurationError as exc:  # retrying cannot help: stop until the settings are fixed
            result.fail(exc, f"Settings need fixing: {exc}", reconnect=True)
        except ProviderError as exc:
            result.fail(exc, str(exc))
        if result.ok:
            try:
                self._sync_folders(provider, account.org_id, result)
            except LeaseLost as exc:
                result.lease_lost = True
                result.fail(exc, "Stopped: the lease ran out and another worker took the account over.")
                record = False  # the other worker's outcome is the one that counts
            except AuthError as exc:
                result.fail(exc, f"Login failed: {exc}", reconnect=True)
            except ConfigurationError as exc:
                result.fail(exc, f"Settings need fixing: {exc}", reconnect=True)
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
        if record:
            with self.sessions.begin() as s:
                s.execute(update(_ACCOUNTS).where(_ACCOUNTS.c.id == self.account_id).values(**outcome_values(result)))
        self.log.debug("%s", result.summary())
        return result

    # -- folders ---------------------------------------------------------------

    def _sync_folders(self, provider: MailProvider, org_id: int, result: AccountResult) -> None:
        """Headers of every folder first (threads and histories complete soonest), then bodies."""
        remote_folders = provider.list_folders()
        folders = self._reconcile_folders(remote_folders)
        indexer = Indexer(
            self.sessions,
            org_id,
            self.account_id,
            use_thread_hints=Capability.SERVER_THREAD_IDS in provider.capabilities,
        )
        results: dict[int, FolderResult] = {}
        self._moved_cursors = []
        for folder in folders:
            self.heartbeat()
            fres = results[folder.id] = FolderResult(folder.remote.name)
            result.folders.append(fres)
            self._guarded(folder, fres, functools.partial(self._sync_folder, provider, indexer, folder))
        if self._moved_cursors:  # one transaction for every folder whose cursor alone moved
            with self.sessions.begin() as s:
                self.lease.hold(s)
                s.execute(update(_FOLDERS).where(_FOLDERS.c.id == bindparam("fid")), self._moved_cursors)
        bodies = BodyFetcher(self.sessions, self.config, self.account_id)
        wanted = bodies.wanted_by_folder()
        for folder in folders:
            if folder.id in wanted and not results[folder.id].error:
                fetch = functools.partial(self._fetch_bodies, bodies, provider, folder, wanted[folder.id])
                self._guarded(folder, results[folder.id], fetch)
        if folders and all(f.error for f in result.folders):  # nothing could be done: back off
            first = self._folder_failures[0]
            result.fail(first, f"Every folder failed: {result.folders[0].error}")

    def _fetch_bodies(
        self,
        bodies: BodyFetcher,
        provider: MailProvider,
        folder: _FolderState,
        wanted: list[tuple[str, int, int | None]],
        fres: FolderResult,
    ) -> None:
        stored, quarantined = bodies.fetch(provider, folder.id, folder.remote, wanted, self.heartbeat)
        fres.bodies += stored
        fres.quarantined += quarantined

    def _guarded(self, folder: _FolderState, fres: FolderResult, step: Callable[[FolderResult], None]) -> None:
        """Run one folder's step. Anything that goes wrong fails that folder only, for this pass
        (recorded on it); refused credentials, a server that is away, a lost lease or a database
        that is away stop the whole account: retrying folder by folder would not help."""
        try:
            step(fres)
        except (AuthError, TransientError, LeaseLost):
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise
            if isinstance(exc, ProviderError):
                fres.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                self.log.warning("folder %s failed: %s", folder.remote.name, fres.error)
            else:  # a bug or a surprise: never the whole account, never message content in the error
                fres.error = f"Internal error: {error_summary(exc)}"
                self.log.error("folder %s failed: %s\n%s", folder.remote.name, fres.error, where(exc))
            self._folder_failures.append(exc)
            uncounted = self._uncounted.pop(folder.id, 0)  # what the failed pass did index still counts
            progress = _counted(uncounted) if uncounted else {}
            with self.sessions.begin() as s:
                s.execute(update(_FOLDERS).where(_FOLDERS.c.id == folder.id).values(last_error=fres.error, **progress))

    def _reconcile_folders(self, remote_folders: Sequence[RemoteFolder]) -> list[_FolderState]:
        """Create rows for new folders, mark vanished ones; returns the folders to sync, with
        their stored state. Writes nothing when the server's folders are as recorded."""
        with self.sessions() as s:
            rows = {r.name: r for r in s.execute(_FOLDERS_OF_ACCOUNT, {"aid": self.account_id})}
        out: list[_FolderState] = []
        added: list[tuple[RemoteFolder, str | None]] = []
        changed: list[dict[str, Any]] = []
        for remote in (f for f in remote_folders if f.selectable):
            role = remote.role.value if remote.role else None
            row = rows.pop(remote.name, None)
            if row is None:
                added.append((remote, role))
                continue
            if (row.role, row.delimiter, row.exists_remote) != (role, remote.delimiter, True):
                changed.append({"fid": row.id, "role": role, "delimiter": remote.delimiter, "exists_remote": True})
            out.append(_FolderState(row.id, remote, row.cursor, row.state, row.last_error, row.retry))
        gone = [row.id for row in rows.values() if row.exists_remote]  # deleted on the server
        if added or changed or gone:
            with self.sessions.begin() as s:
                for remote, role in added:
                    values = {"account_id": self.account_id, "name": remote.name, "delimiter": remote.delimiter}
                    new_id = s.execute(
                        insert(_FOLDERS)
                        .values(**values, role=role, state=FolderState.INITIAL, exists_remote=True)
                        .returning(_FOLDERS.c.id)
                    ).scalar_one()
                    out.append(_FolderState(new_id, remote, None, FolderState.INITIAL, None))
                if changed:
                    s.execute(update(_FOLDERS).where(_FOLDERS.c.id == bindparam("fid")), changed)
                for folder_id in gone:  # its copies are gone too
                    _forget_folder(folder_id, s, self.lease)
        # Inbox and Sent first: they matter most to recruiters.
        order = {"inbox": 0, "sent": 1}
        return sorted(out, key=lambda f: order.get(f.remote.role.value if f.remote.role else "", 2))

    def _sync_folder(self, provider: MailProvider, indexer: Indexer, folder: _FolderState, fres: FolderResult) -> None:
        folder_id, remote = folder.id, folder.remote
        try:
            changes = provider.fetch_changes(remote, folder.cursor)
        except CursorInvalidError as exc:
            self.log.warning("folder %s: cursor no longer valid (%s); resyncing", remote.name, exc)
            self._reset_folder(folder_id)
            folder = dataclasses.replace(folder, cursor=None, state=FolderState.RESYNC)
            fres.resynced = True
            changes = provider.fetch_changes(remote, None)
        except FolderNotFound:
            with self.sessions.begin() as s:
                _forget_folder(folder_id, s, self.lease)
            return
        self._apply_removals(folder_id, changes, fres)
        self._apply_flag_changes(folder_id, changes, fres)
        unknown = self._unknown_ids(folder_id, changes.new)
        if folder.state != FolderState.INCREMENTAL and unknown:  # the listing is complete: how far it got
            with self.sessions.begin() as s:
                s.execute(
                    update(_FOLDERS)
                    .where(_FOLDERS.c.id == folder_id)
                    .values(messages_found=len(changes.new), messages_indexed=len(changes.new) - len(unknown))
                )
        settled = self._index(provider, indexer, folder, unknown, fres)
        if folder.retry:  # quarantined messages someone asked to try again (postroom quarantine retry)
            with self.sessions() as s:
                retry = pending_header_retries(s, folder_id)
            settled = self._index(provider, indexer, folder, retry, fres, replace=True) and settled
        if not settled:
            raise ProviderError(
                "some messages could not be fetched this pass (the server refused many of them); "
                "the next pass carries on"
            )
        uncounted = self._uncounted.pop(folder_id, 0)
        quiet = (folder.state, folder.last_error, uncounted) == (FolderState.INCREMENTAL, None, 0)
        if quiet and changes.cursor == folder.cursor:
            return  # nothing changed: a no-change pass writes nothing for this folder
        if quiet and changes.empty:
            # nothing changed but the server issued a new cursor (Graph and EWS do, every time):
            # written with the others at the end of the pass. Losing it in a crash only means
            # asking again from the old cursor, which covers no changes.
            self._moved_cursors.append({"fid": folder_id, "cursor": changes.cursor})
            return
        if folder.state == FolderState.INCREMENTAL:
            progress = _counted(uncounted) if uncounted else {}
        else:  # the initial sync is done: exactly what is indexed, once
            copies = select(func.count()).select_from(MessageCopy).where(MessageCopy.folder_id == folder_id)
            progress = {"messages_found": copies.scalar_subquery(), "messages_indexed": copies.scalar_subquery()}
        with self.sessions.begin() as s:
            self.lease.hold(s)
            s.execute(
                update(_FOLDERS)
                .where(_FOLDERS.c.id == folder_id)
                .values(
                    cursor=changes.cursor,
                    state=FolderState.INCREMENTAL,
                    last_synced_at=utcnow(),
                    last_error=None,
                    **progress,
                )
            )

    def _index(
        self,
        provider: MailProvider,
        indexer: Indexer,
        folder: _FolderState,
        ids: Sequence[str],
        fres: FolderResult,
        *,
        replace: bool = False,
    ) -> bool:
        """Fetch and index these ids in batches; messages the server refuses or garbles on every
        fetch are quarantined. ``replace``: the ids are quarantined messages tried again. Returns
        False if some ids could be neither indexed nor quarantined this pass.

        Progress: an initial sync counts each batch in ``messages_indexed`` at once; an incremental
        pass keeps the count for its cursor save (:meth:`_sync_folder`), writing it before a
        further batch only."""
        folder_id, remote = folder.id, folder.remote
        incremental = folder.state == FolderState.INCREMENTAL
        for batch in chunks(list(ids), self.config.sync.batch_size):
            if incremental and self._uncounted.get(folder_id):  # a long incremental pass: count so far
                with self.sessions.begin() as s:
                    s.execute(
                        update(_FOLDERS)
                        .where(_FOLDERS.c.id == folder_id)
                        .values(**_counted(self._uncounted.pop(folder_id)))
                    )
            got = isolate(lambda part: list(provider.fetch_headers(remote, part)), batch)
            stats = indexer.index(folder_id, got.items, replace=batch if replace else ())
            fres.new += stats.indexed
            fres.quarantined += stats.quarantined + len(got.failed)
            # copies this batch added: indexed or set aside with a placeholder (a message tried again
            # replaces its placeholder, and one gone from the server takes it away)
            added = 0 if replace else stats.indexed + stats.quarantined + len(got.failed)
            if got.failed or replace:
                fetched = {m.remote_id for m in got.items}
                with self.sessions.begin() as s:
                    if replace:  # tried again and no longer on the server: the placeholder goes
                        gone = [i for i in batch if i not in fetched and i not in got.failed]
                        drop_placeholders(s, folder_id, gone)
                        added -= len(gone)
                    quarantine_headers(
                        s,
                        self.account_id,
                        folder_id,
                        [
                            Placeholder(rid, None, f"the server refused or garbled it on every fetch: {why}")
                            for rid, why in got.failed.items()
                        ],
                    )
                for rid, why in got.failed.items():
                    self.log.warning("message %s quarantined in %s: %s", rid, remote.name, why)
            if incremental:
                self._uncounted[folder_id] = self._uncounted.get(folder_id, 0) + added
            elif added:
                with self.sessions.begin() as s:
                    s.execute(
                        update(_FOLDERS)
                        .where(_FOLDERS.c.id == folder_id)
                        .values(messages_indexed=_FOLDERS.c.messages_indexed + added)
                    )
            self.heartbeat()
            if not got.complete:
                return False
        return True

    def _reset_folder(self, folder_id: int) -> None:
        self._uncounted.pop(folder_id, None)
        with self.sessions.begin() as s:
            self.lease.hold(s)
            s.execute(delete(MessageCopy).where(MessageCopy.folder_id == folder_id))
            s.execute(
                update(_FOLDERS)
                .where(_FOLDERS.c.id == folder_id)
                .values(cursor=None, state=FolderState.RESYNC, **_NO_PROGRESS)
            )

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
            self.lease.hold(s)
            gone = 0
            for ids in chunks(sorted(removed)):
                res = s.execute(
                    delete(MessageCopy).where(MessageCopy.folder_id == folder_id, MessageCopy.remote_id.in_(ids))
                )
                gone += res.rowcount or 0  # type: ignore[attr-defined]
            if gone:  # counted off in the same transaction: exact whatever happens next
                s.execute(
                    update(_FOLDERS)
                    .where(_FOLDERS.c.id == folder_id)
                    .values(
                        messages_found=_FOLDERS.c.messages_found - gone,
                        messages_indexed=_FOLDERS.c.messages_indexed - gone,
                    )
                )
            fres.removed += gone

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
