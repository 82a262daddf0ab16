"""The processing mailbox on Gmail, Microsoft Graph and EWS accounts, through services.inbound
against each stand-in (the real client libraries on the wire), on SQLite and PostgreSQL: the
folders are created, mail is processed and moved to processed/, malformed mail to failed/ with
its reason, the source folder is left empty, a second run takes nothing, and a failed message
an operator moves back into the source (a new id on Graph and EWS) is taken again as the same item."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.inbound import add_mailbox, list_items, run_once
from tests.sync.engine_env import EngineEnv, env_fixture
from tests.sync.test_inbound_mailbox import BAD_JSON, GOOD

env = env_fixture("gmail", "graph", "ews")


def _folder(env: EngineEnv, name: str) -> list[bytes]:
    """The raw messages in the folder (label) called ``name``, read from the stand-in itself."""
    box: Any = env.box  # type: ignore[attr-defined]
    if env.backend == "gmail":
        if name == "INBOX":
            return [m.raw for m in box.by_label("INBOX")]
        ids = [lb.id for lb in box.labels.values() if lb.name == name]
        return [m.raw for lid in ids for m in box.by_label(lid)]
    if name == "INBOX":
        return [i.raw for i in box.in_folder("inbox")]
    ids = [f.id for f in box.folders.values() if f.display_name == name]
    assert len(ids) <= 1, f"{name} exists {len(ids)} times"
    return [i.raw for fid in ids for i in box.in_folder(fid)]


def _message_ids(raws: list[bytes]) -> set[str]:
    return {raw.split(b"Message-ID: ")[1].split(b"\r\n")[0].strip().decode() for raw in raws}


def test_a_cloud_mailbox_processes_moves_and_fails_like_imap(env: EngineEnv) -> None:
    sessions: sessionmaker[Session] = env.sessions
    with sessions.begin() as s:
        add_mailbox(s, env.config, None, env.account_id)
    for raw in (*GOOD.values(), BAD_JSON):
        env.deliver(raw)

    result = run_once(env.config, sessions)

    assert (result.processed, result.failed, result.errors) == (len(GOOD), 1, [])
    assert _folder(env, "INBOX") == []
    assert _message_ids(_folder(env, "processed")) == set(GOOD)
    assert _message_ids(_folder(env, "failed")) == {"<badjson@agency.example>"}
    with sessions() as s:
        items = {i.message_id: i for i in list_items(s, 1)}
    assert items["<json@agency.example>"].data == {"name": "Ada Lovelace", "role": "Engineer"}
    assert [a.filename for a in items["<json@agency.example>"].attachments] == ["cv.pdf"]
    bad = items["<badjson@agency.example>"]
    assert bad.status == "failed" and bad.reason and "json" in bad.reason.lower()

    again = run_once(env.config, sessions)  # nothing new: nothing taken, nothing moved, one folder each
    assert (again.processed, again.failed, again.moved, again.errors) == (0, 0, 0, [])
    assert len(_folder(env, "processed")) == len(GOOD) and len(_folder(env, "failed")) == 1

    # an operator puts the failed message back into the inbox: taken again, as the same item
    env.deliver(BAD_JSON)
    third = run_once(env.config, sessions)
    assert (third.failed, third.errors) == (1, [])
    with sessions() as s:
        retried = [i for i in list_items(s, 1) if i.message_id == "<badjson@agency.example>"]
    assert len(retried) == 1 and retried[0].status == "failed"
    assert _folder(env, "INBOX") == [] and len(_folder(env, "failed")) == 2


@pytest.mark.parametrize("env", ["gmail"], indirect=True)  # Graph and EWS give it a new id: covered above
def test_a_failed_gmail_message_labelled_back_into_the_inbox_is_taken_again(env: EngineEnv) -> None:
    sessions: sessionmaker[Session] = env.sessions
    with sessions.begin() as s:
        add_mailbox(s, env.config, None, env.account_id)
    env.deliver(BAD_JSON)
    assert run_once(env.config, sessions).failed == 1
    box: Any = env.box  # type: ignore[attr-defined]
    (failed_label,) = [lb.id for lb in box.labels.values() if lb.name == "failed"]
    (msg,) = box.by_label(failed_label)
    box.modify(msg.id, add=["INBOX"], remove=[failed_label])  # an operator, in Gmail's web client

    again = run_once(env.config, sessions)

    assert (again.failed, again.errors) == (1, [])  # taken again (it is still bad JSON), not left behind
    assert _folder(env, "INBOX") == [] and len(_folder(env, "failed")) == 1
    with sessions() as s:
        (item,) = list_items(s, 1)
    assert item.status == "failed"
