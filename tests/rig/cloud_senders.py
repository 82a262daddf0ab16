"""Accounts on the cloud stand-ins ready for tracked sends to three recipients they host (Gmail
API or SMTP, Graph API or SMTP, EWS), with server-side readers of the recipients' inboxes and
the sender's Sent: shared by tests/sync/test_tracked_cloud.py and bench/tracked_send_bench.py.

    with ExitStack() as stack:
        cloud = BACKENDS["gmail-smtp"][0](stack, config, sessions, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.states import SendMode
from providers.base import FolderRole
from services.accounts import EwsAccountRequest, add_ews_account, add_gmail_account, add_graph_account
from tests.standins.ews_rig import ADDRESS as EWS_ADDRESS
from tests.standins.ews_rig import ews_rig
from tests.standins.gmail_rig import ADDRESS as GMAIL_ADDRESS
from tests.standins.gmail_rig import gmail_rig
from tests.standins.graph_rig import ADDRESS as GRAPH_ADDRESS
from tests.standins.graph_rig import graph_rig
from tests.web.microsoft_rig import microsoft_config

ANN, BOB, CARL = "ann@candidates.test", "bob@candidates.test", "carl@candidates.test"
TRACKING_BASE = "https://t.example.com"


@dataclass
class Cloud:
    account: int
    config: Config
    inbox: Callable[[str], list[bytes]]  # a recipient's inbox, server-side
    sent: Callable[[], list[bytes]]  # the sender's Sent as a mail client shows it
    mode: SendMode
    requests: Callable[[], int]  # calls the service answered so far (API requests, token calls aside)
    smtp: Callable[[], int]  # SMTP transactions the service's submission took


def _tracking(config: Config) -> Config:
    return dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, base_url=TRACKING_BASE))


def _gmail(
    stack: ExitStack,
    config: Config,
    sessions: sessionmaker[Session],
    smtp: bool,
    people: tuple[str, ...] = (ANN, BOB, CARL),
) -> Cloud:
    rig = stack.enter_context(gmail_rig(smtp=smtp))
    boxes = {a: rig.standin.add_user(a) for a in people}
    cfg = _tracking(rig.config(config))
    with sessions.begin() as s:
        account = add_gmail_account(s, cfg, GMAIL_ADDRESS, rig.refresh_token, smtp_submission=smtp).id
    return Cloud(
        account,
        cfg,
        lambda a: [m.raw for m in boxes[a].by_label("INBOX")],
        lambda: rig.raw_messages(FolderRole.SENT),
        SendMode.SMTP if smtp else SendMode.API,
        lambda: len(rig.standin.api_calls()),
        lambda: len(rig.smtp.submissions) if rig.smtp else 0,
    )


def _graph(
    stack: ExitStack,
    config: Config,
    sessions: sessionmaker[Session],
    smtp: bool,
    people: tuple[str, ...] = (ANN, BOB, CARL),
) -> Cloud:
    rig = stack.enter_context(graph_rig(smtp=smtp))
    boxes = {a: rig.graph.add_user(a) for a in people}
    cfg = _tracking(dataclasses.replace(config, microsoft=microsoft_config(rig)))
    with sessions.begin() as s:
        account = add_graph_account(s, cfg, GRAPH_ADDRESS, rig.refresh_token, smtp_submission=smtp).id

    def inbox(a: str) -> list[bytes]:
        return [i.raw for i in boxes[a].in_folder(boxes[a].folder("inbox").id)]

    return Cloud(
        account,
        cfg,
        inbox,
        lambda: rig.raw_messages(FolderRole.SENT),
        SendMode.SMTP if smtp else SendMode.API,
        lambda: len(rig.graph.http_requests()),
        lambda: len(rig.smtp.submissions) if rig.smtp else 0,
    )


def _ews(
    stack: ExitStack,
    config: Config,
    sessions: sessionmaker[Session],
    smtp: bool,
    people: tuple[str, ...] = (ANN, BOB, CARL),
) -> Cloud:
    assert not smtp
    rig = stack.enter_context(ews_rig(https=True))
    boxes = {a: rig.ews.add_user(a) for a in people}
    assert rig.ca_file is not None
    req = EwsAccountRequest(
        email=EWS_ADDRESS,
        ews_url=rig.endpoint,
        auth="basic",
        username=EWS_ADDRESS,
        password="Winter2026!",
        ca_file=rig.ca_file,
    )
    cfg = _tracking(config)
    with sessions.begin() as s:
        account = add_ews_account(s, cfg, req).id
    return Cloud(
        account,
        cfg,
        lambda a: [i.raw for i in boxes[a].in_folder("inbox")],
        lambda: rig.raw_messages(FolderRole.SENT),
        SendMode.API,
        lambda: len(rig.ews.requests()),
        lambda: 0,
    )


BACKENDS: dict[str, tuple[Callable[..., Cloud], bool]] = {
    "gmail-api": (_gmail, False),
    "gmail-smtp": (_gmail, True),
    "graph-api": (_graph, False),
    "graph-smtp": (_graph, True),
    "ews-api": (_ews, False),
}
