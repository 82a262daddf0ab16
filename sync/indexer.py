"""Index a batch of fetched headers: emails, copies, threads, applicant history.

One call to :meth:`Indexer.index` writes a batch in one transaction. Everything it
writes is an upsert keyed by Message-ID and fingerprint (per organisation) or by
provider identity (folder, remote id), so repeating a batch after a crash changes
nothing.

No message can stop a batch: header values arrive cleaned by
:func:`postroom.mime.parse_headers`, and if the database still refuses the batch the
transaction is rolled back and the batch split in halves, down to the message(s) it
refuses, which are quarantined (:mod:`sync.quarantine`) with the reason while the rest
is indexed. Only an error that means the database itself is away
(:func:`postroom.db.is_unavailable`) stops the pass.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.addresses import canonical_address, normalise_address
from postroom.db import is_unavailable
from postroom.logs import error_summary
from postroom.mime import DATE_RANGE, ParsedHeaders, clean_text, fingerprint, parse_headers, synthetic_message_id
from postroom.models import Email, MessageCopy, Participant
from providers.base import RemoteMessage
from sync.conversations import thread_keys
from sync.history import HistoryWriter, announce_received, own_addresses
from sync.quarantine import Placeholder, drop_placeholders, quarantine_headers
from sync.replies import Indexed, record_replies
from sync.store import chunks, insert_ignore, insert_ignore_returning
from sync.threads import ThreadAssigner

ROLES = ("from", "to", "cc", "bcc", "reply-to")
log = logging.getLogger("postroom.sync")

Key = tuple[str, str]  # (Message-ID, fingerprint): what makes an email one email


@dataclass
class IndexStats:
    indexed: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class _Parsed:
    msg: RemoteMessage
    headers: ParsedHeaders
    message_id: str
    fp: str
    people: list[tuple[str, str]]  # (canonical address, role)

    @property
    def key(self) -> Key:
        return (self.message_id, self.fp)


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


def _sane_date(when: datetime | None) -> datetime | None:
    """A server-given date (INTERNALDATE is a file's mtime on some servers) that every
    database and every date calculation can hold, else None."""
    return when if when is not None and DATE_RANGE[0] <= when < DATE_RANGE[1] else None


class Indexer:
    def __init__(
        self, sessions: sessionmaker[Session], org_id: int, account_id: int, *, use_thread_hints: bool
    ) -> None:
        self.sessions = sessions
        self.org_id = org_id
        self.account_id = account_id
        self.use_thread_hints = use_thread_hints
        self._own: frozenset[str] | None = None

    def index(self, folder_id: int, messages: Sequence[RemoteMessage], *, replace: Collection[str] = ()) -> IndexStats:
        """Index these messages of one folder. ``replace`` names messages whose placeholder
        copies (quarantined earlier) give way to them in the same transaction."""
        stats = IndexStats()
        parsed: list[_Parsed] = []
        unreadable: list[Placeholder] = []
        for m in messages:
            try:
                h = parse_headers(m.headers)
            except Exception as exc:  # parse_headers never raises by design; a bug must not block the folder
                unreadable.append(Placeholder(m.remote_id, None, f"unparseable headers: {error_summary(exc)}", m.size))
                continue
            sender = normalise_address(h.from_[0].email) if h.from_ else None
            mid = h.message_id or synthetic_message_id(h)
            parsed.append(_Parsed(m, h, mid, fingerprint(sender, h.date, h.subject), participants(h)))
        self._write_or_split(folder_id, parsed, set(replace), stats)
        if unreadable:
            self._quarantine(folder_id, unreadable, stats)
        return stats

    def _write_or_split(self, folder_id: int, parsed: list[_Parsed], replace: set[str], stats: IndexStats) -> None:
        if not parsed:
            return
        try:
            with self.sessions.begin() as s:
                drop_placeholders(s, folder_id, [p.msg.remote_id for p in parsed if p.msg.remote_id in replace])
                email_ids = self._upsert_emails(s, parsed)
                copies = [self._copy_row(folder_id, p.msg, email_ids[p.key]) for p in parsed]
                insert_ignore(s, MessageCopy.__table__, copies, ("folder_id", "remote_id"))
        except Exception as exc:
            if is_unavailable(exc):
                raise
            if len(parsed) == 1:
                p = parsed[0]
                reason = f"cannot be stored: {error_summary(exc)}"
                log.warning("message quarantined: %s", reason, extra={"account_id": self.account_id})
                self._quarantine(folder_id, [Placeholder(p.msg.remote_id, p.message_id, reason, p.msg.size)], stats)
                return
            half = len(parsed) // 2  # roll back, split, and find the message(s) the database refuses
            self._write_or_split(folder_id, parsed[:half], replace, stats)
            self._write_or_split(folder_id, parsed[half:], replace, stats)
            return
        stats.indexed += len(parsed)

    def _quarantine(self, folder_id: int, items: list[Placeholder], stats: IndexStats) -> None:
        """Set these aside (a message tried again keeps its entry, one attempt more)."""
        with self.sessions.begin() as s:
            quarantine_headers(s, self.account_id, folder_id, items)
        stats.quarantined += len(items)

    def _copy_row(self, folder_id: int, m: RemoteMessage, email_id: int | None) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "folder_id": folder_id,
            "remote_id": m.remote_id,
            "email_id": email_id,
            "flags": clean_text(" ".join(sorted(m.flags))),
            "size": m.size,
            "internal_date": _sane_date(m.internal_date),
            "thread_hint": m.thread_hint,
            "provider_message_id": m.provider_message_id,
            "quarantine_reason": None,
        }

    def _upsert_emails(self, s: Session, parsed: Sequence[_Parsed]) -> dict[Key, int]:
        """Ids for every email of the batch; new ones are inserted, threaded and matched.

        A Message-ID that another email of the organisation already has, with a different
        fingerprint, is a reused id: the message becomes an email of its own and both are
        marked ``id_reused``, so neither hides the other."""
        mids = list(dict.fromkeys(p.message_id for p in parsed))
        ids, known_mids = self._email_ids(s, mids)
        fresh: dict[Key, _Parsed] = {}
        for p in parsed:
            if p.key not in ids and p.key not in fresh:
                fresh[p.key] = p
        if not fresh:
            return ids
        if self._own is None:
            self._own = own_addresses(s, self.org_id)
        fresh_mids = [k[0] for k in fresh]
        reused = {mid for mid in fresh_mids if mid in known_mids or fresh_mids.count(mid) > 1}
        assigner = ThreadAssigner(s, self.org_id, self._own)
        thread_of = assigner.assign([(key[0], self._keys(p), p.headers) for key, p in fresh.items()])
        rows = []
        for (mid, fp), p in fresh.items():
            h = p.headers
            sender = h.from_[0] if h.from_ else None
            rows.append(
                {
                    "org_id": self.org_id,
                    "message_id": mid,
                    "fingerprint": fp,
                    "id_reused": mid in reused,
                    "thread_id": thread_of[mid],
                    "subject": h.subject or "",
                    "from_addr": normalise_address(sender.email) if sender else None,
                    "from_name": (sender.name or "") if sender else "",
                    "sent_at": h.date or _sane_date(p.msg.internal_date),
                    "in_reply_to": h.in_reply_to[0] if h.in_reply_to else None,
                    "references": list(h.references),
                    "to_addrs": [normalise_address(a.email) for a in h.to],
                    "cc_addrs": [normalise_address(a.email) for a in h.cc],
                }
            )
        conflict = ("org_id", "message_id", "fingerprint")
        inserted = insert_ignore_returning(s, Email.__table__, rows, conflict, ("message_id", "fingerprint"))  # type: ignore[arg-type]
        ids.update(inserted)
        raced = [key for key in fresh if key not in ids]  # inserted meanwhile by another account's sync
        if raced:
            ids.update(self._email_ids(s, [mid for mid, _ in raced])[0])
        if reused:
            log.info(
                "%d message(s) reuse a Message-ID of another message",
                len(reused),
                extra={"account_id": self.account_id},
            )
            for part in chunks(sorted(reused)):
                s.execute(
                    update(Email)
                    .where(Email.org_id == self.org_id, Email.message_id.in_(part), Email.id_reused.is_(False))
                    .values(id_reused=True)
                    .execution_options(synchronize_session=False)
                )
        part_rows = [
            {"email_id": ids[key], "address": addr, "role": role, "org_id": self.org_id}
            for key, p in fresh.items()
            for addr, role in p.people
        ]
        insert_ignore(s, Participant.__table__, part_rows, ("email_id", "address", "role"))
        history = HistoryWriter(s, self.org_id)
        entries = history.record(
            [
                (
                    ids[key],
                    p.headers.date or _sane_date(p.msg.internal_date),
                    [a for a, _ in p.people],
                    _sender(p.headers),
                )
                for key, p in fresh.items()
            ]
        )
        entries += record_replies(
            s,
            self.org_id,
            self._own,
            [
                Indexed(
                    ids[key], key[0], p.headers, _sender(p.headers), p.headers.date or _sane_date(p.msg.internal_date)
                )
                for key, p in fresh.items()
            ],
        )
        if entries:
            by_id = {inserted[key]: row for key, row in zip(fresh, rows, strict=True) if key in inserted}
            announce_received(s, self.org_id, self.account_id, entries, by_id, history.senders)
        return ids

    def _keys(self, p: _Parsed) -> tuple[str, ...]:
        keys = (p.message_id, *thread_keys(p.headers))
        if self.use_thread_hints and p.msg.thread_hint:
            keys += (f"hint:{self.account_id}:{p.msg.thread_hint}",)
        return tuple(dict.fromkeys(keys))

    def _email_ids(self, s: Session, mids: Sequence[str]) -> tuple[dict[Key, int], set[str]]:
        """Emails with these Message-IDs: ``{(message id, fingerprint): id}`` and the ids found."""
        out: dict[Key, int] = {}
        for part in chunks(mids):
            rows = s.execute(
                select(Email.message_id, Email.fingerprint, Email.id).where(
                    Email.org_id == self.org_id, Email.message_id.in_(part)
                )
            )
            out.update({(mid, fp): eid for mid, fp, eid in rows})
        return out, {mid for mid, _ in out}


def _sender(h: ParsedHeaders) -> str | None:
    return canonical_address(h.from_[0].email) if h.from_ else None
