"""How the connect flows answer: a small HTML page for a browser, JSON for a client that asks for it."""

from __future__ import annotations

from flask import Response, jsonify, make_response, request
from markupsafe import escape


def wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def answer(status: int, title: str, sentence: str, data: dict[str, object]) -> Response:
    """``data`` as JSON, or a page with ``title`` and ``sentence``; never cached."""
    if wants_json():
        response = jsonify(data)
    else:
        body = f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1><p>{escape(sentence)}</p>"
        response = make_response(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response
