"""Fetch and keep message bodies the body policy wants.

Policies (``sync.body_policy``): ``applicants`` (default) keeps the raw MIME of
messages that involve a known applicant, so private mail is not hoarded;
``all`` keeps every message; ``none`` keeps no bodies. For ``applicants`` the
wanted set is marked on the emails (``emails.body_wanted``): set when a history
entry is recorded (while indexing, or when an applicant added later is
backfilled) and cleared when the body is stored, so the next pass fetches them,
an interrupted pass simply resumes, and an idle pass reads a partial index that
holds only the waiting emails instead of scanning the mailbox.

Bodies are fetched in chunks bounded by count (:data:`FETCH_CHUNK`) and by
the sizes the header index already knows (``sync.body_chunk_bytes``), so a
worker never holds many large messages in memory at once; a message larger
than ``sync.max_message_size`` (by the index, or once fetched) is not fetched
or stored, and that is recorded (quarantined at the body stage), so it is not
fetched again every pass. A body the server refuses or garbles on every fetch
is quarantined the same way (sync.isolation), and the rest of the chunk is kept.

Raw MIME is written to the blob directory (content-addressed by SHA-256,
written to a private temporary file and renamed; directories 0700, files 0600)
before its row is committed, so a row never points at a missing file. A body
that is not a message at all is kept and quarantined: the reason is recorded on
the email and on its copies. The full MIME parse (text, HTML, attachments) is
left to display time, off the sync path; only a preview (its first words and how many
attachments it has, :func:`postroom.message_parts.preview`, from its first 256 KiB) is
kept with it, so a timeline of a thousand messages reads two columns, not a thousand files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.message_parts import Preview, preview
from postroom.mime import MalformedMessage, check_message
from postroom.models import Body, Email, MessageCopy
from postroom.private_files import FILE_MODE, private_dir
from postroom.states import BodyPolicy
from providers.base import MailProvider, RemoteFolder
from sync.isolation import isolate
from sync.quarantine import quarantine_bodies
from sync.store import chunks, insert_ignore

FETCH_CHUNK = 50  # bodies per provider round trip and per transaction, at most

Wanted = tuple[str, int, int | None]  # (remote id, email id, size the index knows)


def blob_path(blob_dir: Path, sha256: str) -> Path:
    """256 shard directories: few enough to create once, enough for millions of files."""
    return blob_dir / sha256[:2] / f"{sha256}.eml"


class BlobStore:
    """Content-addressed files under the blob directory, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: set[Path] = set()

    def write(self, raw: bytes) -> tuple[str, str]:
        """Store ``raw``; returns (sha256, path relative to the blob directory)."""
        sha = hashlib.sha256(raw).hexdigest()
        path = blob_path(self.root, sha)
        if path.parent not in self._dirs:
            missing = [d for d in (path.parent, *path.parents) if not d.exists()]
            for d in reversed(missing):  # every directory created here is private
                private_dir(d)
            self._dirs.add(path.parent)
        if not path.exists():
            # a name of this thread's own: two accounts of one process may store the same body at once
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            os.replace(tmp, path)
        return sha, str(path.relative_to(self.root))


