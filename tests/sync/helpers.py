"""Helpers for sync tests: connect a rig mailbox as an account, sync it, read back what was indexed.

:func:`sync_account` and :func:`run_until_idle` are the tests' ways to run a pass, built on the
public :class:`~sync.scheduler.Scheduler` and :class:`~sync.worker.Worker` API.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import Email, Folder, HistoryEntry, MailAccount, MessageCopy
from services.accounts import ImapAccountRequest, add_imap_account
from sync.engine import AccountResult
from sync.scheduler import Scheduler
from sync.worker import Worker
from tests.rig.fixtures import Mailbox


def connect(
    config: Config, sessions: sessionmaker[Session], box: Mailbox, org_id: int | None = None, **extra: object
) -> int:
    """Add the rig mailbox as an IMAP account (of ``org_id``, default: the default organisation) the
    way `postroom accounts add-imap` does; returns its id."""
    req = ImapAccountRequest(
        email=box.address,
        username=box.address,
        password=box.password,
        imap_host="127.0.0.1",
        imap_port=box.rig.ports["imap"],
        imap_security="none",
        smtp_host="127.0.0.1",
        smtp_port=box.rig.ports["smtp_submission"],
        smtp_security="none",
        org_id=org_id,
    )
    with sessions.begin() as s:
        account = add_imap_account(s, config, req)
        if extra:
            account.settings = {**account.settings, **extra}
        return account.id


def sync_account(config: Config, sessions: sessionmaker[Session], account_id: int) -> AccountResult:
    """One pass over one account whatever its state, as a person asking for it gets: leases of
    dead workers on this machine freed first, then claimed with ``force``, synced, released."""
    scheduler = Scheduler(config, sessions)
    scheduler.reap_dead_local_leases()
    return scheduler.sync(account_id, force=True)


def sync_ok(config: Config, sessions: sessionmaker[Session], account_id: int) -> AccountResult:
    result = sync_account(config, sessions, account_id)
    assert result.ok, result.error
    assert not [f for f in result.folders if f.error], result.summary()
    return result


def run_until_idle(worker: Worker) -> list[AccountResult]:
    """Let ``worker`` sync everything that is due, then return the results of those passes.

    Each round is one turn of the worker's loop (``run(max_passes=1)``): it claims due accounts
    up to its free slots and returns once they are done; rounds go on until one finds nothing due.
    """
    done = len(worker.completed)
    while True:
        before = len(worker.completed)
        worker.run(max_passes=1)
        if len(worker.completed) == before:
            return worker.completed[done:]


def by_role(sessions: sessionmaker[Session], account_id: int, result: AccountResult, what: str) -> dict[str, int]:
    """``what`` ("new", "changed", "removed", "bodies") per folder role, where it is not 0, e.g.
    ``{"inbox": 2, "sent": 1}``: folder names differ by backend (Graph and EWS use ids), roles do not."""
    with sessions() as s:
        roles = dict(s.execute(select(Folder.name, Folder.role).where(Folder.account_id == account_id)).tuples().all())
    out: dict[str, int] = {}
    for f in result.folders:
        if getattr(f, what):
            role = roles.get(f.name) or f.name
            out[role] = out.get(role, 0) + getattr(f, what)
    return out


def copies(sessions: sessionmaker[Session], account_id: int, folder_role: str | None = "inbox") -> list[str]:
    """Message-IDs of the account's indexed copies (in one folder role), with repeats if duplicated."""
    with sessions() as s:
        q = (
            select(Email.message_id)
            .join(MessageCopy, MessageCopy.email_id == Email.id)
            .join(Folder, Folder.id == MessageCopy.folder_id)
            .where(MessageCopy.account_id == account_id)
        )
        if folder_role:
            q = q.where(Folder.role == folder_role)
        return sorted(s.scalars(q))


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def bodies(sessions: sessionmaker[Session]) -> list[str]:
    """Message-IDs of the emails whose body is stored."""
    with sessions() as s:
        return sorted(s.scalars(select(Email.message_id).where(Email.body_id.is_not(None))))


def history_ids(sessions: sessionmaker[Session], applicant_id: int) -> list[str]:
    with sessions() as s:
        return sorted(
            s.scalars(
                select(Email.message_id)
                .join(HistoryEntry, HistoryEntry.email_id == Email.id)
                .where(HistoryEntry.applicant_id == applicant_id)
            )
        )


def stored_secret(config: Config, sessions: sessionmaker[Session], account_id: int) -> dict[str, str]:
    """The account's credentials as stored, unsealed (what a refresh or a rotation wrote)."""
    with sessions() as s:
        sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id))
    return SecretBox.for_config(config.security).open(sealed)


def sealed_secret(sessions: sessionmaker[Session], account_id: int) -> bytes:
    with sessions() as s:
        return s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id)) or b""


def database_snapshot(config: Config) -> dict[str, object]:
    """Everything a sync produced, in a comparable form: copies (folder, remote id,
    Message-ID), emails, threads (as sets of Message-IDs), history and stored bodies.
    Two syncs of one mailbox that lost and doubled nothing have equal snapshots."""
    engine = db.make_engine(config.database)
    sessions = db.make_sessionmaker(engine)
    with sessions() as s:
        copies = s.execute(
            select(Folder.name, MessageCopy.remote_id, Email.message_id)
            .outerjoin(Email, MessageCopy.email_id == Email.id)
            .join(Folder, MessageCopy.folder_id == Folder.id)
        ).all()
        emails = s.execute(select(Email.message_id, Email.thread_id)).all()
        history = sorted(s.scalars(select(Email.message_id).join(HistoryEntry)))
        bodies = sorted(s.scalars(select(Email.message_id).where(Email.body_id.is_not(None))))
    engine.dispose()
    groups: dict[int, set[str]] = {}
    for mid, tid in emails:
        groups.setdefault(tid, set()).add(mid)
    return {
        "copies": sorted((f, u, m or "") for f, u, m in copies),
        "emails": sorted(m for m, _ in emails),
        "threads": sorted(sorted(g) for g in groups.values()),
        "history": history,
        "bodies": bodies,
    }
