"""The progress of a long initial sync (issue 12): messages indexed of those found, folders done.

What the engine records per folder as it works (``folders.messages_found`` / ``messages_indexed``,
``state``), read through :func:`services.progress.account_progress`: observed from a second session
while a real initial sync against Dovecot runs, and after a pass that stopped part-way; exact on
every backend through incremental passes and a resync; never another organisation's accounts.
And ``postroom sync`` run in a terminal (a pseudo-terminal here) shows it on one line rewritten
in place, while its output anywhere else is unchanged.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import tty
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from postroom import db
from postroom.config import Config, DatabaseConfig
from postroom.models import Folder, MailAccount, MessageCopy, Organisation
from providers.base import FolderRole
from services.progress import AccountProgress, account_progress
from sync.engine import AccountSync
from sync.leases import LeaseLost
from sync.store import default_org
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.engine_env import BACKENDS, EngineEnv, make_env
from tests.sync.helpers import connect, sync_ok

POSTROOM = [sys.executable, "-m", "cli"]
INBOX, ARCHIVE = 300, 200  # messages seeded into two folders of the mailbox
FOLDERS = 6  # INBOX, Drafts, Sent, Trash, Junk, Archive on the rig's Dovecot


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, config: Config, sessions: sessionmaker[Session]) -> Iterator[EngineEnv]:
    """An account of each backend in turn (tests/sync/engine_env.py), empty."""
    mailboxes = request.getfixturevalue("new_mailbox") if request.param == "imap" else None
    with make_env(request.param, config, sessions, mailboxes) as made:
        yield made


def _small_batches(config: Config, size: int = 20) -> Config:
    return replace(config, sync=replace(config.sync, batch_size=size))


def _progress(sessions: sessionmaker[Session], account_id: int) -> AccountProgress:
    with sessions() as s:
        org_id = s.scalar(select(MailAccount.org_id).where(MailAccount.id == account_id))
        assert org_id is not None
        (progress,) = account_progress(s, org_id, account_id)
    return progress


class Watching:
    """A lease (:class:`sync.leases.Lease`) that looks at the progress from its own session
    whenever the engine beats its heart (between folders and batches), as the web app would
    while the sync runs; after ``stop_after`` looks it says the lease is lost, which ends the pass."""

    def __init__(self, sessions: sessionmaker[Session], account_id: int, stop_after: int | None = None) -> None:
        self.sessions, self.account_id, self.stop_after = sessions, account_id, stop_after
        self.seen: list[AccountProgress] = []

    def heartbeat(self) -> None:
        self.seen.append(_progress(self.sessions, self.account_id))
        if self.stop_after is not None and len(self.seen) >= self.stop_after:
            raise LeaseLost("stopped by the test")

    def hold(self, session: Session) -> None:
        pass


def _seed(mailbox: Mailbox) -> None:
    mailbox.seed_corpus(INBOX, seed=3)
    mailbox.seed_corpus(ARCHIVE, folder="Archive", seed=4)


def _folder_counts(sessions: sessionmaker[Session], account_id: int) -> dict[str, tuple[int | None, int, int]]:
    """Per folder: (messages_found, messages_indexed, copies really in the index)."""
    copies = select(func.count()).select_from(MessageCopy).where(MessageCopy.folder_id == Folder.id).scalar_subquery()
    with sessions() as s:
        rows = s.execute(
            select(Folder.name, Folder.messages_found, Folder.messages_indexed, copies).where(
                Folder.account_id == account_id, Folder.exists_remote
            )
        ).all()
    return {name: (found, indexed, n) for name, found, indexed, n in rows}


# ------------------------------------------------------------------ a real initial sync
def test_a_long_initial_sync_shows_messages_indexed_of_those_found_and_folders_done(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    _seed(mailbox)
    account_id = connect(config, sessions, mailbox)
    before = _progress(sessions, account_id)
    assert (before.folders_total, before.messages_found, before.initial) == (0, 0, True)  # never synced yet

    watching = Watching(sessions, account_id)
    result = AccountSync(_small_batches(config), sessions, account_id, lease=watching).run()
    assert result.ok and not [f for f in result.folders if f.error], result.summary()

    mid = [p for p in watching.seen if p.messages_found > p.messages_indexed > 0]
    assert len(mid) > 10, watching.seen  # batch after batch, seen from another session
    assert all(p.initial for p in mid)
    assert [p.messages_indexed for p in watching.seen] == sorted(p.messages_indexed for p in watching.seen)
    assert any(p.messages_found == INBOX and 0 < p.messages_indexed < INBOX for p in mid)  # in the inbox, first
    assert any(p.messages_found == INBOX + ARCHIVE and p.folders_done >= 1 for p in mid)  # then the archive
    assert all(p.folders_done < p.folders_total == FOLDERS for p in watching.seen)

    done = _progress(sessions, account_id)
    assert done == AccountProgress(
        account_id, mailbox.address, FOLDERS, FOLDERS, INBOX + ARCHIVE, INBOX + ARCHIVE, False
    )
    counts = _folder_counts(sessions, account_id)
    assert counts["INBOX"] == (INBOX, INBOX, INBOX) and counts["Archive"] == (ARCHIVE, ARCHIVE, ARCHIVE)
    assert all(found == indexed == n for found, indexed, n in counts.values())

    assert sync_ok(config, sessions, account_id).new == 0  # an idle pass changes nothing
    assert _progress(sessions, account_id) == done
    assert done.as_json() == {
        "account_id": account_id,
        "email": mailbox.address,
        "folders_total": FOLDERS,
        "folders_done": FOLDERS,
        "messages_found": INBOX + ARCHIVE,
        "messages_indexed": INBOX + ARCHIVE,
        "initial": False,
    }


def test_a_pass_that_stops_part_way_leaves_its_progress_and_the_next_one_carries_on(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    _seed(mailbox)
    account_id = connect(config, sessions, mailbox)
    small = _small_batches(config)
    stopped = AccountSync(small, sessions, account_id, lease=Watching(sessions, account_id, stop_after=6)).run()
    assert stopped.lease_lost

    part = _progress(sessions, account_id)  # durable: read after the pass is gone
    assert part.initial and part.folders_done == 0
    assert part.messages_found == INBOX and 0 < part.messages_indexed < INBOX
    with sessions() as s:
        indexed = s.scalar(select(func.count()).select_from(MessageCopy).where(MessageCopy.account_id == account_id))
    assert part.messages_indexed == indexed

    watching = Watching(sessions, account_id)
    assert AccountSync(small, sessions, account_id, lease=watching).run().ok
    assert watching.seen[1].messages_indexed == part.messages_indexed + 20  # one batch more: resumed
    done = _progress(sessions, account_id)
    assert (done.messages_found, done.messages_indexed, done.folders_done, done.initial) == (
        INBOX + ARCHIVE,
        INBOX + ARCHIVE,
        FOLDERS,
        False,
    )


# ------------------------------------------------------------------ every backend
def test_the_counts_stay_exact_through_incremental_passes_and_a_resync(backend: EngineEnv) -> None:
    env = backend
    config = _small_batches(env.config, 2)  # several batches per folder, in incremental passes too
    ids = [env.deliver(make_message(message_id=f"<p{i}@x.test>")) for i in range(5)]
    env.deliver(make_message(message_id="<ps@x.test>", from_=env.address), FolderRole.SENT)

    def check() -> int:
        """Every folder's found == indexed == its copies, and the account's sums; returns them."""
        counts = _folder_counts(env.sessions, env.account_id)
        assert all(found == indexed == n for found, indexed, n in counts.values()), counts
        progress = _progress(env.sessions, env.account_id)
        copies = sum(n for _, _, n in counts.values())
        assert (progress.messages_found, progress.messages_indexed) == (copies, copies)
        assert progress.folders_done == progress.folders_total == len(counts) and not progress.initial
        return copies

    sync_ok(config, env.sessions, env.account_id)
    first = check()
    assert first == (12 if env.all_mail else 6)

    for i in range(5, 10):  # more new mail than one batch holds
        env.deliver(make_message(message_id=f"<p{i}@x.test>"))
    env.remove(ids[1])
    env.move(ids[2], FolderRole.INBOX, FolderRole.TRASH)
    assert sync_ok(config, env.sessions, env.account_id).new > 0
    second = check()
    assert sync_ok(config, env.sessions, env.account_id).new == 0
    assert check() == second  # an idle pass

    env.deliver(make_message(message_id="<p10@x.test>"))
    env.expire_cursors()
    result = sync_ok(config, env.sessions, env.account_id)
    assert any(f.resynced for f in result.folders)
    assert check() == second + (2 if env.all_mail else 1)


# ------------------------------------------------------------------ organisations
def test_accounts_of_another_organisation_are_never_returned(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        ours = default_org(s).id
        other = Organisation(name="Other")
        s.add(other)
        s.flush()
        mine = MailAccount(org_id=ours, email="alice@example.com", provider="imap", secret=b"-")
        theirs = MailAccount(org_id=other.id, email="bob@other.test", provider="imap", secret=b"-")
        s.add_all([mine, theirs])
        s.flush()
        s.add_all(
            [
                Folder(account_id=mine.id, name="INBOX", state="incremental", messages_found=40, messages_indexed=40),
                Folder(account_id=mine.id, name="Archive", state="initial", messages_found=100, messages_indexed=25),
                Folder(account_id=mine.id, name="Sent", state="initial"),  # not listed yet
                Folder(account_id=mine.id, name="Old", state="incremental", messages_found=7, exists_remote=False),
                Folder(account_id=theirs.id, name="INBOX", state="initial", messages_found=9, messages_indexed=1),
            ]
        )
        ids = (mine.id, theirs.id, other.id)
    mine_id, theirs_id, other_id = ids
    with sessions() as s:
        assert account_progress(s, ours) == [
            AccountProgress(mine_id, "alice@example.com", 3, 1, 140, 65, True)  # "Old" is gone from the server
        ]
        assert (
            account_progress(s, ours, mine_id)[0].summary() == "alice@example.com: 65 of 140 messages, 1 of 3 folders"
        )
        assert account_progress(s, ours, theirs_id) == []
        assert account_progress(s, other_id) == [AccountProgress(theirs_id, "bob@other.test", 1, 0, 9, 1, True)]
        assert account_progress(s, other_id + 1) == []


# ------------------------------------------------------------------ the migration
def test_the_migration_counts_what_folders_synced_before_it_hold(tmp_path: Path) -> None:
    from alembic import command

    engine = db.make_engine(DatabaseConfig(url=f"sqlite:///{tmp_path / 'old.db'}"))
    command.upgrade(db.alembic_config(engine), "0009")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT OR IGNORE INTO organisations (id, name, created_at) VALUES (1, 'o', CURRENT_TIMESTAMP)")
        )
        conn.execute(
            text(
                "INSERT INTO mail_accounts (id, org_id, email, provider, settings, secret, status, failure_count, "
                "created_at) VALUES (1, 1, 'a@x.test', 'imap', '{}', x'00', 'active', 0, CURRENT_TIMESTAMP)"
            )
        )
        for fid, state in ((1, "incremental"), (2, "initial"), (3, "incremental")):
            conn.execute(
                text(
                    "INSERT INTO folders (id, account_id, name, delimiter, state, exists_remote) "
                    "VALUES (:f, 1, :n, '/', :s, 1)"
                ),
                {"f": fid, "n": f"F{fid}", "s": state},
            )
        for i, fid in enumerate((1, 1, 1, 2, 2)):
            conn.execute(
                text(
                    "INSERT INTO message_copies (account_id, folder_id, remote_id, flags, created_at) "
                    "VALUES (1, :f, :r, '', CURRENT_TIMESTAMP)"
                ),
                {"f": fid, "r": str(i)},
            )
    db.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, messages_found, messages_indexed FROM folders ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, 3, 3), (2, None, 2), (3, 0, 0)]


# ------------------------------------------------------------------ postroom sync
def _cli_env(env: dict[str, str], tmp_path: Path, mailbox: Mailbox) -> dict[str, str]:
    config = tmp_path / "small-batches.toml"
    config.write_text("[sync]\nbatch_size = 3\n")  # a sync long enough to watch
    cli_env = {**os.environ, **env, "BOX_PW": mailbox.password, "POSTROOM_CONFIG": str(config)}
    cli_env.pop("COLUMNS", None)
    subprocess.run([*POSTROOM, *mailbox.add_imap_args("BOX_PW")], env=cli_env, check=True, capture_output=True)
    return cli_env


def _in_a_terminal(args: list[str], cli_env: dict[str, str]) -> tuple[int, str]:
    """Run ``postroom`` with its standard output on a pseudo-terminal (120 columns, raw: no
    newline translation); returns its exit code and what it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    tty.setraw(slave)
    proc = subprocess.Popen([*POSTROOM, *args], env=cli_env, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.wait(timeout=120)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, err
    return proc.returncode, out.decode()


SUMMARY = re.compile(r"account \d+ \((?P<email>[^)]+)\): 6 folders, (?P<new>\d+) new, .* in [\d.]+s\n?")


def test_sync_in_a_terminal_shows_its_progress_on_one_line_rewritten_in_place(
    env: dict[str, str], tmp_path: Path, mailbox: Mailbox
) -> None:
    mailbox.seed_corpus(600, seed=5)
    mailbox.seed_corpus(150, folder="Archive", seed=6)
    cli_env = _cli_env(env, tmp_path, mailbox)
    _, out = _in_a_terminal(["sync", "--once"], cli_env)

    # "\r<progress>\r<progress>...\r<spaces>\r<summary>\n": rewritten in place, cleared, then the summary
    first, *shown, cleared, last = out.split("\r")
    assert first == "" and shown, out
    line = re.compile(re.escape(mailbox.address) + r": ([\d,]+) of ([\d,]+) messages, (\d+) of 6 folders")
    progress = []
    for part in shown:
        m = line.fullmatch(part.rstrip(" "))
        assert m, part
        progress.append(tuple(int(n.replace(",", "")) for n in m.groups()))
    assert any(found > indexed > 0 for indexed, found, _ in progress), out  # seen while it ran
    assert progress == sorted(progress)  # only forward
    assert cleared.strip() == "" and len(cleared) >= len(shown[-1].rstrip(" "))
    summary = SUMMARY.match(last)
    assert summary and summary["email"] == mailbox.address and int(summary["new"]) == 750, out
    assert last.endswith("\n") and last.count("\n") == 1


def test_sync_elsewhere_than_a_terminal_prints_the_summary_only(
    env: dict[str, str], tmp_path: Path, mailbox: Mailbox
) -> None:
    mailbox.seed_corpus(200, seed=7)
    cli_env = _cli_env(env, tmp_path, mailbox)
    piped = subprocess.run([*POSTROOM, "sync", "--once"], env=cli_env, capture_output=True, text=True, check=True)
    assert "\r" not in piped.stdout and "messages," not in piped.stdout
    (line,) = piped.stdout.splitlines()
    summary = SUMMARY.match(line)
    assert summary and int(summary["new"]) == 200, piped.stdout

    mailbox.seed_corpus(50, seed=8)  # --json in a terminal: JSON only
    _, out = _in_a_terminal(["sync", "--once", "--json"], cli_env)
    assert "\r" not in out
    (result,) = json.loads(out)
    assert result["ok"] and result["new"] == 50
