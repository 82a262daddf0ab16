"""Mail HTML as the reader will see it (postroom.safe_html): what is kept, what goes, which
images are blocked or proxied, plain text made safe and linked, the frame's policy, and
work that stays bounded however a sender shapes the HTML."""

from __future__ import annotations

import doctest
import time

import pytest

import postroom.safe_html
from postroom.safe_html import (
    MAX_ATTRIBUTES,
    MAX_INPUT,
    MAX_LINKS,
    MAX_TAGS,
    SafeHtml,
    sanitize_mail_html,
    srcdoc_document,
    text_to_html,
)

REL = 'target="_blank" rel="noopener noreferrer nofollow"'

# (what, mail HTML, what the reader gets, images not shown), images blocked (proxy=None)
BLOCKED = [
    ("text", "<p>Hello <b>Ann</b></p>", "<p>Hello <b>Ann</b></p>", 0),
    ("event handler", '<p onclick="steal()" onmouseover="x">Hi</p>', "<p>Hi</p>", 0),
    ("script and its text", "<p>a<script>steal()</script>b</p>", "<p>ab</p>", 0),
    ("style element and its CSS", "<style>p{color:red}</style><p>x</p>", "<p>x</p>", 0),
    ("link", '<a href="https://jobs.example.com/1">job</a>', f'<a href="https://jobs.example.com/1" {REL}>job</a>', 0),
    ("link rel and target replaced", '<a href="http://x.test/" rel="opener" target="_self">x</a>',
     f'<a href="http://x.test/" {REL}>x</a>', 0),
    ("mailto", '<a href="mailto:ann@example.com">Ann</a>', f'<a href="mailto:ann@example.com" {REL}>Ann</a>', 0),
    ("scheme-relative link is https", '<a href="//x.test/p">x</a>', f'<a href="https://x.test/p" {REL}>x</a>', 0),
    ("relative link dropped", '<a href="/inbox">x</a><a href="#top">y</a>',
     '<a rel="noopener noreferrer nofollow" target="_blank">x</a>'
     '<a rel="noopener noreferrer nofollow" target="_blank">y</a>', 0),
    ("javascript link", '<a href="javascript:alert(1)">x</a>', f"<a {REL}>x</a>", 0),
    ("entity-split javascript", '<a href="jav&#x09;ascript:alert(1)">x</a>', f"<a {REL}>x</a>", 0),
    ("data link", '<a href="data:text/html,<script>alert(1)</script>">x</a>', f"<a {REL}>x</a>", 0),
    ("ftp link", '<a href="ftp://x.test/f">x</a>', f"<a {REL}>x</a>", 0),
    ("remote image blocked, alt kept", '<img src="https://t.example/p.gif" alt="Logo" width="10">',
     '<img width="10" alt="Logo">', 1),  # nh3 writes them in this order once src is gone
    ("plain http image blocked", '<img src="http://t.example/p.gif">', "<img>", 1),
    ("scheme-relative image blocked", '<img src="//t.example/p.gif">', "<img>", 1),
    ("cid image blocked", '<img src="cid:part1@example.com" alt="chart">', '<img alt="chart">', 1),
    ("data image dropped, not counted", '<img src="data:image/png;base64,iVBORw0K">', "<img>", 0),
    ("relative image dropped, not counted", '<img src="logo.png">', "<img>", 0),
    ("srcset and lowsrc dropped", '<img srcset="https://t.example/a.png 2x" lowsrc="https://t.example/b">', "<img>", 0),
    ("table with mail attributes", '<table width="600" cellpadding="4" background="https://t.example/bg.png">'
     '<tr><td align="left" bgcolor="#eee" colspan="2">x</td></tr></table>',
     '<table width="600" cellpadding="4"><tbody><tr><td align="left" bgcolor="#eee" colspan="2">x</td></tr>'
     "</tbody></table>", 0),
    ("font attributes", '<font color="red" face="Arial" size="2">x</font>',
     '<font color="red" face="Arial" size="2">x</font>', 0),
    ("uppercase formatting", "<B>x</B><FONT COLOR=red>y</FONT>", '<b>x</b><font color="red">y</font>', 0),
    ("misnested formatting ends with its element", "<p><b>1<i>2</b>3</i></p>", "<p><b>1<i>2</i></b>3</p>", 0),
    ("id and class dropped", '<p id="x" class="MsoNormal">x</p>', "<p>x</p>", 0),
    ("form keeps its text only", '<form action="https://x.test/"><input name="q"><button formaction="x">Go</button>'
     "</form>", "Go", 0),
    ("textarea and select go whole", "<textarea>t</textarea><select><option>o</option></select>x", "x", 0),
    ("head elements", '<base href="https://x.test/"><meta http-equiv="refresh" content="0;url=https://x.test/">'
     '<link rel="stylesheet" href="https://x.test/s.css"><title>T</title>x', "x", 0),
    ("svg and math go whole", "<svg><text>s</text></svg><math><mi>m</mi></math>x", "x", 0),
    ("frames and objects go whole", '<iframe src="https://x.test/">i</iframe><object data="x">o</object>x', "x", 0),
    ("comments go", "a<!-- secret -->b<!--[if mso]><table><![endif]-->c", "abc", 0),
    ("markup in an attribute stays text", '<p title="<b>hi</b>">x</p>', '<p title="&lt;b&gt;hi&lt;/b&gt;">x</p>', 0),
    ("markup as text stays text", "&lt;b&gt;x&lt;/b&gt;", "&lt;b&gt;x&lt;/b&gt;", 0),
]  # fmt: skip

