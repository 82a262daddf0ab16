"""How the connect flows answer: a page of the app for a browser, JSON for a client that asks for it.

The page (``connect/answer.html``) is the app's own layout with the one sentence and where to go
next: the mailboxes after a success, the connect page after a failure. It reads nothing from the
session that a request without one lacks, so it suits the Microsoft callback too, a cross-site
POST that carries no session cookie: rendering it for such a request writes no session and
flashes nothing (the answer is the page itself).
"""

from __future__ import annotations

from flask import Response, jsonify, make_response, render_template, request

from postroom.states import AccountStatus


def wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def answer(status: int, title: str, sentence: str, data: dict[str, object]) -> Response:
    """``data`` as JSON, or a page with ``title`` and ``sentence``; never cached."""
    if wants_json():
        response = jsonify(data)
    else:
        page = render_template("connect/answer.html", title=title, sentence=sentence, ok=status < 400)
        response = make_response(page)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def connected(service: str, account_id: int, email: str, status: str) -> Response:
    """The answer to a finished connect flow: ``{"id", "email", "status", "message"}`` or a page. A
    reconnected account an administrator disabled stays disabled, and the answer says so."""
    if status == AccountStatus.DISABLED:
        title = f"{service} account disabled"
        sentence = f"{email} is reconnected, but an administrator has disabled it, so Postroom does not sync it."
    else:
        title, sentence = f"{service} connected", f"{email} is connected; Postroom starts syncing it now."
    return answer(200, title, sentence, {"id": account_id, "email": email, "status": status, "message": sentence})
