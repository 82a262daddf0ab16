"""The demo's scenario (postroom.demo_scenario): the mail holds what the demo promises to show."""

from __future__ import annotations

from datetime import UTC, datetime

from postroom import demo_scenario as scenario
from postroom.demo_documents import resume_pdf
from postroom.inbound import parse_inbound
from postroom.mime import parse_headers, parse_message

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def _copies() -> dict[bytes, list[scenario.Delivery]]:
    """Each message, with its copies in the recruiters' mailboxes."""
    out: dict[bytes, list[scenario.Delivery]] = {}
    for d in scenario.deliveries(NOW):
        if d.mailbox != scenario.APPLICATIONS.address:
            out.setdefault(d.raw, []).append(d)
    return out


def test_the_processing_mailbox_holds_a_json_form_a_yaml_profile_a_resume_and_a_broken_form() -> None:
    inbox = [d for d in scenario.deliveries(NOW) if d.mailbox == scenario.APPLICATIONS.address]
    assert all(d.labels == ("INBOX", "UNREAD") and d.date_ms < NOW.timestamp() * 1000 for d in inbox)
    parsed = {m.subject: m for m in (parse_inbound(d.raw) for d in inbox)}
    form = parsed["New application: Product Designer (Aiko Tanaka)"]
    assert form.data_source == "json part" and form.data["full_name"] == "Aiko Tanaka"
    profile = parsed["Kandidatenvorschlag: Senior Backend Engineer"]  # German keys, umlauts included
    assert profile.data_source == "yaml" and profile.data["verfugbar_ab"] == "1. Juni"
    assert profile.text.startswith("Guten Tag")
    resume = parsed["Updated résumé - Maya Okafor"]
    assert resume.from_[0].email == scenario.MAYA.address  # an applicant's address: routed to her
    assert [(a.filename, a.content_type) for a in resume.attachments] == [
        ("Maya-Okafor-CV-2025.pdf", "application/pdf")
    ]
    broken = parsed["New application: Senior Backend Engineer (Tom Becker)"]  # it fails: its JSON is cut off
    assert broken.data_source is None and broken.defects[0].startswith("json part is not valid JSON")


def test_the_scenario_has_what_the_demo_shows() -> None:
    copies = _copies()
    headers = {raw: parse_headers(raw) for raw in copies}
    # applicants with two addresses, each address writing
    senders = {h.from_[0].email for h in headers.values()}
    assert {
        scenario.MAYA_UNI.address,
        scenario.MAYA.address,
        scenario.PRIYA_STUDIO.address,
        scenario.PRIYA.address,
    } <= senders
    # messages both recruiters hold (one message, two mailboxes)
    both = [
        raw for raw, ds in copies.items() if {d.mailbox for d in ds} == {"rita@northwind.test", "sam@northwind.test"}
    ]
    assert len(both) >= 4
    # replies in threads, an auto-reply, an attachment, an HTML mail with a remote image
    assert sum(1 for h in headers.values() if h.in_reply_to) >= 10
    assert [h.subject for h in headers.values() if h.auto_reply] == [
        "Automatic reply: Re: Product Designer application - Jonas Weber"
    ]
    parsed = [parse_message(raw) for raw in copies]
    assert [(name, kind) for p in parsed for name, kind, _ in p.attachments] == [
        ("Maya-Okafor-CV.pdf", "application/pdf")
    ]
    assert [p.headers.subject for p in parsed if p.html_body and scenario.PORTFOLIO_IMAGE in p.html_body] == [
        "Portfolio - Priya Raman (Product Designer)"
    ]
    # dated within the two weeks before now, never after
    dates = sorted(d.date_ms for ds in copies.values() for d in ds)
    assert NOW.timestamp() * 1000 - 14 * 86400_000 < dates[0] and dates[-1] < NOW.timestamp() * 1000


def test_the_resume_is_a_pdf_whose_cross_reference_table_is_right() -> None:
    pdf = resume_pdf("Maya Okafor", ("Backend engineer (Python)",))
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.endswith(b"%%EOF\n")
    start = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[start:].startswith(b"xref\n0 6\n")
    offsets = [int(line[:10]) for line in pdf[start:].split(b"\n")[3:8]]
    for number, offset in enumerate(offsets, 1):
        assert pdf[offset:].startswith(b"%d 0 obj\n" % number)
    assert b"(Backend engineer \\(Python\\)) Tj" in pdf


def test_the_applicants_reply_answers_his_copy_in_its_thread() -> None:
    copy = (
        b"From: rita@northwind.test\r\nTo: daniel.brooks@example.org\r\n"
        b"Reply-To: rita+abcdefghijklmnopqrst@northwind.test\r\nMessage-ID: <copy.1@northwind.test>\r\n"
        b"Subject: [k3x9q2] Next steps: technical\r\n interview\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n\r\n'
        b'<p>Hi</p><img src="http://127.0.0.1:8000/t/o/AbC-12_x.gif" alt="">\r\n'
    )
    assert scenario.pixel_url(copy) == "http://127.0.0.1:8000/t/o/AbC-12_x.gif"
    mailbox, raw = scenario.applicant_reply(copy, NOW)
    h = parse_headers(raw)
    assert mailbox == "rita@northwind.test"
    assert [a.email for a in h.to] == ["rita+abcdefghijklmnopqrst@northwind.test"]
    assert [a.email for a in h.cc] == [scenario.APPLICATIONS.address]  # the processing mailbox's copy
    assert h.in_reply_to == ("<copy.1@northwind.test>",)
    assert h.subject == "Re: [k3x9q2] Next steps: technical interview"
    assert h.from_[0].email == scenario.DANIEL.address