class BodyFetcher:
    def __init__(self, sessions: sessionmaker[Session], config: Config, account_id: int) -> None:
        self.sessions = sessions
        self.policy = config.sync.body_policy
        self.max_size = config.sync.max_message_size
        self.chunk_bytes = config.sync.body_chunk_bytes
        self.blobs = BlobStore(config.storage.blob_dir)
        self.account_id = account_id

    def wanted_by_folder(self) -> dict[int, list[Wanted]]:
        """Bodies the policy wants and we lack, for the whole account:
        folder id -> [(remote id, email id, size)], one copy per email (the first one met).

        With ``applicants`` this costs one read of a partial index that holds only the
        emails waiting for a body (usually none), whatever the size of the mailbox; only
        when there are some are their copies in this account looked up.
        """
        if self.policy == BodyPolicy.NONE:
            return {}
        copies = select(
            MessageCopy.id, MessageCopy.folder_id, MessageCopy.remote_id, MessageCopy.email_id, MessageCopy.size
        )
        rows: list[tuple[int, int, str, int | None, int | None]] = []
        with self.sessions() as s:
            if self.policy == BodyPolicy.APPLICANTS:
                marked = list(s.scalars(select(Email.id).where(Email.body_wanted)))
                for part in chunks(marked):
                    q = copies.where(MessageCopy.email_id.in_(part), MessageCopy.account_id == self.account_id)
                    rows += s.execute(q).tuples().all()
            else:  # BodyPolicy.ALL: every email of the account still without a body
                q = copies.join(Email, Email.id == MessageCopy.email_id).where(
                    MessageCopy.account_id == self.account_id, Email.body_id.is_(None), Email.body_error.is_(None)
                )
                rows = list(s.execute(q).tuples().all())
        rows.sort()  # by copy id: the order the messages were indexed in
        seen: set[int] = set()
        out: dict[int, list[Wanted]] = {}
        for _, folder_id, remote_id, email_id, size in rows:
            if email_id is not None and email_id not in seen:
                seen.add(email_id)
                out.setdefault(folder_id, []).append((remote_id, email_id, size))
        return out

    def fetch(
        self,
        provider: MailProvider,
        folder_id: int,
        remote: RemoteFolder,
        wanted: Sequence[Wanted],
        heartbeat: Callable[[], None] = lambda: None,
    ) -> tuple[int, int]:
        """Fetch and store these bodies from one folder, in chunks bounded by count and by
        size; returns (bodies stored, bodies quarantined)."""
        too_big = [(rid, eid, self._too_big(size)) for rid, eid, size in wanted if size and size > self.max_size]
        quarantined = self._quarantine(folder_id, too_big)
        stored = 0
        for part in self._chunks([w for w in wanted if not (w[2] and w[2] > self.max_size)]):
            got, bad = self._fetch_chunk(provider, folder_id, remote, part)  # its bodies are gone on return
            stored += got
            quarantined += bad
            heartbeat()
        return stored, quarantined

    def _fetch_chunk(
        self, provider: MailProvider, folder_id: int, remote: RemoteFolder, part: Sequence[Wanted]
    ) -> tuple[int, int]:
        """One chunk: fetch, store what fits, quarantine the rest; (stored, quarantined)."""
        email_of = {rid: eid for rid, eid, _ in part}
        got = isolate(lambda ids: list(provider.fetch_bodies(remote, ids).items()), list(email_of))
        keep = [(email_of[rid], raw) for rid, raw in got.items if rid in email_of and len(raw) <= self.max_size]
        self._store(keep)
        bad = [(rid, email_of[rid], self._too_big(len(raw))) for rid, raw in got.items if len(raw) > self.max_size]
        bad += [
            (rid, email_of[rid], f"the server refused or garbled it on every fetch: {why}")
            for rid, why in got.failed.items()
        ]
        return len(keep), self._quarantine(folder_id, bad)

    def _chunks(self, wanted: Sequence[Wanted]) -> Iterator[list[Wanted]]:
        """At most FETCH_CHUNK bodies and ``body_chunk_bytes`` by the sizes the index knows (a
        message of unknown size counts as a whole chunk; a larger one goes alone)."""
        part: list[Wanted] = []
        total = 0
        for item in wanted:
            size = item[2] if item[2] is not None else self.chunk_bytes
            if part and (len(part) >= FETCH_CHUNK or total + size > self.chunk_bytes):
                yield part
                part, total = [], 0
            part.append(item)
            total += size
        if part:
            yield part

    def _too_big(self, size: int) -> str:
        return f"larger than sync.max_message_size ({size} bytes, the limit is {self.max_size}); not stored"

    def _quarantine(self, folder_id: int, items: list[tuple[str, int, str]]) -> int:
        if items:
            with self.sessions.begin() as s:
                quarantine_bodies(s, folder_id, items)
        return len(items)

    def _store(self, items: list[tuple[int, bytes]]) -> None:
        """Write the blobs, then record them for their emails in one transaction."""
        if not items:
            return
        rows: dict[str, dict[str, object]] = {}
        links: list[tuple[int, str, str | None]] = []  # (email id, sha256, quarantine reason)
        for email_id, raw in items:
            sha, rel = self.blobs.write(raw)
            try:
                check_message(raw)
                error = None
            except MalformedMessage as exc:
                error = f"malformed message: {exc}"
            # its first words and attachment count, for timelines (read from its first 256 KiB)
            seen = preview(raw) if error is None else Preview("", 0)
            rows[sha] = {
                "sha256": sha,
                "size": len(raw),
                "path": rel,
                "snippet": seen.snippet,
                "attachments": seen.attachments,
            }
            links.append((email_id, sha, error))
        with self.sessions.begin() as s:
            insert_ignore(s, Body.__table__, list(rows.values()), ("sha256",))
            ids = dict(s.execute(select(Body.sha256, Body.id).where(Body.sha256.in_(list(rows)))).tuples().all())
            emails = cast(Table, Email.__table__)
            s.execute(
                update(emails)
                .where(emails.c.id == bindparam("eid"))
                .values(body_id=bindparam("bid"), body_error=bindparam("err"), body_wanted=False),
                [{"eid": eid, "bid": ids[sha], "err": err} for eid, sha, err in links],
            )
            bad = [{"eid": eid, "err": err} for eid, _, err in links if err]
            if bad:
                copies = cast(Table, MessageCopy.__table__)
                s.execute(
                    update(copies)
                    .where(copies.c.email_id == bindparam("eid"))
                    .values(quarantine_reason=bindparam("err")),
                    bad,
                )
