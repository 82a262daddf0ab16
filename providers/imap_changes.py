"""What changed in an IMAP folder since a cursor: everything behind :meth:`providers.imap.ImapProvider.fetch_changes`.

Three paths, chosen by what the server offers and what the cursor holds:

* no cursor: SELECT and list every UID (the initial listing);
* CONDSTORE (and QRESYNC) with a ``highestmodseq`` cursor: a STATUS that
  usually shows nothing changed, else a re-SELECT and a CHANGEDSINCE fetch
  (or the QRESYNC SELECT's own VANISHED/FETCH responses);
* otherwise: list every UID with its flags and compare digests.

Sync cursors are JSON: ``{"v": 1, "uidvalidity": 7, "uidnext": 120, "exists": 100,
"highestmodseq": 431}``; without CONDSTORE, ``"flags"`` holds a digest of every
message's flags instead of ``highestmodseq``. A no-change pass costs one STATUS
with CONDSTORE, and one SELECT plus one ``UID FETCH 1:* (UID FLAGS)`` without it.

The functions send their commands through the provider's
:class:`~providers.imap_session.ImapSession`; they hold no state of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from providers import imap_protocol as proto
from providers.base import ChangeSet, FlagUpdate, RemoteFolder
from providers.common import cursors
from providers.errors import CursorInvalidError
from providers.imap_session import ImapSession


@dataclass(frozen=True)
class Cursor:
    """A decoded IMAP sync cursor; :meth:`dump` and :meth:`load` are the wire form."""

    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None = None
    flags: str | None = None

    def dump(self) -> str:
        return cursors.dump(
            {
                "uidvalidity": self.uidvalidity,
                "uidnext": self.uidnext,
                "exists": self.exists,
                "highestmodseq": self.highestmodseq,
                "flags": self.flags,
            }
        )

    @classmethod
    def load(cls, text: str) -> Cursor:
        return cursors.load(text, "IMAP", cls._read)

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> Cursor:
        modseq, flags = data.get("highestmodseq"), data.get("flags")
        return cls(
            uidvalidity=int(data["uidvalidity"]),
            uidnext=int(data["uidnext"]),
            exists=int(data["exists"]),
            highestmodseq=None if modseq is None else int(modseq),
            flags=None if flags is None else str(flags),
        )


def message_flags(values: Sequence[str]) -> frozenset[str]:
    """The flags we track for a message: all but the session-only ``\\Recent``."""
    return frozenset(f for f in values if f.lower() != "\\recent")


def _digest(listing: dict[int, frozenset[str]]) -> str:
    h = hashlib.sha1()
    for uid in sorted(listing):
        h.update(f"{uid}:{' '.join(sorted(listing[uid]))}\n".encode())
    return h.hexdigest()[:20]


def fetch_changes(s: ImapSession, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
    """What changed in ``folder`` since ``cursor`` (None: list everything).

    The answer is current as of this call, or as of the ``list_folders()`` call
    moments before it when that returned the folder's STATUS (LIST-STATUS):
    anything newer is reported by the next call, so nothing is lost.
    """
    s.connection()
    if cursor is None:
        s.listed_status(folder)  # an initial listing SELECTs anyway; drop the snapshot
    condstore = s.has("CONDSTORE")
    if cursor is None:
        return _initial(s, folder, condstore)
    old = Cursor.load(cursor)
    if condstore and old.highestmodseq is not None:
        if s.selected is not None and s.selected.name == folder.name:
            # STATUS on the selected folder may show the session's stale view;
            # a QRESYNC/CONDSTORE re-SELECT costs one command just the same
            return _modseq_changes(s, folder, old, qresync=s.has("QRESYNC"))
        status = s.listed_status(folder)
        if status is None or "HIGHESTMODSEQ" not in status:
            _, responses = s.command("STATUS", s.wire(folder), f"({s.status_items()})")
            status = s.parse(proto.parse_status, responses.get("STATUS", []))
        if status.get("UIDVALIDITY") != old.uidvalidity:
            raise CursorInvalidError(f"{folder.name}: UIDVALIDITY changed")
        if (status.get("UIDNEXT"), status.get("MESSAGES"), status.get("HIGHESTMODSEQ")) == (
            old.uidnext,
            old.exists,
            old.highestmodseq,
        ):
            return ChangeSet(cursor=cursor)
        return _modseq_changes(s, folder, old, qresync=s.has("QRESYNC"))
    return _listing_changes(s, folder, old)


def _uid_listing(s: ImapSession) -> dict[int, frozenset[str]]:
    assert s.selected is not None
    if s.selected.exists == 0:
        return {}
    _, responses = s.command("UID", "FETCH", "1:*", "(UID FLAGS)")
    items = s.parse(proto.parse_fetch, responses.get("FETCH", []))
    return {i["UID"]: message_flags(i.get("FLAGS", ())) for i in items if "UID" in i}


def _initial(s: ImapSession, folder: RemoteFolder, condstore: bool) -> ChangeSet:
    s.select(folder)
    sel = s.selected
    assert sel is not None
    digest = None
    if condstore and sel.highestmodseq is not None:
        uids = sorted(_search_uids(s, "1:*")) if sel.exists else []
    else:
        listing = _uid_listing(s)
        uids, digest = sorted(listing), _digest(listing)
    new_cursor = Cursor(
        uidvalidity=sel.uidvalidity,
        uidnext=max([sel.uidnext, *(u + 1 for u in uids[-1:])]),
        exists=len(uids),
        highestmodseq=sel.highestmodseq if digest is None else None,
        flags=digest,
    )
    return ChangeSet(new=tuple(str(u) for u in uids), cursor=new_cursor.dump())


def _search_uids(s: ImapSession, uid_range: str) -> list[int]:
    _, responses = s.command("UID", "SEARCH", "UID", uid_range)
    return s.parse(proto.parse_search, responses.get("SEARCH", []))  # type: ignore[no-any-return]


def _new_uids(s: ImapSession, since: int) -> list[int]:
    """UIDs >= since; ``UID SEARCH UID n:*`` also matches the last message when n > max."""
    assert s.selected is not None
    if s.selected.uidnext and s.selected.uidnext <= since:
        return []
    return sorted(u for u in _search_uids(s, f"{since}:*") if u >= since)


def _modseq_changes(s: ImapSession, folder: RemoteFolder, old: Cursor, qresync: bool) -> ChangeSet:
    known = (old.uidvalidity, old.highestmodseq) if qresync and old.highestmodseq is not None else None
    responses = s.select(folder, qresync=known)
    sel = s.selected
    assert sel is not None
    if sel.uidvalidity != old.uidvalidity:
        raise CursorInvalidError(f"{folder.name}: UIDVALIDITY changed")
    if sel.highestmodseq is None:  # the server stopped keeping modseqs for this folder
        return _listing_changes(s, folder, old, selected=True)
    removed: list[int] = []
    present: frozenset[str] | None = None
    if qresync:
        vanished = s.parse(proto.parse_vanished, responses.get("VANISHED", []))
        removed = sorted(u for u in set(vanished) if u < old.uidnext)
        fetched = s.parse(proto.parse_fetch, responses.get("FETCH", []))
    elif sel.highestmodseq != old.highestmodseq and old.uidnext > 1:
        _, fetch_responses = s.command(
            "UID", "FETCH", f"1:{old.uidnext - 1}", "(UID FLAGS)", f"(CHANGEDSINCE {old.highestmodseq})"
        )
        fetched = s.parse(proto.parse_fetch, fetch_responses.get("FETCH", []))
    else:
        fetched = []
    gone = set(removed)
    changed = {
        i["UID"]: message_flags(i["FLAGS"])
        for i in fetched
        if "UID" in i and "FLAGS" in i and i["UID"] < old.uidnext and i["UID"] not in gone
    }
    new = _new_uids(s, old.uidnext)
    if not qresync and sel.exists != old.exists + len(new):
        present = frozenset(str(u) for u in _search_uids(s, "1:*")) if sel.exists else frozenset()
    new_cursor = Cursor(
        uidvalidity=sel.uidvalidity,
        uidnext=max([sel.uidnext, old.uidnext, *(u + 1 for u in new[-1:])]),
        exists=sel.exists,
        highestmodseq=sel.highestmodseq,
    )
    return ChangeSet(
        new=tuple(str(u) for u in new),
        changed=tuple(FlagUpdate(str(u), f) for u, f in sorted(changed.items())),
        removed=tuple(str(u) for u in removed),
        present=present,
        cursor=new_cursor.dump(),
    )


def _listing_changes(s: ImapSession, folder: RemoteFolder, old: Cursor, selected: bool = False) -> ChangeSet:
    """Without CONDSTORE: list every UID with its flags and compare digests."""
    if not selected:
        s.select(folder)
    sel = s.selected
    assert sel is not None
    if sel.uidvalidity != old.uidvalidity:
        raise CursorInvalidError(f"{folder.name}: UIDVALIDITY changed")
    listing = _uid_listing(s)
    known = {u: f for u, f in listing.items() if u < old.uidnext}
    new = sorted(u for u in listing if u >= old.uidnext)
    expunged = len(known) != old.exists
    flags_changed = old.flags is None or _digest(known) != old.flags
    new_cursor = Cursor(
        uidvalidity=sel.uidvalidity,
        uidnext=max([sel.uidnext, old.uidnext, *(u + 1 for u in new[-1:])]),
        exists=len(listing),
        flags=_digest(listing),
    )
    changed = () if not flags_changed else tuple(FlagUpdate(str(u), f) for u, f in sorted(known.items()))
    return ChangeSet(
        new=tuple(str(u) for u in new),
        changed=changed,
        present=frozenset(str(u) for u in listing) if expunged else None,
        cursor=new_cursor.dump(),
    )
