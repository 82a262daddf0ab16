"""Two mailboxes of one organisation indexed at the same moment: a reply indexed by one worker
while the other commits the message it answers must still land in that message's thread.

The interleaving is made real, not mocked: worker B's first write (the INSERT of its new
thread) first lets worker A run its whole transaction and commit, so B threads from keys it read
before A committed — what two sync workers on two recruiters' mailboxes do (seen in the demo,
whose two mailboxes sync together). SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from postroom.mime import parse_headers
from postroom.models import ThreadKey
from sync.store import default_org
from sync.threads import ThreadAssigner
from tests.rig.messages import make_message

FIRST = "<first@maya.test>"
REPLY = "<reply@acme.test>"


def _item(mid: str, **kw: str):  # type: ignore[no-untyped-def]
    h = parse_headers(make_message(message_id=mid, **kw))
    return (mid, (mid, *h.references, *h.in_reply_to), h)


def test_a_reply_indexed_while_its_parent_commits_joins_the_parents_thread(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        org = default_org(s).id
    parent = _item(FIRST, subject="Application", from_="maya@maya.test", to="rita@acme.test")
    reply = _item(REPLY, subject="Re: Application", from_="rita@acme.test", to="maya@maya.test", in_reply_to=FIRST)
    committed: dict[str, int] = {}

    def worker_a() -> None:  # the other mailbox's worker: the parent, committed
        with sessions.begin() as s:
            committed.update(ThreadAssigner(s, org).assign([parent]))

    with sessions() as b:
        fired = []

        def before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
            if not fired and statement.lstrip().upper().startswith("INSERT INTO THREADS"):
                fired.append(True)
                t = threading.Thread(target=worker_a)
                t.start()
                t.join(30)

        engine = b.get_bind()
        event.listen(engine, "before_cursor_execute", before)
        try:
            with b.begin():
                got = ThreadAssigner(b, org).assign([reply])
        finally:
            event.remove(engine, "before_cursor_execute", before)
    assert fired and committed, "the race did not happen"
    with sessions() as s:
        keys = dict(s.execute(select(ThreadKey.key, ThreadKey.thread_id).where(ThreadKey.org_id == org)).tuples().all())
        threads = s.scalar(select(func.count(func.distinct(ThreadKey.thread_id))).where(ThreadKey.org_id == org))
    assert threads == 1, keys
    assert got[REPLY] == keys[FIRST] == keys[REPLY]
