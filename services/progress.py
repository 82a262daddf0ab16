"""How far the sync of a mailbox got: messages indexed of those found, folders done.

A long initial sync (a mailbox of years) takes a while; the web app and ``postroom sync`` show
its progress from what the engine records on every folder as it works (:mod:`sync.engine`):
``folders.messages_found`` (the messages the server holds, from the folder's complete listing;
None until it is listed), ``folders.messages_indexed`` (those in the header index, written once
per batch) and ``folders.state`` (``incremental`` once the folder's initial sync is done).
Reading it is one query over the folder rows, whatever the size of the mailboxes, so it can be
polled::

    >>> [p.summary() for p in account_progress(session, org_id)]  # doctest: +SKIP
    ['alice@example.com: 1,240 of 10,000 messages, 2 of 7 folders']

A folder not listed yet counts as found what it has indexed (nothing, on a first sync), so the
number found grows as the sync reaches further folders. Folders gone from the server are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from postroom.models import Folder, MailAccount
from postroom.states import FolderState
from sync.leases import Owner


@dataclass(frozen=True)
class AccountProgress:
    """One account's sync progress. ``initial``: its initial sync is not done yet — some folder's
    is unfinished, or the account has never been synced and has no folders yet."""

    account_id: int
    email: str
    folders_total: int
    folders_done: int
    messages_found: int
    messages_indexed: int
    initial: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "email": self.email,
            "folders_total": self.folders_total,
            "folders_done": self.folders_done,
            "messages_found": self.messages_found,
            "messages_indexed": self.messages_indexed,
            "initial": self.initial,
        }

    def summary(self) -> str:
        """One line, e.g. ``alice@example.com: 1,240 of 10,000 messages, 2 of 7 folders``."""
        return (
            f"{self.email}: {self.messages_indexed:,} of {self.messages_found:,} messages, "
            f"{self.folders_done} of {self.folders_total} folders"
        )


def account_progress(session: Session, org_id: int, account_id: int | None = None) -> list[AccountProgress]:
    """The progress of the organisation's accounts (or of just ``account_id``, if it is one of
    them), by account id. Accounts of another organisation are never returned."""
    where = MailAccount.org_id == org_id
    if account_id is not None:
        where = and_(where, MailAccount.id == account_id)
    return _progress(session, where)


def syncing_in_this_process(session: Session) -> list[AccountProgress]:
    """The progress of the accounts this process is syncing now (it holds their lease), whatever
    their organisation: what ``postroom sync`` shows while it runs (it syncs every account)."""
    here = Owner.here()
    prefix = f"{here.host}:{here.pid}:"  # every lease owner of this process (sync.leases.Owner)
    return _progress(session, func.substr(MailAccount.lease_owner, 1, len(prefix)) == prefix)


def _progress(session: Session, where: ColumnElement[bool]) -> list[AccountProgress]:
    indexed = func.coalesce(Folder.messages_indexed, 0)
    # a folder not listed yet has found what it indexed; none has found less than it indexed
    found = case(
        (Folder.messages_found.is_(None), indexed),
        (Folder.messages_found < indexed, indexed),
        else_=Folder.messages_found,
    )
    done = case((Folder.state == FolderState.INCREMENTAL.value, 1), else_=0)
    rows = session.execute(
        select(
            MailAccount.id,
            MailAccount.email,
            MailAccount.last_success_at,
            func.count(Folder.id),
            func.coalesce(func.sum(done), 0),
            func.coalesce(func.sum(found), 0),
            func.coalesce(func.sum(indexed), 0),
        )
        .outerjoin(Folder, and_(Folder.account_id == MailAccount.id, Folder.exists_remote))
        .where(where)
        .group_by(MailAccount.id, MailAccount.email, MailAccount.last_success_at)
        .order_by(MailAccount.id)
    ).all()
    return [
        AccountProgress(
            account_id=aid,
            email=email,
            folders_total=int(total),
            folders_done=int(finished),
            messages_found=max(int(n_found), 0),
            messages_indexed=max(int(n_indexed), 0),
            initial=int(finished) < int(total) or (int(total) == 0 and last_success is None),
        )
        for aid, email, last_success, total, finished, n_found, n_indexed in rows
    ]
