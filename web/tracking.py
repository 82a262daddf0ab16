"""The tracking endpoints: the pixel and the click redirect, answered before Flask is reached.

``GET|HEAD /t/o/<token>.gif``  → 200, a 43-byte transparent 1×1 GIF, never cached;
``GET|HEAD /t/c/<token>?u=<url>`` → 302 to ``url`` if the token was made for exactly that URL.

A token that does not verify (tampered, truncated, made under another key) answers 404 and
nothing is recorded; checking needs no database (:mod:`postroom.tracking_tokens`). A hit is
handed to the :class:`services.tracking.HitRecorder` — an append to an in-memory queue — with
its method, user agent, client address and time; the verdict and the database write happen
later, in batches, on the recorder's thread.

This is a plain WSGI function in front of the Flask app (Flask's request context, routing and
session machinery are skipped for these paths: bench/tracking_bench.py measures the
difference). It sits inside ``ProxyFix``, so behind ``web.trusted_proxies`` reverse proxies
the client address is the one they forwarded, as for every other page.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Flask
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.urls import iri_to_uri

from postroom.config import Config
from postroom.hits import Hit
from postroom.states import HitKind
from postroom.tracking_tokens import CLICK_PATH, OPEN_PATH, TrackingKeys
from services.tracking import AppleRangesSource, HitRecorder, tracking_keys

# GIF89a, 1×1, a two-colour table, a graphic control extension making colour 0 transparent,
# and one pixel of colour 0.
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
NO_STORE = [
    ("Cache-Control", "no-store, no-cache, must-revalidate, private"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
]
PIXEL_HEADERS = [
    ("Content-Type", "image/gif"),
    ("Content-Length", str(len(PIXEL))),
    ("X-Content-Type-Options", "nosniff"),
    *NO_STORE,
]
NOT_FOUND = b"Not found.\n"
NOT_FOUND_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(NOT_FOUND))), *NO_STORE]
MAX_AGENT = 1000  # characters of a user agent kept


def mount_tracking(app: Flask, config: Config, sessions: sessionmaker[Session]) -> HitRecorder:
    """Put the endpoints in front of ``app`` (call it before ``ProxyFix`` wraps the app) and
    return the recorder their hits go to; its thread starts with the first hit and what it
    holds is written when the process exits (or at ``recorder.close()``)."""
    recorder = HitRecorder(sessions, AppleRangesSource(config).current, window=config.tracking.scanner_seconds)
    app.wsgi_app = TrackingEndpoints(app.wsgi_app, tracking_keys(config), recorder)  # type: ignore[method-assign]
    return recorder


class TrackingEndpoints:
    """WSGI middleware answering ``/t/o/...`` and ``/t/c/...``; everything else goes to ``app``."""

    def __init__(self, app: WSGIApplication, keys: TrackingKeys, recorder: HitRecorder) -> None:
        self.app, self.keys, self.recorder = app, keys, recorder

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith("/t/"):
            return self.app(environ, start_response)
        is_open = path.startswith(OPEN_PATH) and path.endswith(".gif")
        if not is_open and not path.startswith(CLICK_PATH):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0"), *NO_STORE])
            return [b""]
        if is_open:
            recipient = self.keys.verify_open(path[len(OPEN_PATH) : -4])
            if recipient is None:
                return _not_found(start_response, method)
            self._record(environ, method, recipient, HitKind.OPEN)
            start_response("200 OK", PIXEL_HEADERS)
            return [b"" if method == "HEAD" else PIXEL]
        url = _target(environ.get("QUERY_STRING", ""))
        found = self.keys.verify_click(path[len(CLICK_PATH) :], url) if url else None
        if found is None or url is None:
            return _not_found(start_response, method)
        recipient, link = found
        self._record(environ, method, recipient, HitKind.CLICK, link, url)
        start_response(
            "302 Found",
            [("Location", _location(url)), ("Content-Length", "0"), ("Referrer-Policy", "no-referrer"), *NO_STORE],
        )
        return [b""]

    def _record(
        self,
        environ: WSGIEnvironment,
        method: str,
        recipient: int,
        kind: HitKind,
        link: int | None = None,
        url: str | None = None,
    ) -> None:
        agent = environ.get("HTTP_USER_AGENT", "")
        if len(agent) > MAX_AGENT:
            agent = agent[:MAX_AGENT]
        self.recorder.record(
            recipient, Hit(kind, datetime.now(UTC), method, agent, environ.get("REMOTE_ADDR", ""), link, url)
        )


def _target(query: str) -> str | None:
    """The ``u`` parameter, decoded as UTF-8 (WSGI hands the query over as latin-1)."""
    if not query:
        return None
    text = query.encode("latin-1", "replace").decode("utf-8", "replace")
    try:
        values = parse_qs(text, keep_blank_values=True, max_num_fields=20).get("u")
    except ValueError:  # more fields than any URL of ours has
        return None
    return values[0] if values else None


def _location(url: str) -> str:
    """``url`` as a Location header can carry it: an IDN host in punycode, everything else
    that is not printable ASCII percent-encoded (never a line break)."""
    try:
        return iri_to_uri(url)
    except ValueError:  # e.g. a port that is not a number: keep the URL as written, made safe
        return quote(url, safe="!#$%&'()*+,/:;=?@[]~")


def _not_found(start_response: StartResponse, method: str) -> Iterable[bytes]:
    start_response("404 Not Found", NOT_FOUND_HEADERS)
    return [b"" if method == "HEAD" else NOT_FOUND]