# (what, inline style, what is kept)
STYLES = [
    ("safe properties kept", "color: red; font-weight: bold", "color:red;font-weight:bold"),
    ("colour functions", "color: rgb(1, 2, 3); background-color: hsla(0, 0%, 0%, .5)",
     "color:rgb(1, 2, 3);background-color:hsla(0, 0%, 0%, 0.5)"),
    ("url() removed", "color: red; background-color: red; background: url(https://t.example/bg.png)",
     "color:red;background-color:red"),
    ("background-image is no property of ours", "background-image: linear-gradient(red, blue)", None),
    ("image-set removed", "background: image-set('https://t.example/a.png' 1x)", None),
    ("expression removed", "width: expression(alert(1)); color: blue", "color:blue"),
    ("escapes removed", "color: red; width: \\75 rl(x)", "color:red"),
    ("@import removed", "@import 'https://x.test/a.css'; color: red", "color:red"),
    ("behavior and -moz-binding", "behavior: url(x.htc); -moz-binding: url(x.xml#y)", None),
    ("position removed", "position: fixed; top: 0", None),
    ("comments removed", "color: red; width: 1px/**/", "color:red"),
    ("unbalanced quote", "font-family: 'Arial; color: red", "color:red"),
    ("quoted font names", "font-family: 'Segoe UI', Arial", "font-family:&quot;Segoe UI&quot; , Arial"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "html", "expected", "blocked"), BLOCKED, ids=[c[0] for c in BLOCKED])
def test_sanitize_with_images_blocked(what: str, html: str, expected: str, blocked: int) -> None:
    assert sanitize_mail_html(html, proxy=None) == SafeHtml(expected, blocked)


@pytest.mark.parametrize(("what", "style", "kept"), STYLES, ids=[c[0] for c in STYLES])
def test_inline_style(what: str, style: str, kept: str | None) -> None:
    html = sanitize_mail_html(f'<span style="{style}">x</span>', proxy=None).html
    assert html == (f'<span style="{kept}">x</span>' if kept else "<span>x</span>")


def test_images_through_the_proxy() -> None:
    asked: list[str] = []

    def proxy(url: str) -> str:
        asked.append(url)
        return f"/img/sig{len(asked)}?u=x"

    safe = sanitize_mail_html(
        '<img src="https://t.example/a.png" alt="a"><img src="//t.example/b.png"><img src="HTTP://t.example/c">'
        '<img src="cid:part1"><img src="data:image/gif;base64,R0lG">',
        proxy=proxy,
    )
    assert asked == ["https://t.example/a.png", "https://t.example/b.png", "HTTP://t.example/c"]
    assert safe.html == '<img src="/img/sig1?u=x" alt="a"><img src="/img/sig2?u=x"><img src="/img/sig3?u=x"><img><img>'
    assert safe.blocked_images == 1  # the cid: image


def test_a_relative_image_path_is_not_taken_for_the_proxys() -> None:
    safe = sanitize_mail_html('<img src="/img/forged?u=x"><img src="https://t.example/a">', proxy=lambda u: "/img/s")
    assert safe.html == '<img><img src="/img/s">'


def test_a_failing_proxy_raises() -> None:
    def proxy(url: str) -> str:
        raise RuntimeError("no key")

    with pytest.raises(RuntimeError, match="no key"):
        sanitize_mail_html('<img src="https://t.example/a.png">', proxy=proxy)


# --------------------------------------------------------------------------------- bounded work

PATHOLOGICAL = {
    # formatting elements left open are re-created in every later block: 260 KB used to become 280 MB
    "formatting reconstruction": "<div>" + "".join(f"<b id={i}>" for i in range(2000)) + "</div>"
    + "<div>x</div>" * 20000,
    "formatting in tables": "".join(f"<b id={i}><table>" for i in range(20000)) + "x",
    "deep nesting": "<div>" * 1_000_000,
    "deep nesting, unmatched end tags": "<span>" * 5000 + "</x>" * 5000,
    "one tag, many attributes": "<p " + " ".join(f"a{i}" for i in range(700_000)) + ">x",
    "attributes between long values": "<p " + "".join(
        " ".join(f"a{j}_{i}" for i in range(99)) + f' v{j}="' + "x" * 16400 + '"' for j in range(300)) + ">x",
    "tag-like text in an open attribute": '<a x="' + "<b" * 2_500_000,
}  # fmt: skip


