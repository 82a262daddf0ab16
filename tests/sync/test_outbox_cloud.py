"""The outbox's uncertain path on Gmail, Microsoft Graph and EWS, against their stand-ins driven
by the real client libraries (google-api-python-client + httplib2, requests + msal, exchangelib),
on SQLite and PostgreSQL.

A send the service carried out but whose answer was a 5xx, came too late or never came is
``uncertain``, was submitted exactly once, and is settled as ``sent`` by finding its
Message-ID in Sent (``messages.list q=rfc822msgid:``, ``$filter=internetMessageId eq``,
FindItem on message:InternetMessageId); a failure before the request reached the service is
safe to try again.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.models import OutboxMessage
from providers.base import FolderRole, OutgoingMessage
from providers.errors import SendUncertain, TransientError
from services.accounts import EwsAccountRequest, add_ews_account, add_gmail_account, add_graph_account
from services.outbox import SendRequest, retry_message, send_message
from sync.outbox import process_outbox
from sync.outbox_rows import OutboxStatus
from tests.rig.mailrig import free_port
from tests.rig.messages import make_message, new_message_id
from tests.standins.ews_rig import ADDRESS as EWS_ADDRESS
from tests.standins.ews_rig import EwsRig, ews_rig
from tests.standins.gmail_rig import ADDRESS as GMAIL_ADDRESS
from tests.standins.gmail_rig import GmailRig, gmail_rig
from tests.standins.graph_rig import ADDRESS as GRAPH_ADDRESS
from tests.standins.graph_rig import GraphRig, graph_rig
from tests.web.microsoft_rig import microsoft_config

WORKER = f"{socket.gethostname()}:{os.getpid()}:test-worker"
JANE = "jane.doe@example.test"


def quick(config: Config) -> Config:
    """One-second network timeouts, for a service that answers late."""
    return dataclasses.replace(config, sync=dataclasses.replace(config.sync, connect_timeout=1.0))


def logged(count: Callable[[], int], timeout: float = 10.0) -> int:
    """``count()`` once the service has logged the call (a late answer is logged when it is written)."""
    deadline = time.monotonic() + timeout
    while count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return count()


def status(sessions: sessionmaker[Session], outbox_id: int) -> OutboxMessage:
    with sessions() as s:
        return s.get_one(OutboxMessage, outbox_id)


# ---------------------------------------------------------------- Gmail
@pytest.fixture
def gmail() -> Iterator[GmailRig]:
    with gmail_rig() as rig:
        yield rig


@pytest.fixture
def gconfig(config: Config, gmail: GmailRig) -> Config:
    return gmail.config(config)


@pytest.fixture
def gmail_account(gconfig: Config, sessions: sessionmaker[Session], gmail: GmailRig) -> int:
    with sessions.begin() as s:
        return add_gmail_account(s, gconfig, GMAIL_ADDRESS, gmail.refresh_token).id


def gmail_sends(rig: GmailRig) -> int:
    return len(rig.standin.api_calls("users.messages.send"))


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503}, {"drop": True}])
def test_gmail_send_answered_with_a_5xx_or_never_is_uncertain_and_sent_once(
    gconfig: Config, sessions: sessionmaker[Session], gmail: GmailRig, gmail_account: int, fault: dict[str, object]
) -> None:
    jane = gmail.standin.add_user(JANE)
    gmail.standin.fail("users.messages.send", after=True, **fault)  # type: ignore[arg-type]
    entry = send_message(gconfig, sessions, SendRequest(gmail_account, [JANE], "Interview", "Tuesday at 10.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN, entry.error
    # exactly one send reached Gmail: httplib2 writes a request again after a dropped
    # connection, which for messages.send would be a second copy
    assert gmail_sends(gmail) == 1
    assert [m.message_id for m in jane.by_label("INBOX")] == [entry.message_id]

    done = process_outbox(gconfig, sessions, gmail_account, WORKER)
    (copy,) = [m for m in gmail.standin.mailbox(GMAIL_ADDRESS).by_label("SENT") if m.message_id == entry.message_id]
    assert done.confirmed == 1
    settled = status(sessions, entry.id)
    assert (settled.status, settled.sent_copy_id) == (OutboxStatus.SENT, copy.id)
    assert gmail_sends(gmail) == 1 and len(jane.by_label("INBOX")) == 1


def test_gmail_send_whose_answer_comes_too_late_is_uncertain(
    gconfig: Config, sessions: sessionmaker[Session], gmail: GmailRig, gmail_account: int
) -> None:
    gmail.standin.add_user(JANE)
    gmail.standin.fail("users.messages.send", after=True, stall=2.5)
    entry = send_message(quick(gconfig), sessions, SendRequest(gmail_account, [JANE], "Offer", "Welcome.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN and logged(lambda: gmail_sends(gmail)) == 1
    outcome = retry_message(gconfig, sessions, entry.id)  # looks in Sent, finds it
    assert outcome.found_in_sent and outcome.entry.status == OutboxStatus.SENT
    assert gmail_sends(gmail) == 1


def test_gmail_find_sent_searches_sent_by_rfc822msgid(gmail: GmailRig) -> None:
    mid = new_message_id()
    provider = gmail.provider()
    try:
        assert provider.find_sent(mid) is None
        gmail.standin.deliver(GMAIL_ADDRESS, make_message(message_id=mid), ["INBOX"])  # received, not sent
        assert provider.find_sent(mid) is None
        copy = gmail.standin.deliver(GMAIL_ADDRESS, make_message(message_id=mid), ["SENT", "TRASH"])
        assert provider.find_sent(mid) == copy  # a sent copy deleted since still counts
    finally:
        provider.close()
    assert {c.status for c in gmail.standin.api_calls("users.messages.list")} == {200}


# ---------------------------------------------------------------- Microsoft Graph
@pytest.fixture
def graph() -> Iterator[GraphRig]:
    with graph_rig() as rig:
        yield rig


@pytest.fixture
def mconfig(config: Config, graph: GraphRig) -> Config:
    return dataclasses.replace(config, microsoft=microsoft_config(graph))


@pytest.fixture
def graph_account(mconfig: Config, sessions: sessionmaker[Session], graph: GraphRig) -> int:
    with sessions.begin() as s:
        return add_graph_account(s, mconfig, GRAPH_ADDRESS, graph.refresh_token).id


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 500}, {"drop": True}, {"stall": 2.5}])
def test_graph_sendmail_answered_with_a_5xx_late_or_never_is_uncertain_then_found_in_sent_items(
    mconfig: Config, sessions: sessionmaker[Session], graph: GraphRig, graph_account: int, fault: dict[str, object]
) -> None:
    jane = graph.graph.add_user(JANE)
    graph.graph.fail("sendMail", after=True, **fault)  # type: ignore[arg-type]
    entry = send_message(quick(mconfig), sessions, SendRequest(graph_account, [JANE], "Interview", "Tuesday.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN, entry.error
    assert logged(lambda: len(graph.graph.api_calls("sendMail"))) == 1
    assert len(jane.in_folder(jane.folder("inbox").id)) == 1

    assert process_outbox(mconfig, sessions, graph_account, WORKER).confirmed == 1
    box = graph.graph.mailbox(GRAPH_ADDRESS)
    (copy,) = [i for i in box.in_folder(box.folder("sentitems").id) if i.headers()["Message-ID"] == entry.message_id]
    settled = status(sessions, entry.id)
    assert (settled.status, settled.sent_copy_id) == (OutboxStatus.SENT, copy.id)
    assert len(graph.graph.api_calls("sendMail")) == 1


def test_graph_send_that_cannot_connect_is_safe_to_try_again(graph: GraphRig) -> None:
    closed = free_port()
    provider = graph.provider(graph_root=f"https://127.0.0.1:{closed}/v1.0", max_retries=0)
    mid = new_message_id()
    try:
        with pytest.raises(TransientError) as failed:
            provider.send(OutgoingMessage(make_message(message_id=mid, to=JANE), GRAPH_ADDRESS, (JANE,), mid))
    finally:
        provider.close()
    assert not isinstance(failed.value, SendUncertain)


def test_graph_find_sent_filters_sent_items_by_internet_message_id(graph: GraphRig) -> None:
    mid = new_message_id()
    quoted = "<it's-quoted@example.test>"
    provider = graph.provider()
    try:
        graph.deliver(make_message(message_id=mid))  # in the inbox: not sent
        assert provider.find_sent(mid) is None
        copy = graph.deliver(make_message(message_id=mid.upper()), FolderRole.SENT)
        assert provider.find_sent(mid) == copy  # Exchange compares strings without regard to case
        other = graph.deliver(make_message(message_id=quoted), FolderRole.SENT)
        assert provider.find_sent(quoted) == other
    finally:
        provider.close()


# ---------------------------------------------------------------- EWS
@pytest.fixture
def ews() -> Iterator[EwsRig]:
    with ews_rig(https=True) as rig:
        yield rig


@pytest.fixture
def ews_account(config: Config, sessions: sessionmaker[Session], ews: EwsRig) -> int:
    assert ews.ca_file is not None
    req = EwsAccountRequest(
        email=EWS_ADDRESS,
        ews_url=ews.endpoint,
        auth="basic",
        username=EWS_ADDRESS,
        password="Winter2026!",
        ca_file=ews.ca_file,
    )
    with sessions.begin() as s:
        return add_ews_account(s, config, req).id


@pytest.mark.parametrize("fault", [{}, {"drop": True}, {"stall": 2.5}])
def test_ews_send_answered_with_an_error_late_or_never_is_uncertain_then_found_in_sent_items(
    config: Config, sessions: sessionmaker[Session], ews: EwsRig, ews_account: int, fault: dict[str, object]
) -> None:
    jane = ews.ews.add_user(JANE)
    ews.ews.fail("CreateItem", **fault)  # type: ignore[arg-type]
    entry = send_message(quick(config), sessions, SendRequest(ews_account, [JANE], "Interview", "Tuesday.\n"))
    assert entry.status == OutboxStatus.UNCERTAIN, entry.error
    assert logged(lambda: len(ews.ews.requests("CreateItem"))) == 1 and len(jane.in_folder("inbox")) == 1

    assert process_outbox(config, sessions, ews_account, WORKER).confirmed == 1
    (copy,) = [i for i in ews.ews.mailbox(EWS_ADDRESS).in_folder("sentitems")]
    settled = status(sessions, entry.id)
    assert (settled.status, settled.sent_copy_id) == (OutboxStatus.SENT, copy.id)
    assert len(ews.ews.requests("CreateItem")) == 1 and len(jane.in_folder("inbox")) == 1
