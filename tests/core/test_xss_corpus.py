"""Every vector of the XSS corpus (tests/data/xss/vectors.html), sanitised, checked on the output:
the output is parsed as a browser parses it (lexbor, through selectolax) and nothing in it may
run script, load anything or reach a form; a second pass changes nothing (no mutation left)."""

from __future__ import annotations

import re

import pytest
from selectolax.lexbor import LexborHTMLParser, LexborNode

from postroom.safe_html import sanitize_mail_html
from tests.xss_corpus import load_vectors

PORT = 8999
VECTORS = load_vectors(PORT)
FORBIDDEN_TAGS = ("script", "base", "meta", "link", "form", "iframe", "object", "embed", "svg", "math", "style")
_CONTROL = re.compile(r"[\x00-\x20]+")


def _elements(html: str) -> list[LexborNode]:
    body = LexborHTMLParser(f"<!DOCTYPE html><html><body>{html}</body></html>").body
    assert body is not None
    return [node for node in body.traverse() if node.tag not in ("-text", "-comment", "body")]


def _shape(html: str) -> list[tuple[str, object]]:
    """The tree a browser builds from ``html``: each node's tag and attributes, or its text."""
    body = LexborHTMLParser(f"<!DOCTYPE html><html><body>{html}</body></html>").body
    assert body is not None
    return [
        (node.tag or "", node.text_content if node.tag == "-text" else sorted(node.attributes.items()))
        for node in body.traverse(include_text=True)
    ]


def _attributes(html: str) -> list[tuple[str, str, str]]:
    return [(node.tag or "", name, value or "") for node in _elements(html) for name, value in node.attributes.items()]


def test_the_corpus_is_large_and_every_vector_observable() -> None:
    assert len(VECTORS) >= 60
    for n, vector in enumerate(VECTORS, 1):
        assert "{PORT}" not in vector and "{N}" not in vector
        assert f"/leak/{n}" in vector or f"alert({n})" in vector or f"msgbox({n})" in vector, vector


@pytest.mark.parametrize("vector", VECTORS, ids=[f"v{n}" for n in range(1, len(VECTORS) + 1)])
def test_vector_is_harmless_with_images_blocked(vector: str) -> None:
    out = sanitize_mail_html(vector, proxy=None).html
    lowered = out.lower()
    for tag in FORBIDDEN_TAGS:  # a literal "<" in nh3's output only ever opens a tag
        assert f"<{tag}" not in lowered
    assert "url(" not in lowered and "@import" not in lowered and "expression(" not in lowered
    assert {node.tag for node in _elements(out)}.isdisjoint(FORBIDDEN_TAGS)
    for tag, name, value in _attributes(out):
        assert not name.startswith("on"), (tag, name)
        assert name not in ("srcset", "background", "poster", "action", "formaction", "ping", "xlink:href")
        squeezed = _CONTROL.sub("", value).lower()
        assert not re.search(r"(javascript|vbscript|data|livescript):", squeezed), (tag, name, value)
        remote = "//" in squeezed or "127.0.0.1" in squeezed
        assert not remote or (tag, name) == ("a", "href"), (tag, name, value)  # a link loads only on a click
        if name == "style":
            assert "url" not in squeezed and "\\" not in squeezed and "image" not in squeezed
    assert _shape(sanitize_mail_html(out, proxy=None).html) == _shape(out)  # stable: nothing left to mutate


@pytest.mark.parametrize("vector", VECTORS, ids=[f"v{n}" for n in range(1, len(VECTORS) + 1)])
def test_vector_loads_images_only_through_the_proxy(vector: str) -> None:
    signed: list[str] = []

    def proxy(url: str) -> str:
        signed.append(url)
        return f"/img/{len(signed)}?u=x"

    out = sanitize_mail_html(vector, proxy=proxy).html
    for tag, name, value in _attributes(out):
        squeezed = _CONTROL.sub("", value).lower()
        if (tag, name) == ("img", "src"):
            assert re.fullmatch(r"/img/\d+\?u=x", value)
        else:
            assert (tag, name) == ("a", "href") or ("//" not in squeezed and "127.0.0.1" not in squeezed)
    assert all(url.lower().startswith(("http://", "https://")) for url in signed)
