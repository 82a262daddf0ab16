"""Untrusted mail bodies → HTML that is safe to show in the web app. Pure, no I/O.

Mail comes from strangers, so its HTML is hostile until shown otherwise. Three layers:

1. :func:`sanitize_mail_html` cleans it with nh3 (html5ever's parser, ammonia's rules) on an
   explicit allow-list. Its output is the result; the one edit after it renames tags (below).

   * Elements: text structure and tables as mail clients show them (:data:`TAGS`). Scripts,
     styles, ``<title>``, ``<noscript>``, ``<template>``, frames, objects, form fields, media,
     SVG and MathML go *with* their content (so no foreign content, where mutation XSS lives);
     any other element (forms, buttons, ``<base>``, ``<meta>``, ``<link>``) goes, its text kept.
   * Attributes: per element (:data:`ATTRIBUTES`); never event handlers, ``id``, ``class``,
     ``srcset``, ``background``, ``poster``, ``action`` or ``formaction``.
   * URLs: links only http, https and mailto (``//host`` read as https, other relative links
     dropped), each with ``target="_blank"`` and ``rel="noopener noreferrer nofollow"``. Images
     only http and https: with a ``proxy`` each source becomes ``proxy(url)`` (a signed path of
     :mod:`postroom.image_proxy`); without one the ``src`` goes and the ``<img>`` stays as its
     ``alt`` text, which the frame's stylesheet marks (and hides if it has none: pixels,
     spacers). ``cid:`` images are blocked so too. :attr:`SafeHtml.blocked_images` counts them,
     for a "show images" button.
   * ``<style>`` elements go whole: CSS has escapes, comments and strings (``u\\72l(``,
     ``image-set("…")``) that a text filter can miss, and mail meant for Gmail inlines its CSS
     anyway. Inline ``style`` keeps declarations of :data:`STYLE_PROPERTIES` whose value is
     words, numbers, colours, ``rgb()``/``hsl()``/``calc()`` (no other bracket, no ``\\``,
     ``*``, ``@`` or ``:``), so no ``url(``, ``expression(``, ``@import`` or escape; nh3 then
     filters the properties again.
   * Work is bounded. Input past :data:`MAX_INPUT` characters is cut off. HTML's parser is
     superlinear on some inputs and nh3 cannot be stopped midway, so :func:`_bounded` prepares
     the input: formatting elements (``<b>``, ``<font>``…) left open are re-created in every
     later block (a 260 KB mail became 280 MB in 44 s), so they are parsed under a neutral
     name (``<x-postroom-b>``, an ordinary element) and renamed back in nh3's output, where a
     literal ``<`` only ever opens a tag (misnested formatting then ends with its element);
     tags past :data:`MAX_TAGS` (each costs time in proportion to the depth of open elements)
     and tags with :data:`MAX_ATTRIBUTES` attributes (html5ever compares each with the tag's
     earlier ones) become a space, their text kept. The worst case is about a second.

2. :func:`srcdoc_document` wraps the result in a document for ``<iframe sandbox srcdoc>``
   whose Content-Security-Policy forbids scripts, forms, ``<base>``, fonts, frames and every
   image but the proxy's.

3. The page puts it in an iframe whose ``sandbox`` has no ``allow-scripts``, ``allow-forms`` or
   ``allow-same-origin`` (links need ``allow-popups`` and ``allow-popups-to-escape-sandbox``).

:func:`text_to_html` shows a text/plain body the same way: escaped, its http(s) and mailto
links made links.

>>> sanitize_mail_html('<p onclick="x()">Hi <img src="https://t.example/p.gif" alt="logo"></p>', proxy=None)
SafeHtml(html='<p>Hi <img alt="logo"></p>', blocked_images=1)
>>> sanitize_mail_html('<img src="https://t.example/p.gif">', proxy=lambda url: "/img/sig?u=x").html
'<img src="/img/sig?u=x">'
>>> print(text_to_html("See https://jobs.example.com/1 <now>"))  # doctest: +NORMALIZE_WHITESPACE
<pre class="plain-text">See <a href="https://jobs.example.com/1" target="_blank"
    rel="noopener noreferrer nofollow">https://jobs.example.com/1</a> &lt;now&gt;</pre>
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import nh3
from linkify_it import LinkifyIt

__all__ = [
    "ATTRIBUTES",
    "MAX_ATTRIBUTES",
    "MAX_INPUT",
    "MAX_LINKIFY",
    "MAX_LINKS",
    "MAX_TAGS",
    "STYLE_PROPERTIES",
    "TAGS",
    "SafeHtml",
    "sanitize_mail_html",
    "srcdoc_document",
    "text_to_html",
]

MAX_INPUT = 5 * 1024 * 1024  # characters of a body sanitised; the rest is cut off
MAX_LINKIFY = 256 * 1024  # characters of a text body searched for links (linkify is pure Python)
MAX_LINKS = 2000  # links made in one text body
MAX_TAGS = 10_000  # tags parsed as tags; worst case about half a second (tests/core/test_safe_html.py)
MAX_ATTRIBUTES = 100  # attributes of one tag, looked for within TAG_WINDOW characters of its start
TAG_WINDOW = 16 * 1024
LINK_REL = "noopener noreferrer nofollow"


@dataclass(frozen=True)
class SafeHtml:
    """Sanitised HTML and the number of images it does not show (blocked, or ``cid:``)."""

    html: str
    blocked_images: int


TAGS = frozenset({
    "a", "abbr", "acronym", "address", "article", "aside", "b", "bdi", "bdo", "big", "blockquote", "br",
    "caption", "center", "cite", "code", "col", "colgroup", "data", "dd", "del", "details", "dfn", "div",
    "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hgroup", "hr", "i", "img", "ins", "kbd", "li", "main", "mark", "nav", "ol", "p", "pre", "q", "rp", "rt",
    "ruby", "s", "samp", "section", "small", "span", "strike", "strong", "sub", "summary", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
})  # fmt: skip
# dropped together with everything inside them
_DROP_WITH_CONTENT = frozenset({
    "script", "style", "title", "noscript", "template", "textarea", "select", "iframe", "frame", "frameset",
    "noframes", "noembed", "object", "applet", "svg", "math", "xmp", "plaintext", "video", "audio", "canvas",
})  # fmt: skip
_CELL = {"width", "height", "colspan", "rowspan", "valign", "bgcolor", "nowrap", "scope"}
ATTRIBUTES: dict[str, set[str]] = {
    "*": {"title", "dir", "lang", "align", "style"}, "a": {"href"},
    "img": {"src", "alt", "width", "height", "border", "hspace", "vspace"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"}, "tr": {"height", "valign", "bgcolor"},
    "td": _CELL, "th": _CELL, "col": {"span", "width", "valign"}, "colgroup": {"span", "width", "valign"},
    "font": {"color", "face", "size"}, "hr": {"size", "width", "noshade", "color"},
    "ol": {"start", "type", "reversed"}, "ul": {"type"}, "li": {"value", "type"},
    "time": {"datetime"}, "data": {"value"}, "details": {"open"},
}  # fmt: skip
# HTML's formatting elements (but <a>, which never piles up: a new <a> closes the last one)
_FORMATTING = "b|big|code|em|font|i|nobr|s|small|strike|strong|tt|u"
_NEUTRAL = "x-postroom-"
_TO_NEUTRAL = re.compile(rf"<(/?)({_FORMATTING})(?=[\t\n\f\r />])", re.IGNORECASE | re.ASCII)
_FROM_NEUTRAL = re.compile(rf"(<|&lt;)(/?){_NEUTRAL}({_FORMATTING})(?=[\t\n\f\r />&]|$)", re.IGNORECASE | re.ASCII)
_TAG_START = re.compile(r"</?[A-Za-z]")  # every tag starts so (and some text that is no tag)
_TAG = re.compile(r"</?[A-Za-z][^>]*>?")
_WS = r"[\t\n\f\r ]"
_ATTRIBUTE = (  # as HTML's tokenizer reads one: a name, then "=" and a value (unfinished: no match)
    rf"[^\t\n\f\r />][^\t\n\f\r />=]*+"
    rf"(?:{_WS}*+={_WS}*+(?:\"[^\"]*+\"|'[^']*+'|(?![\"'])[^\t\n\f\r >]*+)|(?!{_WS}*+=))"
)
_CROWDED_TAG = re.compile(rf"</?[A-Za-z][^\t\n\f\r />]*+(?:[\t\n\f\r /]*+{_ATTRIBUTE}){{{MAX_ATTRIBUTES}}}")
_NH3_TAGS = {_NEUTRAL + t if t in _FORMATTING.split("|") else t for t in TAGS}  # as nh3 sees them
_NH3_ATTRIBUTES = {(_NEUTRAL + t if t in _FORMATTING.split("|") else t): a for t, a in ATTRIBUTES.items()}
# nothing that takes an image or URL: no background(-image), list-style, cursor, content, filter
STYLE_PROPERTIES = frozenset({
    "color", "background-color", "opacity",
    "font", "font-family", "font-size", "font-style", "font-weight", "font-variant", "line-height",
    "letter-spacing", "word-spacing", "text-align", "text-decoration", "text-indent", "text-transform",
    "white-space", "word-break", "word-wrap", "overflow-wrap", "vertical-align", "direction",
    "width", "height", "min-width", "max-width", "min-height", "max-height",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
    "border-width", "border-radius", "border-collapse", "border-spacing",
    "display", "float", "clear", "overflow", "table-layout", "caption-side", "empty-cells",
    "list-style-type", "list-style-position",
})  # fmt: skip
_SAFE_FUNCTION = re.compile(r"(?<![\w-])(?:rgba?|hsla?|calc)\(([^()]*)\)", re.IGNORECASE)
_SAFE_VALUE = re.compile(r"[\w\s#%.,!+\-'\"/]*")  # after the safe functions' brackets are taken away


def _safe_style(style: str) -> str | None:
    """The declarations of an inline ``style`` that are safe to keep, or None if none is.

    >>> _safe_style("color: red; background: url(http://x/); width: 1px\\\\9; font-family: 'Segoe UI'")
    "color: red; font-family: 'Segoe UI'"
    """
    kept = []
    for declaration in style.split(";"):
        name, colon, value = declaration.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or name not in STYLE_PROPERTIES or not value:
            continue
        if value.count('"') % 2 or value.count("'") % 2 or "/*" in value:
            continue
        if _SAFE_VALUE.fullmatch(_SAFE_FUNCTION.sub(r"\1", value)):
            kept.append(f"{name}: {value}")
    return "; ".join(kept) or None


def _absolute(url: str) -> tuple[str, str]:
    """``url`` with ``//host`` read as https, and its scheme in lower case ("" if relative)."""
    url = url.strip()
    if url.startswith("//"):
        url = "https:" + url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host
        return url, ""
    if parts.scheme in ("http", "https") and not parts.hostname:
        return url, ""
    return url, parts.scheme.lower()


