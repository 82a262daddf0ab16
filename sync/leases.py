"""A worker's hold on the account it syncs, as the engine sees it.

The engine (sync.engine) takes a :class:`Lease` and calls ``heartbeat()`` between
folders and batches and ``hold(session)`` at the start of every transaction that
saves a cursor or removes copies; sync.scheduler implements it on the database
(``AccountLease``). Either raises :class:`LeaseLost` once another worker may hold the
account, which ends the pass at once, before anything more is written.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Protocol

from sqlalchemy.orm import Session


def worker_id() -> str:
    """A lease (or outbox claim) owner: ``host:pid:random``, unique per worker object."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_alive(owner: str) -> bool:
    """Whether the process named in a ``host:pid:...`` owner id (of this host) still runs."""
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; it only waits for its parent to collect it
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def dead_local_owner(owner: str | None) -> bool:
    """Whether ``owner`` names a process on this host that no longer runs."""
    return owner is not None and owner.split(":", 1)[0] == socket.gethostname() and not process_alive(owner)


class LeaseLost(Exception):
    """The worker's lease on the account ran out and another worker may hold it now:
    the pass stops at once and writes nothing more."""


class Lease(Protocol):
    """A worker's hold on the account being synced (see sync.scheduler)."""

    def heartbeat(self) -> None:
        """Renew the lease when due; raise :class:`LeaseLost` if it is gone."""
        ...

    def hold(self, session: Session) -> None:
        """Inside a write transaction: prove (and extend) the lease in the database, or raise
        :class:`LeaseLost`. On PostgreSQL it also locks the account row until commit, so no
        other worker can claim the account while the transaction writes."""
        ...


class NoLease:
    """For a pass nobody else can run at the same time (tests, benchmarks)."""

    def heartbeat(self) -> None:
        pass

    def hold(self, session: Session) -> None:
        pass
