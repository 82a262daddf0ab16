"""A rendered template's Markdown as the recipient sees it: HTML without scripts or dangerous
links, values shown as text, the layout's CSS in style attributes, and a plain-text alternative
a person can read."""

from __future__ import annotations

import doctest
import re

import pytest

import postroom.rendering
from postroom.rendering import markdown_html, markdown_text, render_body
from postroom.templating import TemplateError, render_template, template_context


def body(markdown: str, **kwargs: str) -> postroom.rendering.MessageBody:
    kwargs.setdefault("subject", "Your interview")
    kwargs.setdefault("sender_name", "Bo Chen")
    return render_body(markdown, **kwargs)  # type: ignore[arg-type]


def test_doctests() -> None:
    assert doctest.testmod(postroom.rendering).failed == 0


@pytest.mark.parametrize(
    "markdown",
    [
        "<script>alert(1)</script>",
        "Hi <script>alert(1)</script> there",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src='https://evil.example'></iframe>",
        "<style>body{display:none}</style>",
        "<!-- comment --><b onclick='x()'>b</b>",
    ],
)
def test_raw_html_in_the_markdown_is_text(markdown: str) -> None:
    html = body(markdown).html
    content = html.split('<div class="content"', 1)[1]
    assert not re.search(r"<(script|img|iframe|style|b)\b", content), content
    assert "&lt;" in content  # shown, escaped, as the characters it was written with


@pytest.mark.parametrize(
    "markdown",
    [
        "[apply](javascript:alert(1))",
        "[apply](JaVaScRiPt:alert(1))",
        "[apply](vbscript:msgbox(1))",
        "[apply](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "<javascript:alert(1)>",
        "[apply](/relative/path)",
    ],
)
def test_dangerous_or_relative_links_do_not_become_links(markdown: str) -> None:
    fragment = markdown_html(markdown)
    assert "href" not in fragment, fragment


@pytest.mark.parametrize(
    ("markdown", "src"),
    [
        ("![logo](https://cdn.example.com/logo.png)", "https://cdn.example.com/logo.png"),
        ("![logo](http://cdn.example.com/logo.png)", None),  # images over https only
        ("![x](data:image/png;base64,iVBORw0KGgo=)", None),
    ],
)
def test_images_only_over_https(markdown: str, src: str | None) -> None:
    fragment = markdown_html(markdown)
    found = re.search(r'<img[^>]*\ssrc="([^"]*)"', fragment)
    assert (found.group(1) if found else None) == src
    assert 'alt="' in fragment


def test_data_values_are_escaped_in_the_html() -> None:
    data = {
        "name": "<script>alert('x')</script>",
        "role": '<img src=x onerror="alert(1)">',
        "note": "Tom & Jerry <b>bold</b>",
    }
    ctx = template_context(data, sender={"name": "Bo", "email": "bo@example.com"})
    rendered = render_template("Hi {{ name }}", "Dear {{ name }},\n\nRole: {{ role }}\n\n{{ note }}", ctx)
    result = render_body(rendered.markdown, subject=rendered.subject, sender_name="Bo")
    assert "<script" not in result.html and "<img" not in result.html and "<b>" not in result.html
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in result.html
    assert "Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;" in result.html
    assert "<title>Hi &lt;script&gt;alert('x')&lt;/script&gt;</title>" in result.html  # the subject, in the layout
    assert "Dear <script>alert('x')</script>," in result.text  # plain text shows the value as it is


def test_links_are_double_quoted_with_rel_noopener() -> None:
    html = body('See [the role](<https://jobs.example.com/r?a=1&b="2">) and <https://example.com/x>.').html
    anchors = re.findall(r"<a\s[^>]*>", html)
    assert len(anchors) == 2
    for anchor in anchors:
        assert re.search(r'\shref="https://[^"]+"', anchor), anchor
        assert 'rel="noopener noreferrer"' in anchor
    assert 'href="https://jobs.example.com/r?a=1&amp;b=%222%22"' in html  # a quote in a URL cannot end the value


def test_the_html_is_one_document_in_the_default_layout_with_css_inlined() -> None:
    html = body("# Welcome\n\nHello **Ann**.", logo_url="https://cdn.example.com/logo.png").html
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</body></html>")
    assert html.count("</body>") == 1
    assert '<meta charset="utf-8">' in html
    assert re.search(r'<h1 style="[^"]*font-size: 24px[^"]*">Welcome</h1>', html)
    assert re.search(r'<p style="[^"]*margin: 0 0 16px 0[^"]*">Hello <strong>Ann</strong>.</p>', html)
    assert re.search(r'<body style="[^"]*background-color: #f4f5f7', html)
    assert re.search(r'<img class="logo" alt="Bo Chen" src="https://cdn.example.com/logo.png" style="', html)
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style is not None and style.group(1).strip().startswith("@media")  # only what cannot be inlined
    assert "<title>Your interview</title>" in html


def test_no_logo_when_none_is_set() -> None:
    assert "<img" not in body("Hello").html