def _bounded(html: str) -> str:
    """``html`` cut to :data:`MAX_INPUT` characters, tags past the first :data:`MAX_TAGS` and
    tags with :data:`MAX_ATTRIBUTES` attributes replaced by a space (their text kept), and
    formatting elements renamed neutral: the module docstring says why."""
    html = html[:MAX_INPUT]
    pieces, done = [], 0
    for n, match in enumerate(_TAG_START.finditer(html)):
        start = match.start()
        if start < done:
            continue
        if n == MAX_TAGS:  # what is left holds no "<" + letter: no tag the parser could open
            pieces += [html[done:start], _TAG.sub(" ", html[start:])]
            done = len(html)
            break
        crowded = _CROWDED_TAG.match(html, start, start + TAG_WINDOW)
        if crowded:  # the rest of its attributes are text now
            pieces += [html[done:start], " "]
            done = crowded.end()
    pieces.append(html[done:])
    return _TO_NEUTRAL.sub(rf"<\1{_NEUTRAL}\2", "".join(pieces))


def _restored(html: str) -> str:
    """``<x-postroom-b>`` (a tag, or text ``&lt;x-postroom-b``) back to ``<b>``."""
    return _FROM_NEUTRAL.sub(r"\1\2\3", html)


def sanitize_mail_html(html: str, *, proxy: Callable[[str], str] | None) -> SafeHtml:
    """``html`` (a mail body) sanitised as the module docstring says; images through ``proxy``
    when given (it maps an http(s) URL to the URL to show instead), else blocked."""
    proxied: set[str] = set()  # the proxy's answers (relative paths nh3 would otherwise drop)
    blocked = 0
    failures: list[BaseException] = []

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal blocked
        value = _restored(value)
        if name == "style":
            return _safe_style(value)
        if tag == "a" and name == "href":
            url, scheme = _absolute(value)
            return url if scheme in ("http", "https", "mailto") else None
        if tag == "img" and name == "src":
            url, scheme = _absolute(value)
            if scheme in ("http", "https") and proxy is not None:
                try:
                    shown = proxy(url)
                except Exception as exc:  # nh3 would swallow it; raised below instead
                    failures.append(exc)
                    return None
                proxied.add(shown)
                return shown
            if scheme in ("http", "https", "cid"):
                blocked += 1
            return None
        return value

    clean = nh3.clean(
        _bounded(html),
        tags=_NH3_TAGS,
        clean_content_tags=set(_DROP_WITH_CONTENT),
        attributes=_NH3_ATTRIBUTES,
        attribute_filter=attribute,
        strip_comments=True,
        link_rel=LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes={"http", "https", "mailto", "cid"},
        filter_style_properties=set(STYLE_PROPERTIES),
        url_relative=lambda url: url if url in proxied else None,
    )
    if failures:
        raise failures[0]
    return SafeHtml(_restored(clean), blocked)


