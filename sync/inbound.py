"""The processing mailbox's loop: every message of the source folder taken exactly once, then
moved to processed/ or failed/.

One run over one mailbox (:func:`run_mailbox`) reads like a template::

    open the account as the sync worker does (its proxy, its tokens); close it at the end
    find the processed and failed folders in one LIST; create   (CREATE + SUBSCRIBE; ALREADYEXISTS
    only those missing (the first run)                           is fine)
    list the source folder's UIDs                               (SELECT + UID SEARCH ALL)
    UIDs already recorded for this UIDVALIDITY, not moved yet:  move them (a crash came after
                                                                the commit, before the move)
    recorded items whose UID has left the folder:               mark them moved
    the other UIDs, a batch at a time:
        fetch sizes and Message-IDs, then the bodies not over the size cap
        each message in its own short transaction: record it (the unique constraint on
        mailbox + UIDVALIDITY + UID makes a racing worker's insert fail: it skips the message),
        parse, route, record bounces and answers, keep attachments, queue the webhook; commit
        move the batch's processed ones to processed/ (one UID MOVE); mark them moved
        failed ones wait until a batch's worth has gathered, or the end of the run, then
        move to failed/ together (one UID MOVE, not one per batch); mark them moved

**Exactly once.** A message is processed in the transaction that records its UID, so it is
either recorded and processed or neither; only a recorded message is moved, and a recorded one
is never processed again, only moved. A crash at any point leaves one of: nothing recorded (the
next run takes it), recorded and not moved (the next run moves it), moved and not marked (the
next run sees it gone and marks it). No transaction is open during IMAP I/O.

**Fixed by hand.** An operator who corrects a failed message in a mail client and moves it back
into the source folder gets it processed again: the new UID reopens the failed item of the same
Message-ID (one item, never two). :func:`retry` re-runs the pipeline on the kept raw message and,
when it now succeeds, moves the message from failed/ to processed/ (found by Message-ID).

**Other backends.** Gmail, Graph and EWS serve too (:attr:`providers.common.backend.Backend.
supports_inbound`): their message ids are opaque text, recorded under :func:`item_key` (the UID
itself for IMAP), and their validity is a constant, their ids being never reused in a mailbox.

**Moving.** ``UID MOVE``; COPY + STORE ``\\Deleted`` + UID EXPUNGE where the server does not
announce MOVE, or always for a mailbox added with ``--move copy-delete`` (its provider is opened
with ``disable_move``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.logs import error_summary
from postroom.mime import clean_text, parse_headers
from postroom.models import Body, MailAccount, utcnow
from postroom.models_inbound import InboundItem, InboundMailbox
from postroom.states import InboundStatus, MoveMode
from providers.base import MailProvider, RemoteFolder
from providers.errors import ProviderError
from providers.registry import open_provider
from sync.bodies import BlobStore
from sync.credentials import provider_settings
from sync.inbound_store import Found, InboundItemView, item_view, reapply, take
from sync.store import chunks

log = logging.getLogger("postroom.inbound")


@dataclass
class RunResult:
    """What one run did: messages processed and failed (taken now), moved, and the mailboxes'
    errors (a mailbox that could not be reached does not stop the others)."""

    processed: int = 0
    failed: int = 0
    moved: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"processed": self.processed, "failed": self.failed, "moved": self.moved, "errors": self.errors}


@dataclass(frozen=True)
class MailboxInfo:
    """What a run needs of one processing mailbox and its account (read in a short transaction)."""

    id: int
    org_id: int
    folder: str
    processed_folder: str
    failed_folder: str
    move_mode: str
    # the account, as sync.credentials opens it
    account_id: int
    email: str
    provider: str
    settings: dict[str, Any]
    secret: bytes

    def target(self, status: str) -> str:
        return self.processed_folder if status == InboundStatus.PROCESSED.value else self.failed_folder


def load_mailboxes(session: Session, org_id: int | None = None, mailbox_id: int | None = None) -> list[MailboxInfo]:
    q = select(InboundMailbox, MailAccount).join(MailAccount, MailAccount.id == InboundMailbox.account_id)
    if org_id is not None:
        q = q.where(InboundMailbox.org_id == org_id)
    if mailbox_id is not None:
        q = q.where(InboundMailbox.id == mailbox_id)
    return [
        MailboxInfo(
            m.id,
            m.org_id,
            m.folder,
            m.processed_folder,
            m.failed_folder,
            m.move_mode,
            a.id,
            a.email,
            a.provider,
            dict(a.settings or {}),
            a.secret,
        )
        for m, a in session.execute(q.order_by(InboundMailbox.id)).tuples()
    ]


def open_mailbox(config: Config, sessions: sessionmaker[Session], box: MailboxInfo) -> MailProvider:
    """The account's provider, opened as the sync worker opens it (credentials, proxy, tokens
    saved on refresh); ``copy-delete`` mailboxes never use MOVE."""
    settings = provider_settings(box, config, sessions)  # type: ignore[arg-type]  # the fields StoredAccount names
    if box.move_mode == MoveMode.COPY_DELETE:
        settings = dataclasses.replace(settings, options={**settings.options, "disable_move": True})
    return open_provider(box.provider, settings)


# ------------------------------------------------------------------------------ the run


def run_once(config: Config, sessions: sessionmaker[Session], org_id: int | None = None) -> RunResult:
    """One run over every processing mailbox (of ``org_id``, or all)."""
    result = RunResult()
    with sessions() as s:
        boxes = load_mailboxes(s, org_id)
    for box in boxes:
        error: str | None = None
        try:
            run_mailbox(config, sessions, box, result)
        except ProviderError as exc:
            error = clean_text(str(exc), 1000) or type(exc).__name__
            result.errors.append(f"mailbox {box.id} ({box.email}): {error}")
            log.warning("processing mailbox failed: %s", error, extra={"account_id": box.account_id})
        with sessions.begin() as s:
            s.execute(
                update(InboundMailbox)
                .where(InboundMailbox.id == box.id)
                .values(last_run_at=utcnow(), last_error=error)
                .execution_options(synchronize_session=False)
            )
    return result


def run_mailbox(config: Config, sessions: sessionmaker[Session], box: MailboxInfo, result: RunResult) -> None:
    """One run over one mailbox (see the module docstring); counts into ``result``."""
    provider = open_mailbox(config, sessions, box)
    try:
        _Run(config, sessions, box, provider, result).run()
    finally:
        provider.close()


def ensure_targets(provider: MailProvider, names: Sequence[str]) -> dict[str, RemoteFolder]:
    """The target folders by name: those a LIST shows as they are (one command; every run after
    the first), the others created (``ensure_folder``: CREATE + SUBSCRIBE on IMAP)."""
    listed = {f.name: f for f in provider.list_folders()}
    return {name: listed.get(name) or provider.ensure_folder(name) for name in dict.fromkeys(names)}


class _Run:
    def __init__(
        self,
        config: Config,
        sessions: sessionmaker[Session],
        box: MailboxInfo,
        provider: MailProvider,
        result: RunResult,
    ) -> None:
        self.config, self.sessions, self.box, self.provider, self.result = config, sessions, box, provider, result
        self.blobs = BlobStore(config.storage.blob_dir)
        self.source = RemoteFolder(box.folder)
        self.targets: dict[str, RemoteFolder] = {}
        self.remote: dict[int, str] = {}  # item key (the UID) -> the provider's id of the message

    def run(self) -> None:
        self.targets = ensure_targets(self.provider, (self.box.processed_folder, self.box.failed_folder))
        listing = self.provider.list_ids(self.source)
        self.remote = {item_key(rid): rid for rid in listing.ids}
        uids = list(self.remote)
        known = self._known(listing.validity, uids)
        self._move([(item_id, uid, status) for uid, (item_id, status, moved) in known.items() if not moved])
        # a failed message put back into the source keeps its id on Gmail (labels): taken again
        returned = [uid for uid, (_, status, moved) in known.items() if moved and status == InboundStatus.FAILED.value]
        new = [uid for uid in uids if uid not in known] + returned
        size = self.config.inbound.batch_size
        failed: list[tuple[int, int, str]] = []  # few: moved a batch's worth at a time, not per batch
        for batch in chunks(new, size):
            taken = self._take(listing.validity, batch)
            self._move([t for t in taken if t[2] == InboundStatus.PROCESSED.value])
            failed += [t for t in taken if t[2] != InboundStatus.PROCESSED.value]
            if len(failed) >= size:
                self._move(failed)
                failed = []
        self._move(failed)  # (a crash before this leaves them recorded, not moved: the next run moves them)

    def _known(self, validity: int, uids: Sequence[int]) -> dict[int, tuple[int, str, bool]]:
        """Recorded items of these UIDs: uid -> (item id, status, moved). Items not moved whose
        UID has left the folder (moved, then a crash before it was marked) are marked moved."""
        present = set(uids)
        cols = (InboundItem.id, InboundItem.uidvalidity, InboundItem.uid, InboundItem.status, InboundItem.moved)
        with self.sessions.begin() as s:
            # the folder's recorded UIDs (an index lookup per chunk, however long the history), and
            # every item not moved yet (few: those of a run that was interrupted)
            rows = [
                r
                for part in chunks(sorted(present))
                for r in s.execute(
                    select(*cols).where(
                        InboundItem.mailbox_id == self.box.id,
                        InboundItem.uidvalidity == validity,
                        InboundItem.uid.in_(part),
                    )
                ).all()
            ]
            waiting = s.execute(
                select(*cols).where(InboundItem.mailbox_id == self.box.id, InboundItem.moved.is_(False))
            ).all()
            known = {r.uid: (r.id, r.status, r.moved) for r in rows}
            gone = [r.id for r in waiting if r.uidvalidity == validity and r.uid not in present]
            for part in chunks(gone):
                s.execute(
                    update(InboundItem)
                    .where(InboundItem.id.in_(part), InboundItem.moved.is_(False))
                    .values(moved=True, moved_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
        return known

    def _take(self, validity: int, batch: Sequence[int]) -> list[tuple[int, int, str]]:
        """Fetch and process one batch, each message in its own transaction; (item id, uid, status) taken."""
        ids = [self.remote[u] for u in batch]
        limit = self.config.inbound.max_message_size
        heads = {item_key(m.remote_id): m for m in self.provider.fetch_headers(self.source, ids)}
        small = [self.remote[u] for u in batch if u in heads and (heads[u].size or 0) <= limit]
        bodies = self.provider.fetch_bodies(self.source, small) if small else {}
        taken: list[tuple[int, int, str]] = []
        for uid in batch:
            head = heads.get(uid)
            if head is None:
                continue  # gone meanwhile (another worker moved it)
            raw = bodies.get(self.remote[uid])
            if raw is None and self.remote[uid] in small:
                continue  # gone between the two fetches
            found = Found(validity, uid, raw, head.size, parse_headers(head.headers).message_id)
            view = self._one(found)
            if view is not None:
                taken.append((view.id, uid, view.status))
                if view.status == InboundStatus.PROCESSED.value:
                    self.result.processed += 1
                else:
                    self.result.failed += 1
        return taken

    def _one(self, found: Found) -> InboundItemView | None:
        """One message in one transaction; None when another worker took it."""
        try:
            with self.sessions.begin() as s:
                return take(s, self.config, self.blobs, self.box.id, self.box.org_id, found, utcnow())
        except IntegrityError:
            return None  # recorded by someone else first
        except SQLAlchemyError as exc:
            if _unreachable(exc):
                raise
            log.warning("inbound message could not be stored: %s", error_summary(exc))
        # something in the message the database refused: recorded as failed, so it never blocks the mailbox
        failed = dataclasses.replace(found, raw=None)
        try:
            with self.sessions.begin() as s:
                return take(
                    s, self.config, self.blobs, self.box.id, self.box.org_id, failed, utcnow(),
                    failure="Postroom could not store it; its content was refused by the database.",
                )  # fmt: skip
        except IntegrityError:
            return None

    def _move(self, items: Iterable[tuple[int, int, str]]) -> None:
        """Move taken messages to their target folders, then mark them moved."""
        by_target: dict[str, list[tuple[int, int]]] = {}
        for item_id, uid, status in items:
            by_target.setdefault(self.box.target(status), []).append((item_id, uid))
        for name, pairs in by_target.items():
            target = self.targets.get(name) or RemoteFolder(name)
            self.provider.move(self.source, [self.remote.get(uid, str(uid)) for _, uid in pairs], target)
            with self.sessions.begin() as s:
                for part in chunks([item_id for item_id, _ in pairs]):
                    s.execute(
                        update(InboundItem)
                        .where(InboundItem.id.in_(part))
                        .values(moved=True, moved_at=utcnow())
                        .execution_options(synchronize_session=False)
                    )
            self.result.moved += len(pairs)


def item_key(remote_id: str) -> int:
    """The number an item is recorded under (``InboundItem.uid``) for a provider's message id: an
    IMAP UID as it is; an opaque id (Gmail's hex ids, Graph and EWS item ids) as the first 63 bits
    of its SHA-256, which is as unique in one mailbox as the id itself, e.g.
    ``item_key("4711") == 4711``."""
    if remote_id.isdigit() and len(remote_id) <= 18:
        return int(remote_id)
    return int.from_bytes(hashlib.sha256(remote_id.encode()).digest()[:8], "big") >> 1


def _unreachable(exc: SQLAlchemyError) -> bool:
    """The database itself went away (then the run stops; the next one resumes)."""
    return isinstance(exc, OperationalError)


# ------------------------------------------------------------------------------ retry


class RetryGone(Exception):
    """The item to retry has no raw message kept (it was over the size cap, so never fetched)
    and its message is no longer where it was left."""


def retry(config: Config, sessions: sessionmaker[Session], org_id: int, item_id: int) -> InboundItemView | None:
    """Run the pipeline again on ``item_id``'s kept raw message (one never fetched, being over
    the size cap then, is fetched now from where it was left); when it now succeeds and the
    message sits in the failed folder, move it to the processed folder (found by Message-ID).
    None when the item is not one of ``org_id``'s."""
    blobs = BlobStore(config.storage.blob_dir)
    with sessions() as s:
        row = s.execute(
            select(InboundItem.mailbox_id, InboundItem.status, InboundItem.message_id, InboundItem.moved, Body.path)
            .outerjoin(Body, Body.id == InboundItem.body_id)
            .where(InboundItem.id == item_id, InboundItem.org_id == org_id)
        ).first()
        if row is None:
            return None
        boxes = load_mailboxes(s, mailbox_id=row.mailbox_id)
    box = boxes[0] if boxes else None
    raw = (config.storage.blob_dir / row.path).read_bytes() if row.path is not None else None
    if raw is None and box is not None and row.message_id:
        raw = _fetch_again(config, sessions, box, row.message_id, box.failed_folder if row.moved else box.folder)
    if raw is None:
        raise RetryGone(item_id)
    was_failed = row.status == InboundStatus.FAILED.value
    with sessions.begin() as s:
        item = s.get(InboundItem, item_id, with_for_update=True)
        assert item is not None
        view = reapply(s, config, blobs, item, raw, utcnow())
    if not (was_failed and view.status == InboundStatus.PROCESSED.value and row.moved and box and view.message_id):
        return view
    provider = open_mailbox(config, sessions, box)
    try:
        failed = RemoteFolder(box.failed_folder)
        uid = provider.find_message(failed, view.message_id)
        if uid is not None:
            provider.move(failed, [uid], provider.ensure_folder(box.processed_folder))
    finally:
        provider.close()
    with sessions() as s:
        item = s.get(InboundItem, item_id)
        assert item is not None
        return item_view(s, item)


def _fetch_again(
    config: Config, sessions: sessionmaker[Session], box: MailboxInfo, message_id: str, folder_name: str
) -> bytes | None:
    provider = open_mailbox(config, sessions, box)
    try:
        folder = RemoteFolder(folder_name)
        uid = provider.find_message(folder, message_id)
        return None if uid is None else provider.fetch_bodies(folder, [uid]).get(uid)
    finally:
        provider.close()
