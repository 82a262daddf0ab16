"""Tracking, as a user and the endpoints need it: recording hits without slowing the answer,
the per-recipient report of a tracked message, and refreshing Apple's privacy ranges.

* :class:`HitRecorder` — the pixel and the redirect answer at once and hand the hit to an
  in-memory queue (bounded: when full a hit is dropped and counted, the request never waits).
  One background thread writes the queue in batches (every ``interval`` seconds, or sooner
  once ``batch`` hits wait), one transaction each: it reads the recipients' ``sent_at``,
  judges every hit (:func:`postroom.hits.judge`), inserts them, and re-runs
  :func:`postroom.hits.rejudge` on the copies that got a click near delivery. Hits for a
  recipient that no longer exists are skipped. So a request takes no database lock at all,
  on SQLite as on PostgreSQL. In the same transaction the batch announces its people's hits
  to webhooks: a recipient's first open by a person (``message.opened``) and every click by
  a person (``message.clicked``) except those within the scanner window of delivery; never
  a machine's (image proxies, privacy protection, scanners). One subscription query per
  organisation per batch (:func:`sync.webhooks.emit`).
* :func:`tracking_report` — ``postroom tracking``: who opened, clicked, replied or bounced, and every hit
  with its verdict.
* :func:`update_apple_ranges` — ``postroom tracking-ranges update``: Apple's egress list, from
  its feed, a URL or a file, validated, written atomically into the data directory.

Which Apple list is used (:func:`apple_ranges_file`): ``tracking.apple_ranges_file`` if set,
else ``<data_dir>/apple-relay-egress.txt`` if the update command has written one, else the
snapshot shipped with Postroom. A running server notices a refreshed file within a minute.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import case, insert, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.errors import UserError
from postroom.hits import AppleRanges, Hit, judge, parse_networks, rejudge
from postroom.logs import error_summary
from postroom.models import MailAccount, OutboxMessage, OutboxRecipient, TrackingEvent
from postroom.private_files import FILE_MODE, private_dir
from postroom.states import HitKind, RecipientKind
from postroom.tracking_html import link_count
from postroom.tracking_tokens import TrackingKeys
from services.tracking_webhooks import HitRecipient, announcements
from sync.webhooks import emit

__all__ = [
    "APPLE_FEED",
    "AppleRangesSource",
    "HitRecorder",
    "TrackingError",
    "apple_ranges_file",
    "tracking_keys",
    "tracking_report",
    "update_apple_ranges",
]

log = logging.getLogger("postroom.tracking")

APPLE_FEED = "https://mask-api.icloud.com/egress-ip-ranges.csv"
RANGES_NAME = "apple-relay-egress.txt"
MAX_FEED_BYTES = 64 * 1024 * 1024


class TrackingError(UserError):
    """A tracking request that cannot be carried out: an unknown Message-ID, a range list that
    cannot be read or holds something that is not an IP range."""


def tracking_keys(config: Config) -> TrackingKeys:
    """The keys tracking URLs are signed with (tokens under a previous secret key still pass)."""
    return TrackingKeys.from_secret(config.security.key(), config.security.previous_keys)


# --------------------------------------------------------------------------- Apple's ranges


def apple_ranges_file(config: Config) -> Path | None:
    """The Apple range list in force; None: the snapshot shipped with Postroom."""
    if config.tracking.apple_ranges_file:
        return Path(config.tracking.apple_ranges_file)
    updated = config.data_dir / RANGES_NAME
    return updated if updated.is_file() else None


class AppleRangesSource:
    """The ranges in force, read on first use and again when their file changes (looked at
    most once a ``check`` seconds). A list that cannot be read is reported, and the one in
    hand (else the shipped snapshot) stays in use."""

    def __init__(self, config: Config, check: float = 60.0) -> None:
        self.config, self.check = config, check
        self._stamp: tuple[str, float] | None = None
        self._checked = 0.0
        self._ranges: AppleRanges | None = None

    def current(self) -> AppleRanges:
        now = time.monotonic()
        if self._ranges is not None and now - self._checked < self.check:
            return self._ranges
        self._checked = now
        path = apple_ranges_file(self.config)
        try:
            stamp = (str(path), path.stat().st_mtime) if path is not None else None
            if self._ranges is None or stamp != self._stamp:
                self._ranges = AppleRanges.load(path) if path is not None else AppleRanges.shipped()
                self._stamp = stamp
                log.info("Apple range list read from %s", path or "the snapshot shipped with Postroom")
        except (OSError, ValueError) as exc:
            log.warning("Apple range list %s cannot be used (%s); keeping the one in hand", path, exc)
            if self._ranges is None:
                self._ranges = AppleRanges.shipped()
        return self._ranges


def update_apple_ranges(config: Config, source: str | None = None) -> int:
    """Replace ``<data_dir>/apple-relay-egress.txt`` with the ranges read from ``source``
    (Apple's CSV feed by default; an http(s) URL or a file, CSV or one range a line); every
    line is checked first, and the old list stays unless all is well. Returns how many."""
    where = source or APPLE_FEED
    text = _fetch(where) if where.lower().startswith(("http://", "https://")) else _read(where)
    try:
        networks = parse_networks(text.splitlines(), where)
    except ValueError as exc:
        raise TrackingError(f"{exc} The list in use is left as it is.", "source") from None
    unique = list(dict.fromkeys(str(n) for n in networks))
    if not unique:
        raise TrackingError(f"{where} holds no IP ranges; the list in use is left as it is.", "source")
    private_dir(config.data_dir)
    target = config.data_dir / RANGES_NAME
    temp = target.with_name(f".{RANGES_NAME}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"# Apple iCloud Private Relay egress ranges, from {where}\n")
            fh.write("\n".join(unique) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, FILE_MODE)  # a leftover temp file from a crashed run kept its mode
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return len(unique)


def _read(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrackingError(f"{path} does not exist.", "source") from None
    except UnicodeDecodeError:
        raise TrackingError(f"{path} is not UTF-8 text.", "source") from None
    except OSError as exc:
        raise TrackingError(f"{path} cannot be read: {exc.strerror or exc}.", "source") from None


def _fetch(url: str) -> str:
    try:
        with requests.get(url, timeout=(10, 60), stream=True) as resp:
            if resp.status_code != 200:
                raise TrackingError(f"{url} answered HTTP {resp.status_code}, not the list.", "source")
            body = bytearray()
            for chunk in resp.iter_content(1 << 16):
                body += chunk
                if len(body) > MAX_FEED_BYTES:
                    raise TrackingError(f"{url} sent more than {MAX_FEED_BYTES >> 20} MB; not a range list.", "source")
    except requests.RequestException as exc:
        raise TrackingError(f"{url} cannot be fetched: {error_summary(exc)}.", "source") from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise TrackingError(f"{url} did not send UTF-8 text.", "source") from None


# --------------------------------------------------------------------------- recording hits


class HitRecorder:
    """Takes hits from request threads without waiting; one thread writes them in batches.

    ``record`` never blocks and never touches the database; ``flush`` writes everything
    recorded so far (tests, shutdown); ``close`` flushes and stops the thread. The thread
    starts with the first hit (or ``start``); an exiting interpreter flushes what is left.
    Counters: ``written``, ``skipped`` (recipient gone), ``dropped`` (queue full),
    ``failed`` (the database refused), ``batches`` (transactions).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        apple: AppleRanges | Callable[[], AppleRanges],
        *,
        window: float = 2.0,
        max_queue: int = 100_000,
        batch: int = 500,
        interval: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._apple: Callable[[], AppleRanges] = apple if callable(apple) else (lambda: apple)
        self.window, self.max_queue, self.batch, self.interval = window, max_queue, batch, interval
        self._queue: deque[tuple[int, Hit]] = deque()
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._drops = itertools.count()
        self.dropped = self.written = self.skipped = self.failed = self.batches = 0
        self._links: dict[int, int] = {}  # outbox id -> number of trackable links (for rejudge)

    def record(self, recipient_id: int, hit: Hit) -> bool:
        """Queue one hit; False (and counted in ``dropped``) if the queue is full."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.dropped = next(self._drops) + 1
            return False
        queue.append((recipient_id, hit))
        if self._thread is None:
            self.start()
        if len(queue) >= self.batch:
            self._wake.set()
        return True

    def start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name="postroom-hits", daemon=True)
            self._thread.start()
            _AT_EXIT.append(weakref.ref(self))

    def flush(self) -> None:
        """Write every hit recorded before this call."""
        with self._drain_lock:
            while self._queue:
                self._write_next()

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the writer thread."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._drain_lock:
                # what waits now, in batches; what arrives meanwhile waits for the next round, so that a
                # steady stream is written in full batches rather than in a tail of ever smaller ones
                due = len(self._queue)
                while due > 0 and self._queue:
                    due -= self._write_next()

    def _write_next(self) -> int:
        """Write the next batch (one transaction); returns how many hits it took from the queue."""
        items = []
        queue = self._queue
        for _ in range(min(self.batch, len(queue))):
            items.append(queue.popleft())
        for attempt in (1, 2):
            try:
                with self._sessions.begin() as session:
                    written, skipped = self._write(session, items)
            except IntegrityError:  # a recipient was deleted between reading and writing: read again
                if attempt == 2:
                    self.failed += len(items)
                    log.warning("dropped %d tracking hits: their recipients keep disappearing", len(items))
                continue
            except SQLAlchemyError as exc:
                self.failed += len(items)
                log.warning("dropped %d tracking hits: %s", len(items), error_summary(exc))
                break
            except Exception:  # never let one batch stop the thread that writes all the others
                self.failed += len(items)
                log.exception("dropped %d tracking hits", len(items))
                break
            self.written += written
            self.skipped += skipped
            self.batches += 1
            break
        return len(items)

    def _write(self, session: Session, items: list[tuple[int, Hit]]) -> tuple[int, int]:
        recipients = {
            rid: HitRecipient(outbox_id, sent_at, address, org_id)
            for rid, outbox_id, sent_at, address, org_id in session.execute(
                select(
                    OutboxRecipient.id,
                    OutboxRecipient.outbox_id,
                    OutboxRecipient.sent_at,
                    OutboxRecipient.address,
                    MailAccount.org_id,
                )
                .join(OutboxMessage, OutboxMessage.id == OutboxRecipient.outbox_id)
                .join(MailAccount, MailAccount.id == OutboxMessage.account_id)
                .where(OutboxRecipient.id.in_({rid for rid, _ in items}))
            )
        }
        apple = self._apple()
        rows: list[dict[str, Any]] = []
        near_delivery: set[int] = set()
        people: list[tuple[int, Hit]] = []  # hits by a person, to announce
        for rid, hit in items:
            if rid not in recipients:
                continue
            sent_at = recipients[rid].sent_at
            verdict = judge(hit, sent_at=sent_at, apple=apple)
            seconds = (hit.at - sent_at).total_seconds() if sent_at is not None else None
            near = hit.kind == HitKind.CLICK and seconds is not None and seconds <= self.window
            if near:
                near_delivery.add(rid)
            elif not verdict.machine:
                people.append((rid, hit))
            rows.append(
                {
                    "recipient_id": rid,
                    "kind": str(hit.kind),
                    "at": hit.at,
                    "seconds_after_send": seconds,
                    "method": hit.method[:8],
                    "user_agent": hit.user_agent,
                    "ip": hit.ip[:64],
                    "link": hit.link,
                    "url": hit.url,
                    "machine": verdict.machine,
                    "reason": verdict.reason[:200],
                }
            )
        announce = announcements(session, people, recipients)  # before this batch's opens are stored
        if rows:
            session.execute(insert(TrackingEvent), rows)
        if near_delivery:
            self._rejudge(session, {rid: recipients[rid].outbox_id for rid in near_delivery})
        for org_id, event, data in announce:
            emit(session, org_id, event, data)
        return len(rows), len(items) - len(rows)

    def _rejudge(self, session: Session, outbox_of: dict[int, int]) -> None:
        """Look again at the clicks of the copies that got one near delivery: a burst over every link is a scanner."""
        missing = set(outbox_of.values()) - self._links.keys()
        if missing:
            if len(self._links) > 10_000:
                self._links.clear()
            for oid, raw in session.execute(
                select(OutboxMessage.id, OutboxMessage.raw).where(OutboxMessage.id.in_(missing))
            ):
                self._links[oid] = link_count(bytes(raw))
        clicks: dict[int, list[TrackingEvent]] = {}
        for event in session.scalars(
            select(TrackingEvent)
            .where(TrackingEvent.recipient_id.in_(outbox_of), TrackingEvent.kind == HitKind.CLICK.value)
            .order_by(TrackingEvent.id)
        ):
            clicks.setdefault(event.recipient_id, []).append(event)
        for rid, events in clicks.items():
            for event, verdict in zip(
                events, rejudge(events, self.window, self._links.get(outbox_of[rid])), strict=True
            ):
                if (event.machine, event.reason) != (verdict.machine, verdict.reason):
                    event.machine, event.reason = verdict.machine, verdict.reason


_AT_EXIT: list[weakref.ref[HitRecorder]] = []  # recorders whose thread started


def _close_all() -> None:
    for ref in _AT_EXIT:
        recorder = ref()
        if recorder is None:
            continue
        try:
            recorder.close()
        except Exception as exc:  # the interpreter is going away: say so, do not raise
            log.warning("tracking hits not written at exit: %s", error_summary(exc))


atexit.register(_close_all)  # once, for every recorder


# --------------------------------------------------------------------------- the report

_KIND_ORDER = case(
    (OutboxRecipient.kind == RecipientKind.TO.value, 0),
    (OutboxRecipient.kind == RecipientKind.CC.value, 1),
    else_=2,
)


def tracking_report(session: Session, message_id: str, org_id: int | None = None) -> dict[str, Any]:
    """Who of a message's recipients opened, clicked and replied — people only —, whose address
    bounced (a delivery status notification read by a processing mailbox), and every hit
    with its verdict (the ``postroom tracking --json`` contract)::

        {"message_id": "<...>", "recipients": [{"address": "a@x", "opened": true, "clicked": false,
          "replied": false, "auto_replied": false, "bounced": true,
          "bounced_at": "2026-08-17T09:01:02+00:00", "bounce_status": "5.1.1",
          "bounce_reason": "550 5.1.1 User unknown",
          "events": [{"kind": "open", "at": "2026-08-17T09:12:00.000+00:00", "machine": false,
                      "reason": "no sign of a machine"}]}]}

    ``message_id`` is the message's Message-ID, with or without its angle brackets (one
    recipient's own copy's id finds the message too). A person's click proves an open. With
    ``org_id``, only messages sent from that organisation's accounts are found: another
    organisation's message is "no message", as an unknown Message-ID is.
    """
    wanted = message_id.strip()
    if wanted and not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    accounts = select(MailAccount.id).where(MailAccount.org_id == org_id)
    mine = [] if org_id is None else [OutboxMessage.account_id.in_(accounts)]
    outbox = session.scalars(
        select(OutboxMessage)
        .where(
            or_(
                OutboxMessage.message_id == wanted,
                OutboxMessage.id.in_(select(OutboxRecipient.outbox_id).where(OutboxRecipient.message_id == wanted)),
            ),
            *mine,
        )
        .order_by(OutboxMessage.message_id != wanted, OutboxMessage.id)
    ).first()
    if outbox is None:
        raise TrackingError(f"No message sent from Postroom has Message-ID {wanted}.", "message_id")
    recipients = session.scalars(
        select(OutboxRecipient).where(OutboxRecipient.outbox_id == outbox.id).order_by(_KIND_ORDER, OutboxRecipient.id)
    ).all()
    events: dict[int, list[TrackingEvent]] = {}
    for event in session.scalars(
        select(TrackingEvent)
        .where(TrackingEvent.recipient_id.in_([r.id for r in recipients]))
        .order_by(TrackingEvent.at, TrackingEvent.id)
    ):
        events.setdefault(event.recipient_id, []).append(event)
    out = []
    for r in recipients:
        hits = events.get(r.id, [])
        people = [e for e in hits if not e.machine]
        out.append(
            {
                "address": r.address,
                "opened": bool(people),  # a person's open, or a person's click (which proves one)
                "clicked": any(e.kind == HitKind.CLICK for e in people),
                "replied": r.replied_at is not None,
                "auto_replied": r.auto_replied_at is not None,
                "bounced": r.bounced_at is not None,
                "bounced_at": r.bounced_at.isoformat(timespec="seconds") if r.bounced_at else None,
                "bounce_status": r.bounce_status,
                "bounce_reason": r.bounce_reason,
                "events": [
                    {
                        "kind": e.kind,
                        "at": e.at.isoformat(timespec="milliseconds"),
                        "machine": e.machine,
                        "reason": e.reason,
                    }
                    for e in hits
                ],
            }
        )
    return {"message_id": outbox.message_id, "recipients": out}
