"""Fetch and keep message bodies the body policy wants.

Policies (``sync.body_policy``): ``applicants`` (default) keeps the raw MIME of
messages that involve a known applicant, so private mail is not hoarded;
``all`` keeps every message; ``none`` keeps no bodies. For ``applicants`` the
wanted set is marked on the emails (``emails.body_wanted``): set when a history
entry is recorded (while indexing, or when an applicant added later is
backfilled) and cleared when the body is stored, so the next pass fetches them,
an interrupted pass simply resumes, and an idle pass reads a partial index that
holds only the waiting emails instead of scanning the mailbox.

Raw MIME is written to the blob directory (content-addressed by SHA-256,
written to a temporary name and renamed) before its row is committed, so a
row never points at a missing file. A body that is not a message at all is
kept and quarantined: the reason is recorded on the email and on its copies.
The full MIME parse (text, HTML, attachments) is left to display time, off
the sync path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.mime import MalformedMessage, check_message
from postroom.models import Body, Email, MessageCopy
from providers.base import MailProvider, RemoteFolder
from sync.store import chunks, insert_ignore

FETCH_CHUNK = 50  # bodies per provider round trip and per transaction; bounds memory for large attachments


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
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(raw)
            os.replace(tmp, path)
        return sha, str(path.relative_to(self.root))


class BodyFetcher:
    def __init__(self, sessions: sessionmaker[Session], config: Config, account_id: int) -> None:
        self.sessions = sessions
        self.policy = config.sync.body_policy
        self.blobs = BlobStore(config.storage.blob_dir)
        self.account_id = account_id

    def wanted_by_folder(self) -> dict[int, list[tuple[str, int]]]:
        """Bodies the policy wants and we lack, for the whole account:
        folder id -> [(remote id, email id)], one copy per email (the first one met).

        With ``applicants`` this costs one read of a partial index that holds only the
        emails waiting for a body (usually none), whatever the size of the mailbox; only
        when there are some are their copies in this account looked up.
        """
        if self.policy == "none":
            return {}
        copies = select(MessageCopy.id, MessageCopy.folder_id, MessageCopy.remote_id, MessageCopy.email_id)
        rows: list[tuple[int, int, str, int | None]] = []
        with self.sessions() as s:
            if self.policy == "applicants":
                marked = list(s.scalars(select(Email.id).where(Email.body_wanted)))
                for part in chunks(marked):
                    q = copies.where(MessageCopy.email_id.in_(part), MessageCopy.account_id == self.account_id)
                    rows += s.execute(q).tuples().all()
            else:  # "all": every email of the account still without a body
                q = copies.join(Email, Email.id == MessageCopy.email_id).where(
                    MessageCopy.account_id == self.account_id, Email.body_id.is_(None), Email.body_error.is_(None)
                )
                rows = list(s.execute(q).tuples().all())
        rows.sort()  # by copy id: the order the messages were indexed in
        seen: set[int] = set()
        out: dict[int, list[tuple[str, int]]] = {}
        for _, folder_id, remote_id, email_id in rows:
            if email_id is not None and email_id not in seen:
                seen.add(email_id)
                out.setdefault(folder_id, []).append((remote_id, email_id))
        return out

    def fetch(
        self,
        provider: MailProvider,
        remote: RemoteFolder,
        wanted: Sequence[tuple[str, int]],
        heartbeat: Callable[[], None] = lambda: None,
    ) -> int:
        """Fetch and store these bodies from one folder, in chunks; returns how many were stored."""
        stored = 0
        for part in chunks(list(wanted), FETCH_CHUNK):
            email_of = dict(part)
            raws = provider.fetch_bodies(remote, list(email_of))
            got = [(email_of[rid], raw) for rid, raw in raws.items() if rid in email_of]
            self._store(got)
            stored += len(got)
            heartbeat()
        return stored

    def _store(self, items: list[tuple[int, bytes]]) -> None:
        """Write the blobs, then record them for their emails in one transaction."""
        if not items:
            return
        rows: dict[str, dict[str, object]] = {}
        links: list[tuple[int, str, str | None]] = []  # (email id, sha256, quarantine reason)
        for email_id, raw in items:
            sha, rel = self.blobs.write(raw)
            rows[sha] = {"sha256": sha, "size": len(raw), "path": rel}
            try:
                check_message(raw)
                error = None
            except MalformedMessage as exc:
                error = f"malformed message: {exc}"
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