def test_an_organisations_own_layout_is_used_and_its_css_inlined() -> None:
    layout = (
        "<html><head><style>p { color: #123456; } .brand { font-weight: bold; }</style>"
        '<link rel="stylesheet" href="https://unreachable.invalid/brand.css"></head>'
        '<body><div class="brand">ACME Recruiting — {{ sender_name }}</div>{{ body }}'
        "<footer>{{ subject }}</footer></body></html>"
    )
    result = body("Hello <you>", layout=layout, subject="Re: <b>", sender_name="Bo & Co")
    assert '<div class="brand" style="font-weight: bold;">ACME Recruiting — Bo &amp; Co</div>' in result.html
    assert '<p style="color: #123456;">Hello &lt;you&gt;</p>' in result.html
    assert "<footer>Re: &lt;b&gt;</footer>" in result.html
    assert "unreachable.invalid" not in result.html  # remote stylesheets are neither fetched nor kept
    assert result.html.endswith("</body></html>")


@pytest.mark.parametrize(
    ("layout", "says"),
    [
        ("<html><body>no body here</body></html>", "The layout must place the message with {{ body }}."),
        ("<html>\n<body>{{ body }</body></html>", "The layout has a syntax error on line 2"),
        ("<html><body>{{ body }}{{ company }}</body></html>", "The layout uses {{ company }}, which the data"),
        ("<html><body>{{ body }}{{ ''.__class__ }}</body></html>", "is unsafe"),
    ],
)
def test_a_broken_layout_is_an_error_naming_the_layout(layout: str, says: str) -> None:
    with pytest.raises(TemplateError) as caught:
        body("Hi", layout=layout)
    assert caught.value.field == "layout"
    assert says in str(caught.value)


def test_utf8_everywhere() -> None:
    result = body("Grüße, Zoë — 面接の日程 🎉", subject="Ünïcödé", sender_name="Jürgen")
    assert "Grüße, Zoë — 面接の日程 🎉" in result.text
    assert "Grüße, Zoë — 面接の日程 🎉" in result.html and "<title>Ünïcödé</title>" in result.html


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("Hello **Ann**, _welcome_ and ~~not~~ this.", "Hello Ann, welcome and not this.\n"),
        ("See [the role](https://jobs.example.com/1).", "See the role (https://jobs.example.com/1).\n"),
        ("Mail <ann@example.com> or visit <https://example.com>.", "Mail ann@example.com or visit https://example.com.\n"),
        ("# Interview\n\nText", "Interview\n=========\n\nText\n"),
        ("## Where\n\n### When", "Where\n-----\n\nWhen\n"),
        ("- one\n- two\n  - nested", "- one\n- two\n  - nested\n"),
        ("3. three\n4. four", "3. three\n4. four\n"),
        ("> quoted\n> more", "> quoted\n> more\n"),
        ("```\ncode <x>\n```", "    code <x>\n"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a | b\n1 | 2\n"),
        ("line one  \nline two", "line one\nline two\n"),
        ("Tom &amp; Jerry \\*not emphasis\\*", "Tom & Jerry *not emphasis*\n"),
        ("a\n\n---\n\nb", "a\n\n--------------------\n\nb\n"),
        ("<script>alert(1)</script>", "<script>alert(1)</script>\n"),
        ("![Our office](https://cdn.example.com/o.png)", "Our office\n"),
        ("", "\n"),
    ],
)  # fmt: skip
def test_the_text_part_is_readable(markdown: str, text: str) -> None:
    assert markdown_text(markdown) == text
    assert body(markdown).text == text


def test_a_long_paragraph_is_parsed_in_pieces_and_keeps_its_links() -> None:
    line = "word " * 290 + "[role {n}](https://jobs.example.com/{n}) end\n"
    paragraph = "".join(line.format(n=n) for n in range(4))
    assert len(paragraph) > 2 * postroom.rendering.MAX_INLINE
    html = markdown_html(paragraph)
    assert [f"https://jobs.example.com/{n}" for n in range(4)] == re.findall(r'href="([^"]+)"', html)
    assert html.count("<p>") == 1
    assert "role 3 (https://jobs.example.com/3) end" in markdown_text(paragraph)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("markdown", ["[" * 262_144, "![" * 131_072])
def test_markdown_that_is_slow_to_parse_is_bounded(markdown: str) -> None:
    """Inputs on which Markdown parsers take quadratic time (minutes, unbounded) are refused,
    or rendered, within seconds."""
    try:
        result = body(markdown)
    except TemplateError as exc:
        assert exc.field == "body"
        assert "takes more than 2 seconds" in str(exc) or "characters of HTML" in str(exc)
    else:
        assert result.html.endswith("</body></html>")


def test_the_markdown_deadline_stops_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postroom.rendering, "MARKDOWN_SECONDS", -1.0)
    with pytest.raises(TemplateError) as caught:
        body("Hello")
    assert (caught.value.field, str(caught.value)) == (
        "body",
        "The body's Markdown takes more than -1 seconds to render; simplify it.",
    )


def test_an_html_body_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(body("Hello").html) > 500
    monkeypatch.setattr(postroom.rendering, "MAX_HTML", 500)
    with pytest.raises(TemplateError) as caught:
        body("Hello")
    assert caught.value.field == "body"
    assert "characters of HTML, more than the 500 a message may have" in str(caught.value)
