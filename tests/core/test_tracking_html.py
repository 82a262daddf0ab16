"""Each recipient's tracked copy looks exactly like everyone else's: only its Message-ID, its
links and its pixel differ, and every other byte is the canonical message's."""

from __future__ import annotations

import doctest
import re
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from selectolax.lexbor import LexborHTMLParser

import postroom.tracking_html
from postroom.tracking_html import html_of, link_count, links_of, personalise, pixel_tag, rewrite_html

HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Interview</title></head><body>\
<table role="presentation" style="width:100%"><tr><td style="padding:16px">\
<p style="margin:0">Dear Zoë, thank you for applying.</p>\
<p><a href="https://jobs.example.com/roles/42?utm=mail&amp;lang=fr" style="color:#1a73e8">See the role</a></p>\
<p>Questions? <a href="mailto:hr@example.com">hr@example.com</a> or <a href="tel:+331234">call</a>, \
<a href="#details">details</a>.</p>\
<p><a href="https://calendar.example.com/book">Book a slot</a></p>\
</td></tr></table></body></html>
"""
TARGETS = ["https://jobs.example.com/roles/42?utm=mail&lang=fr", "https://calendar.example.com/book"]
ICS = "\r\n".join(
    [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "METHOD:REQUEST",
        "BEGIN:VEVENT",
        "UID:abc@example.com",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
)
MID = "<canonical.1@mail.example.com>"
VISIBLE = ("from", "to", "cc", "subject", "date", "reply-to", "in-reply-to", "references")


def canonical(cte: str = "quoted-printable", *, invite: bool = True, html: str = HTML) -> bytes:
    """A message shaped as the composer writes one (issue 11): the ids by hand, then
    multipart/alternative (text, JSON, calendar, HTML last), wrapped with the invite.ics."""
    alt = EmailMessage(policy=policy.SMTP)
    alt.set_content("Dear Zoë, thank you for applying.\nSee the role: https://jobs.example.com/roles/42\n")
    alt.add_alternative(b'{"role": 42}', maintype="application", subtype="json")
    if invite:
        alt.add_alternative(ICS, subtype="calendar", params={"method": "REQUEST"})
    alt.add_alternative(html, subtype="html", cte=cte)
    if invite:
        msg = EmailMessage(policy=policy.SMTP)
        msg.make_mixed()
        msg.attach(alt)
        msg.add_attachment(ICS.encode(), maintype="application", subtype="ics", filename="invite.ics")
    else:
        msg = alt
    del msg["MIME-Version"]
    for name, value in [
        ("Date", "Mon, 17 Aug 2026 09:00:00 +0000"),
        ("From", '"Ann Recruiter" <ann@example.com>'),
        ("To", "zoe@example.org, Bob <bob@example.org>"),
        ("Cc", "hiring@example.com"),
        ("Subject", "[k3x9q2] Your interview"),
        ("Reply-To", "ann+tok3n@example.com"),
        ("MIME-Version", "1.0"),
    ]:
        msg[name] = value
    ids = (
        f"Message-ID: {MID}\r\nIn-Reply-To: <earlier@example.org>\r\n"
        "References: <first@example.org>\r\n <earlier@example.org>\r\n"
    )
    return ids.encode() + msg.as_bytes()


def copy_for(raw: bytes, n: int, **kw: str) -> bytes:
    return personalise(
        raw,
        message_id=f"<copy.{n}@mail.example.com>",
        pixel_url=f"https://t.example.com/t/o/PIXEL{n}.gif",
        link_url=lambda i, url: f"https://t.example.com/t/c/R{n}L{i}?u=x",
        **kw,
    )


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def without(block: bytes, *names: str) -> bytes:
    fields = re.split(rb"\r\n(?![ \t])", block)
    return b"\r\n".join(f for f in fields if f.split(b":", 1)[0].lower().decode() not in names)


def html_bounds(raw: bytes) -> tuple[int, int]:
    """Where the HTML part's encoded body starts and ends, found independently of the code under test."""
    head = raw.index(b"Content-Type: text/html")
    start = raw.index(b"\r\n\r\n", head) + 4
    return start, raw.index(b"\r\n--", start)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(postroom.tracking_html).failed == 0


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_a_copy_parses_and_carries_its_own_links_and_pixel(cte: str) -> None:
    raw = canonical(cte)
    copy = message_from_bytes(copy_for(raw, 1), policy=policy.default)
    assert copy["Message-ID"] == "<copy.1@mail.example.com>"
    html = copy.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert 'href="https://t.example.com/t/c/R1L0?u=x"' in html and 'href="https://t.example.com/t/c/R1L1?u=x"' in html
    assert 'href="mailto:hr@example.com"' in html and 'href="tel:+331234"' in html and 'href="#details"' in html
    assert "jobs.example.com" not in html and "calendar.example.com" not in html
    assert html.rstrip().endswith(pixel_tag("https://t.example.com/t/o/PIXEL1.gif") + "</body></html>")
    assert html.count("<img") == 1
    assert "Dear Zoë" in html  # the text around the links is untouched, accents and all
    original = message_from_bytes(raw, policy=policy.default)
    assert [p.get_content_type() for p in copy.walk()] == [p.get_content_type() for p in original.walk()]
    for before, after in zip(original.walk(), copy.walk(), strict=True):
        if not before.is_multipart() and before.get_content_type() != "text/html":
            assert after.get_content() == before.get_content()


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "7bit", "8bit"])
def test_every_byte_outside_the_message_id_and_the_html_is_the_canonical_messages(cte: str) -> None:
    html = HTML.replace("Zoë", "Zoe") if cte == "7bit" else HTML
    raw = canonical(cte, html=html)
    copy = copy_for(raw, 1)
    restored = copy.replace(b"Message-ID: <copy.1@mail.example.com>\r\n", f"Message-ID: {MID}\r\n".encode(), 1)
    (rs, re_), (cs, ce) = html_bounds(raw), html_bounds(restored)
    assert restored[:cs] == raw[:rs]
    assert restored[ce:] == raw[re_:]
    assert html_of(copy) == rewrite_html(
        html_of(raw) or "",
        pixel_url="https://t.example.com/t/o/PIXEL1.gif",
        link_url=lambda i, u: f"https://t.example.com/t/c/R1L{i}?u=x",
    )


