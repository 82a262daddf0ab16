"""Fetch and keep message bodies the body policy wants.

Policies (``sync.body_policy``): ``applicants`` (default) keeps the raw MIME of
messages that involve a known applicant, so private mail is not hoarded;
``all`` keeps every message; ``none`` keeps no bodies. The wanted set is a
query over the header index, so bodies for an applicant added later are
fetched by the next pass, and an interrupted pass simply resumes.

Raw MIME is written to the blob directory (content-addressed by SHA-256,
written to a temporary name and renamed) before its row is committed, so a
row never points at a missing file. A body that cannot be parsed is kept and
quarantined: the reason is recorded on the email and on its copies.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.mime import MalformedMessage, parse_message
from postroom.models import Body, Email, HistoryEntry, MessageCopy
from providers.base import MailProvider, RemoteFolder
from sync.store import chunks, insert_ignore

FETCH_CHUNK = 50  # bodies per provider round trip; bounds memory for large attachments
PREVIEW_CHARS = 500


def blob_path(blob_dir: Path, sha256: str) -> Path:
    return blob_dir / sha256[:2] / sha256[2:4] / f"{sha256}.eml"


def write_blob(blob_dir: Path, raw: bytes) -> tuple[str, Path]:
    sha = hashlib.sha256(raw).hexdigest()
    path = blob_path(blob_dir, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    return sha, path


class BodyFetcher:
    def __init__(self, sessions: sessionmaker[Session], config: Config, account_id: int) -> None:
        self.sessions = sessions
        self.policy = config.sync.body_policy
        self.blob_dir = config.storage.blob_dir
        self.account_id = account_id

    def wanted(self, folder_id: int) -> list[tuple[str, int]]:
        """(remote id, email id) of copies in the folder whose body the policy wants and we lack."""
        if self.policy == "none":
            return []
        q = (
            select(MessageCopy.remote_id, MessageCopy.email_id)
            .join(Email, Email.id == MessageCopy.email_id)
            .where(MessageCopy.folder_id == folder_id, Email.body_id.is_(None), Email.body_error.is_(None))
            .order_by(MessageCopy.id)
        )
        if self.policy == "applicants":
            q = q.where(exists().where(HistoryEntry.email_id == Email.id))
        with self.sessions() as s:
            rows = s.execute(q).tuples().all()
        seen: set[int] = set()
        out = []
        for remote_id, email_id in rows:  # one copy per email is enough
            if email_id is not None and email_id not in seen:
                seen.add(email_id)
                out.append((remote_id, email_id))
        return out

    def fetch_wanted(self, provider: MailProvider, folder_id: int, remote: RemoteFolder) -> int:
        stored = 0
        for part in chunks(self.wanted(folder_id), FETCH_CHUNK):
            email_of = dict(part)
            raws = provider.fetch_bodies(remote, list(email_of))
            with self.sessions.begin() as s:
                for remote_id, raw in raws.items():
                    if remote_id in email_of:
                        self._store(s, folder_id, remote_id, email_of[remote_id], raw)
                        stored += 1
        return stored

    def _store(self, s: Session, folder_id: int, remote_id: str, email_id: int, raw: bytes) -> None:
        sha, path = write_blob(self.blob_dir, raw)
        try:
            preview = (parse_message(raw).text_body or "")[:PREVIEW_CHARS]
            error = None
        except MalformedMessage as exc:
            preview, error = "", f"malformed message: {exc}"
        insert_ignore(
            s,
            Body.__table__,
            [
                {
                    "sha256": sha,
                    "size": len(raw),
                    "path": str(path.relative_to(self.blob_dir)),
                    "text_preview": preview,
                }
            ],
            ("sha256",),
        )
        body_id = s.scalar(select(Body.id).where(Body.sha256 == sha))
        s.execute(update(Email).where(Email.id == email_id).values(body_id=body_id, body_error=error))
        if error:
            s.execute(update(MessageCopy).where(MessageCopy.email_id == email_id).values(quarantine_reason=error))