@pytest.mark.parametrize("html", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_work_stays_bounded(html: str) -> None:
    start = time.perf_counter()
    safe = sanitize_mail_html(html, proxy=None)
    assert time.perf_counter() - start < 3  # about a second at worst on a laptop
    assert len(safe.html) <= 2 * min(len(html), MAX_INPUT)


def test_input_past_the_limit_is_cut_off() -> None:
    html = "<p>" + "a" * MAX_INPUT + "TAIL</p>"
    assert "TAIL" not in sanitize_mail_html(html, proxy=None).html


def test_tags_past_the_limit_become_text() -> None:
    html = "<p>x</p>" * (MAX_TAGS // 2) + "<p><b>tail</b></p>"
    out = sanitize_mail_html(html, proxy=None).html
    assert out.endswith("<p>x</p>  tail  ")


def test_a_tag_with_too_many_attributes_loses_them() -> None:
    crowded = "<p " + " ".join(f"a{i}" for i in range(MAX_ATTRIBUTES + 5)) + ">x</p><b>y</b>"
    out = sanitize_mail_html(crowded, proxy=None).html
    assert out.startswith("  a100 a101") and out.endswith(" a104&gt;x<p></p><b>y</b>")  # text now
    normal = '<p title="t" dir="ltr" ' + " ".join(f"a{i}" for i in range(MAX_ATTRIBUTES - 3)) + ">x</p>"
    assert sanitize_mail_html(normal, proxy=None).html == '<p title="t" dir="ltr">x</p>'


def test_a_long_attribute_value_is_no_crowd() -> None:
    image = '<img alt="' + "a b " * 10_000 + '" src="https://t.example/a.png">'
    assert sanitize_mail_html(image, proxy=lambda u: "/img/s").html.endswith('" src="/img/s">')


# --------------------------------------------------------------------------------- plain text

TEXTS = [
    ("escaped", "<script>alert(1)</script> & \"q\"", "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;"),
    ("line breaks kept", "a\r\nb\n\nc", "a\nb\n\nc"),
    ("https link", "see https://jobs.example.com/1.", f'see <a href="https://jobs.example.com/1" {REL}>'
     "https://jobs.example.com/1</a>."),
    ("bare www", "www.example.com", f'<a href="http://www.example.com" {REL}>www.example.com</a>'),
    ("address", "mail ann@example.com", f'mail <a href="mailto:ann@example.com" {REL}>ann@example.com</a>'),
    ("query escaped", "http://x.test/?a=1&b=2", f'<a href="http://x.test/?a=1&amp;b=2" {REL}>http://x.test/?a=1&amp;b=2</a>'),
    ("javascript not linked", "javascript:alert(1)", "javascript:alert(1)"),
    ("ftp not linked", "ftp://files.example.com/cv.pdf", "ftp://files.example.com/cv.pdf"),
    ("markup after a link", "http://x.test/<b>", f'<a href="http://x.test/" {REL}>http://x.test/</a>&lt;b&gt;'),
]  # fmt: skip


@pytest.mark.parametrize(("what", "text", "body"), TEXTS, ids=[c[0] for c in TEXTS])
def test_text_to_html(what: str, text: str, body: str) -> None:
    assert text_to_html(text) == f'<pre class="plain-text">{body}</pre>'


def test_text_links_are_bounded() -> None:
    html = text_to_html("https://x.test/ " * (MAX_LINKS + 10))
    assert html.count("<a ") == MAX_LINKS


# --------------------------------------------------------------------------------- the frame


def test_srcdoc_document_forbids_scripts_and_foreign_images() -> None:
    doc = srcdoc_document("<p>Hi</p>", allow_images_from=None)
    assert doc.startswith("<!DOCTYPE html>") and "<body><p>Hi</p></body>" in doc
    policy = doc.split('http-equiv="Content-Security-Policy" content="')[1].split('"')[0]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives == {
        "default-src": "'none'",
        "script-src": "'none'",
        "style-src": "'unsafe-inline'",
        "img-src": "'none'",
        "font-src": "'none'",
        "form-action": "'none'",
        "base-uri": "'none'",
    }
    assert doc.index("Content-Security-Policy") < doc.index("<style>") < doc.index("<body>")


def test_srcdoc_document_allows_the_proxy() -> None:
    doc = srcdoc_document("", allow_images_from="https://postroom.example.com/img/")
    assert "img-src https://postroom.example.com/img/;" in doc


@pytest.mark.parametrize(
    "source", ["'self'", "*", "https://x.test/img/; script-src *", "javascript:x", "https://x.test/a b", "/img/"]
)
def test_srcdoc_document_refuses_a_source_that_is_no_url_prefix(source: str) -> None:
    with pytest.raises(ValueError, match="allow_images_from"):
        srcdoc_document("", allow_images_from=source)


def test_doctests() -> None:
    assert doctest.testmod(postroom.safe_html).failed == 0
