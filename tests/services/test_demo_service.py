"""services.demo: what seeding writes, when it is due, and that the demo's mail server only ever
takes over the mailboxes the demo seeded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom import demo_scenario as scenario
from postroom.config import Config
from postroom.models import MailAccount, Organisation
from postroom.models_inbound import InboundAttachment, InboundItem
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
from services.inbound import add_mailbox, list_items, run_once
from services.orgs import add_org
from services.users import sign_in
from standins.demo import DemoMailServer


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


def test_the_demo_processing_mailbox_takes_its_inbox_and_remove_keeps_a_file_another_organisation_shares(
    config: Config, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    org = seed_demo(sessions, config).org_id
    server = DemoMailServer(tmp_path / "mail.json", seed=lambda: scenario.deliveries(datetime.now(UTC)))
    server.start()
    try:
        with sessions() as s:
            boxes = demo_mailboxes(s)
        tokens = {a: (server.access_token(a)[0], datetime(2030, 1, 1, tzinfo=UTC)) for a in boxes}
        connect_demo_accounts(sessions, config, server.api_root, server.token_uri, tokens)
        result = run_once(config, sessions, org)
    finally:
        server.close()
    assert (result.processed, result.failed) == (3, 1)
    with sessions() as s:
        items = {i.subject: i.status for i in list_items(s, org)}
    assert items == {
        "New application: Product Designer (Aiko Tanaka)": "processed",
        "Kandidatenvorschlag: Senior Backend Engineer": "processed",
        "Updated résumé - Maya Okafor": "processed",
        "New application: Senior Backend Engineer (Tom Becker)": "failed",
    }
    assert [m.decode() for m in server.messages(scenario.APPLICATIONS.address)] == []  # INBOX emptied

    # a real organisation's processing mailbox took the same résumé: the file, named by its
    # content, is shared
    with sessions.begin() as s:
        resume = s.scalars(select(InboundAttachment)).one()
        kept_raw = list(s.scalars(select(InboundItem.body_id)))
        real = add_org(s, "Real")
        account = add_imap_account(
            s,
            config,
            ImapAccountRequest(
                "jobs@example.com", "jobs", "secret", "127.0.0.1", 993, "ssl", "127.0.0.1", 465, "ssl", org_id=real.id
            ),
        )
        mailbox = add_mailbox(s, config, real.id, account.id)
        item = InboundItem(org_id=real.id, mailbox_id=mailbox, uidvalidity=1, uid=1, subject="CV")
        s.add(item)
        s.flush()
        s.add(
            InboundAttachment(
                org_id=real.id,
                item_id=item.id,
                filename=resume.filename,
                content_type=resume.content_type,
                kind=resume.kind,
                size=resume.size,
                sha256=resume.sha256,
                path=resume.path,
            )
        )
    assert len(kept_raw) == 4 and all(kept_raw)
    blobs = config.storage.blob_dir
    demo_files = {p for p in blobs.rglob("*") if p.is_file()}
    assert blobs / resume.path in demo_files
    assert remove_demo(sessions, config) == 1
    assert {p for p in blobs.rglob("*") if p.is_file()} == {blobs / resume.path}  # the real one's stays
    with sessions() as s:
        assert s.scalars(select(InboundAttachment.org_id)).all() == [real.id]
