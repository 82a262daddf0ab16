"""A rendered template's Markdown → the two bodies of the message: text/plain and HTML. Pure, no I/O.

The HTML: Markdown rendered by markdown-it-py in its ``js-default`` mode (raw HTML off, so
``<script>`` in the Markdown or in a value is text), sanitised with nh3 to what mail clients
show (paragraphs, links, emphasis, lists, headings, quotes, code, tables, https images; no
``javascript:`` or ``data:`` URLs; links get ``rel="noopener noreferrer"``), placed in a layout
(the built-in ``postroom/layouts/default.html`` or the organisation's own, a sandboxed Jinja2
template, see :func:`postroom.templating.render_layout`), its ``<style>`` inlined with
css-inline into ``style`` attributes, which mail clients honour. The result is one complete
document ending ``</body></html>`` with every attribute double-quoted.

The text: the same Markdown as readable text, links written ``text (url)``.

Rendering is bounded as templates are. Markdown's inline syntax is slow on some inputs
(``[[[[…``, ``![![![…``, superlinear in a paragraph's length), so nesting stops at 20 levels
(CommonMark's own default), a paragraph is parsed in pieces of at most :data:`MAX_INLINE`
characters, split after a line break (else after a space; emphasis or a link across such a
split stays as written), and parsing stops with :class:`~postroom.templating.TemplateError`
after :data:`MARKDOWN_SECONDS`. An HTML body over :data:`MAX_HTML` characters, styles inlined,
is refused too.

>>> body = render_body("Hello **Ann**, see [the role](https://jobs.example.com/1).", subject="Hi",
...                    sender_name="Bo Chen")
>>> body.text
'Hello Ann, see the role (https://jobs.example.com/1).\\n'
>>> '<a href="https://jobs.example.com/1" rel="noopener noreferrer" style=' in body.html
True
>>> body.html.endswith("</body></html>")
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import css_inline
import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

from postroom.templating import TemplateError, render_layout

__all__ = [
    "MARKDOWN_SECONDS",
    "MAX_HTML",
    "MAX_INLINE",
    "MessageBody",
    "default_layout",
    "markdown_html",
    "markdown_text",
    "render_body",
]

MAX_INLINE = 2000  # characters of a paragraph (or heading, list item, cell) parsed at once
MARKDOWN_SECONDS = 2.0
MAX_HTML = 2 * 1024 * 1024  # characters of the HTML body, in its layout, styles inlined
_DEADLINE = "postroom_deadline"  # where the parse's deadline travels, in markdown-it's env


@dataclass(frozen=True)
class MessageBody:
    """The two alternatives of a message body."""

    text: str
    html: str


_TAGS = {
    "p", "a", "strong", "em", "b", "i", "s", "del", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "code", "pre", "br", "hr", "table", "thead", "tbody", "tr", "th", "td", "img",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}


def render_body(
    markdown: str, *, subject: str, sender_name: str, layout: str | None = None, logo_url: str = ""
) -> MessageBody:
    """The text and HTML bodies of a message written in ``markdown``. ``layout``: the
    organisation's own layout (its text; ``None``: the built-in one), given ``{{ body }}``,
    ``{{ subject }}``, ``{{ sender_name }}`` and ``{{ logo_url }}``. Raises
    :class:`postroom.templating.TemplateError` (field ``layout``) for a layout that fails."""
    tokens = _parse(markdown)
    page = render_layout(
        default_layout() if layout is None else layout,
        body=_html(tokens),
        subject=subject,
        sender_name=sender_name,
        logo_url=logo_url,
    )
    _check_size(page)  # before inlining, which only adds
    html = css_inline.inline(page, load_remote_stylesheets=False, keep_at_rules=True).rstrip()
    _check_size(html)
    return MessageBody(text=_text(tokens), html=html)


def _check_size(html: str) -> None:
    if len(html) > MAX_HTML:
        raise TemplateError(
            f"The body comes out as {len(html):,} characters of HTML, more than the {MAX_HTML:,} a message may have.",
            "body",
        )


@cache
def default_layout() -> str:
    """The built-in layout: a white card on grey, the logo above the body, the sender below."""
    return files("postroom").joinpath("layouts/default.html").read_text(encoding="utf-8")


def markdown_html(markdown: str) -> str:
    """Markdown → a sanitised HTML fragment.

    >>> markdown_html("<script>alert(1)</script> [x](javascript:alert(1)) ![a](http://e.com/a.png)")
    '<p>&lt;script&gt;alert(1)&lt;/script&gt; [x](javascript:alert(1)) <img alt="a"></p>\\n'
    """
    return _html(_parse(markdown))


def _html(tokens: list[Token]) -> str:
    md = _markdown()
    return nh3.clean(
        md.renderer.render(tokens, md.options, {}),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto"},
        url_relative="deny",
        filter_style_properties={"text-align"},
        link_rel="noopener noreferrer",
    )


def markdown_text(markdown: str) -> str:
    """Markdown → readable plain text: no markup, links as ``text (url)``, lists with their
    markers, quotes with ``>``, code indented.

    >>> print(markdown_text("# Next steps\\n\\n1. Pick a *slot*\\n2. Mail <ann@example.com>\\n\\n> See you"), end="")
    Next steps
    ==========
    <BLANKLINE>
    1. Pick a slot
    2. Mail ann@example.com
    <BLANKLINE>
    > See you
    """
    return _text(_parse(markdown))


def _text(tokens: list[Token]) -> str:
    lines = _blocks(SyntaxTreeNode(tokens).children)
    return "\n".join(line.rstrip() for line in lines).strip("\n") + "\n"


def _parse(markdown: str) -> list[Token]:
    return _markdown().parse(markdown, {_DEADLINE: time.monotonic() + MARKDOWN_SECONDS})


@cache
def _markdown() -> MarkdownIt:
    # js-default: CommonMark with tables and strikethrough, raw HTML off
    md = MarkdownIt("js-default", {"maxNesting": 20})
    md.core.ruler.at("inline", _inline_in_pieces)
    return md


def _inline_in_pieces(state: StateCore) -> None:
    """markdown-it's core ``inline`` rule, parsing each block's inline text in pieces of at
    most :data:`MAX_INLINE` characters, until the deadline (module docstring)."""
    deadline = state.env.get(_DEADLINE, float("inf"))
    for token in state.tokens:
        if token.type == "inline":
            token.children = []
            for piece in _pieces(token.content):
                if time.monotonic() > deadline:
                    raise TemplateError(
                        f"The body's Markdown takes more than {MARKDOWN_SECONDS:g} seconds to render; simplify it.",
                        "body",
                    )
                state.md.inline.parse(piece, state.md, state.env, token.children)


def _pieces(text: str) -> list[str]:
    """``text`` cut after a line break, else after a space, else anywhere, into pieces of at
    most :data:`MAX_INLINE` characters.

    >>> [len(p) for p in _pieces(("word " * 300 + "\\n") * 3)]
    [1501, 1501, 1501]
    >>> [len(p) for p in _pieces("x" * 4500)]
    [2000, 2000, 500]
    """
    pieces = []
    while len(text) > MAX_INLINE:
        window = text[:MAX_INLINE]
        cut = window.rfind("\n") + 1 or window.rfind(" ") + 1 or MAX_INLINE
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text] if text else pieces


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src" and not value.lower().startswith("https://"):
        return None  # images only over https: no data: or http: (mixed content, trackers in the clear)
    return value


def _blocks(nodes: list[SyntaxTreeNode], tight: bool = False) -> list[str]:
    """Lines of a sequence of blocks, a blank line between them unless ``tight``."""
    lines: list[str] = []
    for node in nodes:
        block = _block(node)
        if lines and block and not tight:
            lines.append("")
        lines.extend(block)
    return lines


def _block(node: SyntaxTreeNode) -> list[str]:
    kind = node.type
    if kind == "paragraph":
        return _inline_text(node).split("\n")
    if kind == "heading":
        text = _inline_text(node)
        underline = {"h1": "=", "h2": "-"}.get(node.tag)
        return [text, underline * len(text)] if underline else [text]
    if kind in ("bullet_list", "ordered_list"):
        lines: list[str] = []
        for number, item in enumerate(node.children, int(node.attrs.get("start", 1))):
            marker = "- " if kind == "bullet_list" else f"{number}. "
            tight = all(child.hidden for child in item.children if child.type == "paragraph")
            body = _blocks(item.children, tight) or [""]
            if lines and not tight:
                lines.append("")
            lines.append(marker + body[0])
            lines.extend(" " * len(marker) + line if line else "" for line in body[1:])
        return lines
    if kind == "blockquote":
        return [f"> {line}" if line else ">" for line in _blocks(node.children)]
    if kind in ("fence", "code_block"):
        return ["    " + line for line in node.content.rstrip("\n").split("\n")]
    if kind == "hr":
        return ["-" * 20]
    if kind == "table":  # thead/tbody → rows → cells
        return [
            " | ".join(_inline_text(cell) for cell in row.children) for part in node.children for row in part.children
        ]
    return _blocks(node.children)


def _inline_text(block: SyntaxTreeNode) -> str:
    """The text of a paragraph, heading or table cell (its one ``inline`` child's nodes)."""
    return "".join(_inline(node) for inline in block.children for node in inline.children)


def _inline(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind in ("text", "text_special", "code_inline"):
        return node.content
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    if kind == "image":
        return node.content  # its alt text
    text = "".join(_inline(child) for child in node.children)
    if kind == "link":
        href = str(node.attrs.get("href", ""))
        return text if href in (text, f"mailto:{text}") else f"{text} ({href})"
    return text  # strong, em, s: the words without their markers
