"""The dashboard: what needs the recruiter (a mailbox to reconnect, uncertain and failed sends),
the latest messages from applicants, and the last 7 days of sends with people's opens and
replies (machine opens never counted); an empty organisation is told what to do first. Real
Dovecot sync (tests/services/scenario.py), SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from selectolax.parser import HTMLParser
from sqlalchemy import update

from postroom.models import MailAccount, OutboxMessage, OutboxRecipient, utcnow
from postroom.states import AccountStatus, OutboxStatus
from services.orgs import add_org
from tests.services.scenario import ANN, build
from tests.web.signin import signed_in
from web import create_app


@pytest.fixture
def app(config, sessions, new_mailbox):  # type: ignore[no-untyped-def]
    scenario = build(config, sessions, new_mailbox)
    with sessions.begin() as s:  # the send happened this week, its recipient Ann replied
        s.execute(update(OutboxMessage).where(OutboxMessage.id == scenario.outbox_id).values(sent_at=utcnow()))
        s.execute(
            update(OutboxRecipient)
            .where(OutboxRecipient.outbox_id == scenario.outbox_id, OutboxRecipient.address == ANN)
            .values(replied_at=utcnow())
        )
    return create_app(config), scenario


def test_the_dashboard_shows_what_needs_the_recruiter_and_the_weeks_sends(app, sessions) -> None:  # type: ignore[no-untyped-def]
    flask_app, scenario = app
    with sessions.begin() as s:  # Rita revoked Postroom's access; one send may not have gone out
        s.execute(
            update(MailAccount)
            .where(MailAccount.id == scenario.rita_id)
            .values(status=AccountStatus.RECONNECT_NEEDED.value, last_error="The server refused the password.")
        )
        s.add(OutboxMessage(account_id=scenario.sam_id, message_id="<u@x.test>", raw=b"", recipients=[ANN],
                            status=OutboxStatus.UNCERTAIN.value))  # fmt: skip
    page = signed_in(flask_app).get("/").get_data(as_text=True)
    tree = HTMLParser(page)
    attention = tree.css_first("section.attention")
    assert attention is not None
    text = attention.text(separator=" ")
    assert scenario.rita.address in text and "The server refused the password." in text
    assert "1 message may or may not have gone out" in text
    assert any(a.attributes.get("href") == "/outbox?status=uncertain" for a in attention.css("a"))
    recent = [li.text(separator=" ") for li in tree.css("ul.recent li")]
    applications = [r for r in recent if "Application for the data engineer role" in r and "Re:" not in r]
    assert len(applications) == 1 and "Ann Applicant" in applications[0]  # in both mailboxes, shown once
    stats = tree.css_first("dl.stats").text(separator=" ")
    # 3 accepted + 1 refused recipients; Ann and Carol opened (people), Dave only by a proxy
    assert "1 message to 4 recipients" in stats and "Opened by a person 2 of 4" in " ".join(stats.split())
    assert "Replied 1 of 4" in " ".join(stats.split())


def test_an_empty_organisation_is_told_to_connect_a_mailbox(config, sessions) -> None:  # type: ignore[no-untyped-def]
    flask_app = create_app(config)
    with sessions.begin() as s:
        org = add_org(s, "Fresh").id
    page = signed_in(flask_app, "new@fresh.example", org_id=org).get("/").get_data(as_text=True)
    assert "No mailbox connected yet" in page and 'href="/connect"' in page
    assert 'section class="card attention"' not in page