def test_two_recipients_copies_show_identical_headers_except_the_message_id() -> None:
    raw = canonical()
    one, two = copy_for(raw, 1), copy_for(raw, 2)
    assert without(header_block(one), "message-id") == without(header_block(two), "message-id")
    assert without(header_block(one), "message-id") == without(header_block(raw), "message-id")
    a, b = message_from_bytes(one, policy=policy.default), message_from_bytes(two, policy=policy.default)
    for name in VISIBLE:
        assert a[name] == b[name], name
    assert a["Message-ID"] != b["Message-ID"]


def test_a_plain_alternative_without_invite_is_personalised_too() -> None:
    raw = canonical(invite=False)
    copy = message_from_bytes(copy_for(raw, 3), policy=policy.default)
    assert copy.get_content_type() == "multipart/alternative"
    assert "PIXEL3" in copy.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_api_mode_names_only_that_recipient_and_drops_cc() -> None:
    raw = canonical()
    copy = copy_for(raw, 1, only_to="bob@example.org")
    parsed = message_from_bytes(copy, policy=policy.default)
    assert parsed["To"] == "bob@example.org" and parsed["Cc"] is None
    assert without(header_block(copy), "message-id", "to", "cc") == without(header_block(raw), "message-id", "to", "cc")
    # a Bcc recipient's copy (no To on the canonical message at all) gets a To of its own
    no_to = raw.replace(b"To: zoe@example.org, Bob <bob@example.org>\r\n", b"", 1)
    assert message_from_bytes(copy_for(no_to, 2, only_to="dan@example.net"))["To"] == "dan@example.net"