_linkify = LinkifyIt()


def text_to_html(text: str) -> str:
    """A text/plain body as HTML: escaped, line breaks kept (in a ``<pre class="plain-text">``
    that wraps long lines), http(s) and mailto links made links with the same ``rel`` and
    ``target`` as :func:`sanitize_mail_html` gives them. Links are looked for in the first
    :data:`MAX_LINKIFY` characters only, at most :data:`MAX_LINKS` of them (linkify is slow on
    long runs of dotted words); text beyond :data:`MAX_INPUT` is cut off."""
    text = text[:MAX_INPUT].replace("\r\n", "\n")
    out: list[str] = []
    done = links = 0
    for match in _linkify.match(text[:MAX_LINKIFY]) or ():
        url, scheme = _absolute(match.url)
        if scheme not in ("http", "https", "mailto") or match.index < done:
            continue
        if links == MAX_LINKS:
            break
        links += 1
        out.append(html_lib.escape(text[done : match.index]))
        anchor = html_lib.escape(text[match.index : match.last_index])
        out.append(f'<a href="{html_lib.escape(url)}" target="_blank" rel="{LINK_REL}">{anchor}</a>')
        done = match.last_index
    out.append(html_lib.escape(text[done:]))
    return '<pre class="plain-text">' + "".join(out) + "</pre>"


