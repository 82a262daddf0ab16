"""Taking a stored message apart for reading (postroom.message_parts): which part is the body,
how attachments are numbered and downloaded, previews, and hostile input that must not hurt."""

from __future__ import annotations

import doctest
from email.message import EmailMessage
from email.policy import SMTP

import pytest

import postroom.message_parts
from postroom.message_parts import (
    MAX_TEXT_BYTES,
    SNIPPET_LEN,
    Preview,
    attachment_data,
    download_type,
    preview,
    read_parts,
    safe_filename,
)


def test_doctests() -> None:
    assert doctest.testmod(postroom.message_parts).failed == 0


def _mail(text: str | None = "Hello", html: str | None = None) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "a@example.org"
    msg["Subject"] = "s"
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    return msg


def test_text_and_html_bodies_are_chosen_and_attachments_numbered_in_order() -> None:
    msg = _mail("Plain words", "<p>Rich words</p>")
    msg.add_attachment(b"%PDF-1.4 cv", maintype="application", subtype="pdf", filename="cv.pdf")
    msg.add_attachment("notes as a file", filename="notes.txt")
    inner = _mail("forwarded body")
    msg.add_attachment(inner)
    raw = msg.as_bytes()
    parts = read_parts(raw)
    assert parts.text == "Plain words\n" and parts.has_plain
    assert parts.html is not None and parts.html.strip() == "<p>Rich words</p>"
    assert [(a.index, a.filename, a.content_type) for a in parts.attachments] == [
        (0, "cv.pdf", "application/pdf"),
        (1, "notes.txt", "text/plain"),
        (2, None, "message/rfc822"),
    ]
    for a in parts.attachments:  # the listing's numbers are the ones that download
        got = attachment_data(raw, a.index)
        assert got is not None and got[0] == a and len(got[1]) == a.size
    assert attachment_data(raw, 0)[1] == b"%PDF-1.4 cv"  # type: ignore[index]
    assert attachment_data(raw, 3) is None and attachment_data(raw, -1) is None


def test_html_only_mail_gets_text_from_its_html() -> None:
    parts = read_parts(_mail(None, "<div>Hi <b>Ann</b></div><script>x()</script><p>Bye</p>").as_bytes())
    assert not parts.has_plain and parts.html is not None
    assert parts.text == "Hi Ann\n\nBye"


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("iso-8859-1", "Caf\xe9".encode("latin-1"), "Café"),
        ("x-unknown-charset", "Café".encode(), "Café"),  # unknown label: read as UTF-8
        ("utf-8", b"caf\xe9 broken", "caf"),  # invalid in its label: a fallback, never an error
        ('"utf-8"', "Grüße".encode(), "Grüße"),
    ],
)
def test_any_charset_decodes_without_error(charset: str, body: bytes, expected: str) -> None:
    raw = b"From: a@example.org\r\nContent-Type: text/plain; charset=" + charset.encode() + b"\r\n\r\n" + body
    assert read_parts(raw).text.startswith(expected)


def test_hostile_structure_is_survived() -> None:
    broken_name = (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name*0*=''%FF%FE; name*1*=x%\r\n"
        b"Content-Disposition: attachment; filename*=bogus''%%%\r\n\r\nDATA\r\n--b--\r\n"
    )
    parts = read_parts(broken_name)
    assert parts.text.strip() == "hi" and len(parts.attachments) == 1
    deep = b"From: a@x\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, 80):
        deep += f"--b{i - 1}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n".encode()
    read_parts(deep)  # nesting beyond MAX_DEPTH is not followed, nor does it raise
    huge = b"From: a@x\r\nContent-Type: text/plain\r\n\r\n" + b"x" * (MAX_TEXT_BYTES + 10)
    big = read_parts(huge)
    assert big.truncated and len(big.text) == MAX_TEXT_BYTES


def test_preview_is_the_first_words_and_the_attachment_count() -> None:
    msg = _mail("On Mon, Rita wrote:\n> old words\n\n" + "word " * 100)
    msg.add_attachment(b"x", maintype="image", subtype="png", filename="a.png")
    seen = preview(msg.as_bytes())
    assert seen.attachments == 1
    assert seen.snippet.startswith("word word") and seen.snippet.endswith("…") and len(seen.snippet) <= SNIPPET_LEN
    assert preview(b"\x00\x01 not mail") == Preview("", 0)


@pytest.mark.parametrize(
    ("name", "ctype", "expected"),
    [
        ("CV Ann.pdf", "application/pdf", "CV Ann.pdf"),
        ("../../../etc/passwd", "text/plain", "passwd"),
        ("C:\\Users\\x\\evil.exe", "application/x-msdownload", "evil.exe"),
        ('a"b<c>|d.txt', "text/plain", "a_b_c_d.txt"),
        ("...", "application/pdf", "attachment-3.pdf"),
        (None, "image/png", "attachment-3.png"),
        ("x" * 400 + ".docx", "application/msword", "x" * 145 + ".docx"),
        ("résumé.pdf", "application/pdf", "résumé.pdf"),
    ],
)
def test_safe_filename(name: str | None, ctype: str, expected: str) -> None:
    assert safe_filename(name, 2, ctype) == expected


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.mark.parametrize(
    ("ctype", "served"),
    [
        ("application/pdf", "application/pdf"),
        ("IMAGE/PNG; name=x", "image/png"),
        ("text/html", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("application/javascript", "application/octet-stream"),
        ("application/xhtml+xml", "application/octet-stream"),
        (DOCX, DOCX),
    ],
)
def test_download_type_is_harmless(ctype: str, served: str) -> None:
    assert download_type(ctype) == served