def test_links_are_numbered_in_document_order_with_their_decoded_targets() -> None:
    seen: list[tuple[int, str]] = []
    copy_html = rewrite_html(
        HTML, pixel_url="p", link_url=lambda i, url: seen.append((i, url)) or f"https://t/{i}?a=1&b=2"
    )
    assert seen == list(enumerate(TARGETS))
    assert links_of(HTML) == TARGETS
    assert 'href="https://t/0?a=1&amp;b=2"' in copy_html  # what link_url gives is escaped into the attribute


def test_a_long_link_in_a_7bit_part_switches_it_to_quoted_printable() -> None:
    target = "https://jobs.example.com/" + "x" * 1200
    html = HTML.replace("Zoë", "Zoe").replace("https://calendar.example.com/book", target)
    raw = canonical("7bit", html=html)
    copy = personalise(raw, message_id="<c@x.example>", pixel_url="https://t/p.gif", link_url=lambda i, u: u + "&t=1")
    assert all(len(line) <= 998 for line in copy.split(b"\r\n"))
    part = message_from_bytes(copy, policy=policy.default).get_body(("html",))
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert f'href="{target}&amp;t=1"' in part.get_content()  # type: ignore[union-attr]


AWKWARD = [
    HTML,
    '<html><body><!-- <a href="https://hidden.example/">x</a> --><a href="https://shown.example/">y</a></body></html>',
    "<html><body><A HREF='https://single.example/?a=1&amp;b=2'>s</A><a href=https://bare.example/x>b</a></body></html>",
    '<html><body><a title="1 > 0" href="https://after-gt.example/">t</a><a name="x">no href</a></body></html>',
    '<html><head><style>a[href="https://css.example/"]{}</style><title><a href="https://t.example/"></title></head>'
    '<body><textarea><a href="https://ta.example/"></textarea><a href=" https://spaced.example/ ">p</a></body></html>',
    '<html><body><a href="https://first.example/" href="https://second.example/">dup</a>'
    '<a href="HTTPS://UPPER.example/">u</a><abbr href="https://abbr.example/">no</abbr></body></html>',
]


@pytest.mark.parametrize("html", AWKWARD)
def test_the_links_found_are_exactly_those_an_html_parser_finds(html: str) -> None:
    parsed = LexborHTMLParser(html)
    expected = [
        (a.attributes.get("href") or "").strip()
        for a in parsed.css("a[href]")
        if (a.attributes.get("href") or "").strip().lower().startswith(("http://", "https://"))
    ]
    assert links_of(html) == expected
    rewritten = rewrite_html(html, pixel_url="https://t/p.gif", link_url=lambda i, u: f"https://t/{i}")
    after = [a.attributes.get("href") for a in LexborHTMLParser(rewritten).css("a[href]")]
    assert [h for h in after if h and h.startswith("https://t/")] == [f"https://t/{i}" for i in range(len(expected))]


def test_link_count_reads_the_html_part() -> None:
    assert link_count(canonical()) == 2
    assert link_count(canonical("base64")) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"message_id": "not-an-id"}, "Message-ID"),
        ({"message_id": "<a@b>\r\nBcc: x@y"}, "Message-ID"),
        ({"message_id": "<a@b>", "only_to": "x@y\r\nBcc: z@w"}, "one address"),
    ],
)
def test_nothing_a_caller_passes_can_add_a_header_line(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        personalise(canonical(), pixel_url="p", link_url=lambda i, u: u, **kwargs)  # type: ignore[arg-type]


def test_a_message_without_html_cannot_be_tracked() -> None:
    msg = EmailMessage(policy=policy.SMTP)
    msg["Message-ID"] = MID
    msg.set_content("plain only\n")
    with pytest.raises(ValueError, match="no HTML part"):
        personalise(msg.as_bytes(), message_id="<c@x.example>", pixel_url="p", link_url=lambda i, u: u)