_SOURCE = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?")
STYLESHEET = """\
html { color-scheme: light; }
body { margin: 8px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       overflow-wrap: break-word; }
img { max-width: 100%; height: auto; }
img:not([src]) { display: inline-block; min-width: 1.5em; min-height: 1em; padding: 0 .2em;
                 border: 1px dashed #8c959f; color: #57606a; font-size: 12px; }
img:not([src]):not([alt]), img:not([src])[alt=""] { display: none; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
pre.plain-text { margin: 0; font: inherit; }
blockquote { margin: 0 0 0 .8ex; padding-left: 1ex; border-left: 2px solid #d0d7de; }
table { max-width: 100%; }
a { color: #0969da; }
"""


def srcdoc_document(body_html: str, *, allow_images_from: str | None) -> str:
    """A whole HTML document around ``body_html`` (the output of :func:`sanitize_mail_html` or
    :func:`text_to_html`) for ``<iframe sandbox srcdoc="…">`` (the template escapes it into the
    attribute). Its Content-Security-Policy allows no script, form, ``<base>``, font, frame or
    fetch, inline styles only, and images only from ``allow_images_from``: the proxy's absolute
    URL prefix (``https://postroom.example.com/img/``; a CSP source cannot be a bare path), or
    None for no images at all. Relative proxy paths in the body resolve against the page that
    holds the iframe, as an ``about:srcdoc`` document's URLs do."""
    if allow_images_from is None:
        images = "'none'"
    elif _SOURCE.fullmatch(allow_images_from):
        images = allow_images_from
    else:
        raise ValueError(f"allow_images_from must be an http(s) URL prefix, not {allow_images_from!r}.")
    policy = (
        f"default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src {images}; "
        "font-src 'none'; form-action 'none'; base-uri 'none'"
    )
    return (
        "<!DOCTYPE html>\n<html><head>"
        '<meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="referrer" content="no-referrer">'
        f"<style>\n{STYLESHEET}</style></head>\n<body>{body_html}</body></html>\n"
    )
