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
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Owner:
    """Who holds a lease or an outbox claim, stored as ``host:pid:tag``: the machine, the process,
    and a tag that tells one worker (or Celery task) of a process from another.

    >>> str(Owner("mx1", 42, "a1b2c3d4"))
    'mx1:42:a1b2c3d4'
    >>> Owner.parse("mx1:42:a1b2c3d4") == Owner("mx1", 42, "a1b2c3d4")
    True
    """

    host: str
    pid: int
    tag: str

    @classmethod
    def here(cls, tag: str | None = None) -> Owner:
        return cls(socket.gethostname(), os.getpid(), tag or uuid.uuid4().hex[:8])

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        host, _, rest = text.partition(":")
        pid, _, tag = rest.partition(":")
        return cls(host, int(pid), tag) if pid.isdigit() else None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.tag}"

    def alive(self) -> bool:
        """Whether its process still runs (answerable only on its own host: elsewhere, True)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie has exited; it only waits for its parent to collect it
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True


def worker_id(tag: str | None = None) -> str:
    """A new owner id for this process (see :class:`Owner`)."""
    return str(Owner.here(tag))


def dead_local_owner(owner: str | None) -> bool:
    """Whether ``owner`` names a process on this host that no longer runs."""
    parsed = Owner.parse(owner) if owner else None
    return parsed is not None and not parsed.alive()


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
