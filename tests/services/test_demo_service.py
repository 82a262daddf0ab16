"""services.demo: what seeding writes, when it is due, and that the demo's mail server only ever
takes over the mailboxes the demo seeded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom import demo_scenario as scenario
from postroom.config import Config
from postroom.models import MailAccount, Organisation
from services.accounts import ImapAccountRequest, add_imap_account
from services.demo import (
    DemoError,
    connect_demo_accounts,
    demo_mailboxes,
    demo_org_id,
    remove_demo,
    seed_demo,
    should_seed,
)
from services.users import sign_in


def test_seeding_is_due_only_on_an_empty_database_and_happens_once(
    config: Config, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s:
        assert should_seed(s)
    creds = seed_demo(sessions, config)
    with sessions.begin() as s:
        assert not should_seed(s)
        org = s.get_one(Organisation, creds.org_id)
        assert org.demo and org.name == scenario.ORG_NAME
        assert s.scalar(select(Organisation.id).order_by(Organisation.id)) != org.id  # the default is a real one
        assert sign_in(s, creds.email, creds.password, "127.0.0.1").org_id == org.id
    with pytest.raises(DemoError, match="exists already"):
        seed_demo(sessions, config)
    assert remove_demo(sessions, config) == 1
    with sessions() as s:
        assert should_seed(s)


def test_a_mailbox_a_demo_user_connected_is_never_pointed_at_the_demo_mail_server(
    config: Config, sessions: sessionmaker[Session]
) -> None:
    org = seed_demo(sessions, config).org_id
    with sessions.begin() as s:
        add_imap_account(
            s,
            config,
            ImapAccountRequest(
                "ann@example.com", "ann", "secret", "127.0.0.1", 993, "ssl", "127.0.0.1", 465, "ssl", org_id=org
            ),
        )
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    demo = (*scenario.RECRUITERS, scenario.APPLICATIONS)
    tokens = {p.address: ("ya29.token", expires) for p in demo} | {"ann@example.com": ("x", expires)}
    assert connect_demo_accounts(sessions, config, "http://127.0.0.1:1234/", "http://127.0.0.1:1234/token", tokens) == 3
    with sessions() as s:
        assert demo_mailboxes(s) == [p.address for p in demo]
        assert demo_org_id(s) == org
        settings = {a.email: a.settings for a in s.scalars(select(MailAccount))}
    assert settings["ann@example.com"]["imap_host"] == "127.0.0.1" and "api_root" not in settings["ann@example.com"]
    assert {settings[p.address]["api_root"] for p in demo} == {"http://127.0.0.1:1234/"}
