"""Index a batch of fetched headers: emails, copies, threads, applicant history.

One call to :meth:`Indexer.index` is one transaction. Everything it writes is
an upsert keyed by Message-ID (per organisation) or by provider identity
(folder, remote id), so repeating a batch after a crash changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.addresses import canonical_address, normalise_address
from postroom.mime import ParsedHeaders, parse_headers, synthetic_message_id
from postroom.models import Email, MessageCopy, Participant
from providers.base import RemoteMessage
from sync.conversations import thread_keys
from sync.history import HistoryWriter, own_addresses
from sync.store import chunks, insert_ignore, insert_ignore_returning
from sync.threads import ThreadAssigner

ROLES = ("from", "to", "cc", "bcc", "reply-to")


@dataclass
class IndexStats:
    indexed: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class _Parsed:
    msg: RemoteMessage
    headers: ParsedHeaders
    message_id: str
    people: list[tuple[str, str]]  # (canonical address, role)


def participants(h: ParsedHeaders) -> list[tuple[str, str]]:
    """(canonical address, role) pairs of everyone on the message, deduplicated."""
    seen: set[tuple[str, str]] = set()
    out = []
    for role, addrs in (("from", h.from_), ("to", h.to), ("cc", h.cc), ("bcc", h.bcc), ("reply-to", h.reply_to)):
        for a in addrs:
            c = canonical_address(a.email)
            if c and (c, role) not in seen:
                seen.add((c, role))
                out.append((c, role))
    return out


class Indexer:
    def __init__(
        self, sessions: sessionmaker[Session], org_id: int, account_id: int, *, use_thread_hints: bool, body_policy: str
    ) -> None:
        self.sessions = sessions
        self.org_id = org_id
        self.account_id = account_id
        self.use_thread_hints = use_thread_hints
        self.body_policy = body_policy
        self._own: frozenset[str] | None = None

    def index(self, folder_id: int, messages: Sequence[RemoteMessage]) -> IndexStats:
        stats = IndexStats()
        parsed: list[_Parsed] = []
        copies: list[dict[str, Any]] = []
        for m in messages:
            try:
                h = parse_headers(m.headers)
            except Exception as exc:  # parse_headers never raises by design; a bug must not block the folder
                copies.append(self._copy_row(folder_id, m, None, f"unparseable headers: {exc!r}"))
                stats.quarantined += 1
                continue
            parsed.append(_Parsed(m, h, h.message_id or synthetic_message_id(h), participants(h)))
        with self.sessions.begin() as s:
            email_ids = self._upsert_emails(s, parsed)
            for p in parsed:
                copies.append(self._copy_row(folder_id, p.msg, email_ids[p.message_id], None))
            insert_ignore(s, MessageCopy.__table__, copies, ("folder_id", "remote_id"))
        stats.indexed = len(parsed)
        return stats

    def _copy_row(self, folder_id: int, m: RemoteMessage, email_id: int | None, reason: str | None) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "folder_id": folder_id,
            "remote_id": m.remote_id,
            "email_id": email_id,
            "flags": " ".join(sorted(m.flags)),
            "size": m.size,
            "internal_date": m.internal_date,
            "thread_hint": m.thread_hint,
            "provider_message_id": m.provider_message_id,
            "quarantine_reason": reason,
        }

    def _upsert_emails(self, s: Session, parsed: Sequence[_Parsed]) -> dict[str, int]:
        """Ids for every Message-ID in the batch; new ones are inserted, threaded and matched."""
        mids = list(dict.fromkeys(p.message_id for p in parsed))
        ids = self._email_ids(s, mids)
        fresh: dict[str, _Parsed] = {}
        for p in parsed:
            if p.message_id not in ids and p.message_id not in fresh:
                fresh[p.message_id] = p
        if not fresh:
            return ids
        if self._own is None:
            self._own = own_addresses(s, self.org_id)
        assigner = ThreadAssigner(s, self.org_id, self._own)
        thread_of = assigner.assign([(mid, self._keys(p), p.headers) for mid, p in fresh.items()])
        rows = []
        for mid, p in fresh.items():
            h = p.headers
            sender = h.from_[0] if h.from_ else None
            rows.append(
                {
                    "org_id": self.org_id,
                    "message_id": mid,
                    "thread_id": thread_of[mid],
                    "subject": h.subject or "",
                    "from_addr": normalise_address(sender.email) if sender else None,
                    "from_name": (sender.name or "") if sender else "",
                    "sent_at": h.date or p.msg.internal_date,
                    "in_reply_to": h.in_reply_to[0] if h.in_reply_to else None,
                    "references": list(h.references),
                    "to_addrs": [normalise_address(a.email) for a in h.to],
                    "cc_addrs": [normalise_address(a.email) for a in h.cc],
                }
            )
        ids.update(insert_ignore_returning(s, Email.__table__, rows, ("org_id", "message_id"), "message_id"))
        raced = [mid for mid in fresh if mid not in ids]  # inserted meanwhile by another account's sync
        if raced:
            ids.update(self._email_ids(s, raced))
        part_rows = [
            {"email_id": ids[mid], "address": addr, "role": role, "org_id": self.org_id}
            for mid, p in fresh.items()
            for addr, role in p.people
        ]
        insert_ignore(s, Participant.__table__, part_rows, ("email_id", "address", "role"))
        HistoryWriter(s, self.org_id).record(
            [
                (
                    ids[mid],
                    p.headers.date or p.msg.internal_date,
                    [a for a, _ in p.people],
                    _sender(p.headers),
                )
                for mid, p in fresh.items()
            ]
        )
        return ids

    def _keys(self, p: _Parsed) -> tuple[str, ...]:
        keys = (p.message_id, *thread_keys(p.headers))
        if self.use_thread_hints and p.msg.thread_hint:
            keys += (f"hint:{self.account_id}:{p.msg.thread_hint}",)
        return tuple(dict.fromkeys(keys))

    def _email_ids(self, s: Session, mids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in chunks(mids):
            rows = s.execute(
                select(Email.message_id, Email.id).where(Email.org_id == self.org_id, Email.message_id.in_(part))
            )
            out.update({mid: eid for mid, eid in rows})
        return out


def _sender(h: ParsedHeaders) -> str | None:
    return canonical_address(h.from_[0].email) if h.from_ else None
