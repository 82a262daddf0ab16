"""The templates editor (issue 12, item 2): list, new, edit; a syntax error named with its line next
to the field; and each template's results — sends, people's opens, clicks, replies over time, with
machine opens apart — after a real tracked send through the rig, its pixel and link fetched
through the tracking endpoints by a browser and by Gmail's image proxy, and a reply synced from
Dovecot. Another organisation's template is not found. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy

from sqlalchemy import select

from postroom.config import Config
from postroom.models import Template
from tests.rig.fixtures import Mailbox, make_message
from tests.sync.helpers import connect, sync_ok
from tests.web.page_helpers import browser, field_errors, flashes, other_org, page_text

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
BODY = (
    "Hello {{ name }},\n\npick a [slot](https://cal.example.com/slots) or read [about us](https://acme.example.com/).\n"
)
BAR = re.compile(r'<span class="(machine )?h(\d+)" title="[\d-]+: (\d+)"></span>')


def test_no_templates_yet_says_what_they_are_for(config: Config) -> None:
    page = browser(config).text("/templates")
    assert "No templates yet" in page and 'href="/templates/new"' in page


def test_a_template_is_created_and_edited_and_mistakes_are_named_next_to_their_field(config: Config) -> None:
    b = browser(config)
    new = {"name": "Invite", "subject": "Interview for {{ role }}", "body": "Hello\n{% if x %}\n{{ y }"}
    resp = b.post("/templates/new", new)
    assert resp.status_code == 400
    assert field_errors(page_text(resp)) == ["The body has a syntax error on line 3: unexpected '}'."]
    assert "{% if x %}" in page_text(resp)  # what was typed stays
    with b.sessions() as s:
        assert s.scalars(select(Template)).all() == []

    page = b.follow(b.post("/templates/new", new | {"body": "Hello {{ name }}.", "json_part": "on"}))
    assert flashes(page) == [("ok", "Template “Invite” is saved; choose it when you compose a message.")]
    assert "No message made from this template has gone out yet" in page
    with b.sessions() as s:
        template = s.scalars(select(Template)).one()
        assert (template.body, template.json_part) == ("Hello {{ name }}.", True)
    assert "Invite" in b.text("/templates") and "Interview for {{ role }}" in b.text("/templates")

    b.follow(b.post("/templates/new", {"name": "Offer", "subject": "Offer", "body": "Welcome."}))
    resp = b.post(f"/templates/{template.id}", {"name": "Offer", "subject": "S", "body": "B"})
    assert resp.status_code == 400
    assert field_errors(page_text(resp)) == ["There is already a template named 'Offer'; choose another name."]
    resp = b.post(f"/templates/{template.id}", {"name": "Invite", "subject": "Hi {{ a", "body": "B"})
    (error,) = field_errors(page_text(resp))
    assert error.startswith("The subject has a syntax error on line 1: unexpected end of template")

    page = b.follow(b.post(f"/templates/{template.id}", {"name": "Invite 2", "subject": "Hi", "body": "New body."}))
    assert flashes(page) == [("ok", "Template “Invite 2” is saved; messages already sent keep what they said.")]
    with b.sessions() as s:
        saved = s.get_one(Template, template.id)
        assert (saved.name, saved.subject, saved.body, saved.json_part) == ("Invite 2", "Hi", "New body.", False)


def test_another_organisations_template_is_not_found(config: Config) -> None:
    b = browser(config)
    b.follow(b.post("/templates/new", {"name": "Invite", "subject": "Hi", "body": "Hello."}))
    with b.sessions() as s:
        template_id = s.scalars(select(Template.id)).one()
    eve = other_org(b.app)
    assert eve.get(f"/templates/{template_id}").status_code == 404
    assert eve.post(f"/templates/{template_id}", {"name": "Mine", "subject": "x", "body": "y"}).status_code == 404
    assert b.get(f"/templates/{template_id + 100}").status_code == 404  # exactly like a missing one
    assert "No templates yet" in eve.text("/templates")
    with b.sessions() as s:
        assert s.get_one(Template, template_id).name == "Invite"


def parsed(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=default_policy)


def test_results_count_people_apart_from_machines_after_a_real_tracked_send(
    tracking: Config, mailbox: Mailbox, new_mailbox: Callable[[], Mailbox]
) -> None:
    b = browser(tracking)
    mailbox.ensure_folders()
    account_id = connect(tracking, b.sessions, mailbox)
    b.follow(b.post("/templates/new", {"name": "Invite", "subject": "Your interview", "body": BODY}))
    with b.sessions() as s:
        template_id = s.scalars(select(Template.id)).one()
    ann, bob = new_mailbox(), new_mailbox()
    form = {"account": str(account_id), "to": f"{ann.address}, {bob.address}", "template": "Invite",
            "data": '{"name": "you"}', "track": "on"}  # fmt: skip
    assert flashes(b.follow(b.post("/compose", form)))[0][0] == "ok"

    copies = {}
    for box in (ann, bob):
        box.wait_for(lambda box=box: bool(box.uids()))  # type: ignore[misc]
        (raw,) = box.fetch_raw().values()
        copies[box.address] = parsed(raw)
    html = {a: str(m.get_body(("html",)).get_content()) for a, m in copies.items()}  # type: ignore[union-attr]
    pixel = {a: re.search(r'https://t\.example\.com(/t/o/[^"]+\.gif)', h).group(1) for a, h in html.items()}  # type: ignore[union-attr]
    link = re.search(r'https://t\.example\.com(/t/c/[^"]+)"', html[ann.address]).group(1)  # type: ignore[union-attr]
    hits = b.app.extensions["postroom"]["hits"]
    assert b.client.get(pixel[ann.address], headers={"User-Agent": CHROME}).status_code == 200  # Ann reads it
    assert b.client.get(link.replace("&amp;", "&"), headers={"User-Agent": CHROME}).status_code == 302  # and clicks
    assert b.client.get(pixel[bob.address], headers={"User-Agent": GMAIL}).status_code == 200  # Gmail's proxy
    hits.flush()
    mailbox.append(  # Ann answers; the next sync files it
        make_message(
            subject="Re: Your interview",
            from_=ann.address,
            to=str(copies[ann.address]["Reply-To"]),
            in_reply_to=str(copies[ann.address]["Message-ID"]),
        )
    )
    sync_ok(tracking, b.sessions, account_id)

    page = b.text(f"/templates/{template_id}")
    words = " ".join(page.split())
    assert "2 recipients in 1 message (2 tracked): 1 opened, 1 clicked, 1 replied." in words
    assert "Machine opens <strong>1</strong>" in words
    series = re.findall(
        r'<div class="chart( chart-\w+)?" role="img" aria-label="([^"]+) over time">(.*?)</div>', page, re.S
    )
    bars = {label: [(bool(m), int(h), int(n)) for m, h, n in BAR.findall(spans)][-1] for _, label, spans in series}
    assert bars == {  # today's bar of each chart: 2 sent is the peak
        "Sent": (False, 10, 2),
        "Opened by a person": (False, 5, 1),
        "Clicked": (False, 5, 1),
        "Replied": (False, 5, 1),
        "Machine opens": (True, 5, 1),
    }
