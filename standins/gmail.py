"""A local Gmail API v1 stand-in: REST subset, batch endpoint, OAuth token endpoint.

>>> gmail = GmailStandIn()
>>> box = gmail.add_user("rita@example.test")
>>> refresh_token = gmail.grant("rita@example.test")
>>> with gmail.serve() as server:            # doctest: +SKIP
...     ...  # point google-api-python-client at server.url (see providers/gmail.py)

Methods: users.getProfile, labels.list/create, messages.list/get/send/insert/import/
trash/untrash/delete/modify, threads.get, history.list; ``POST /batch`` and
``/batch/gmail/v1``; ``POST /token`` (refresh_token grant). Routes, parameter
names and types come from the discovery document bundled with
google-api-python-client, and every JSON body in or out is validated against its
schemas (:mod:`standins.discovery`): a bad request is a 400 as Gmail would answer,
a response that breaks the schema is a 500 recorded in ``schema_violations``.

Grants are shared with :mod:`standins.google_oauth`: a refresh token issued
through its consent flow works here, and a grant carries the scopes the user
consented to; a method none of whose discovery-document scopes was granted
answers 403 insufficientPermissions, as Gmail does (grants made with
:meth:`GmailStandIn.grant` and no scopes allow every method).

SMTP submission (``smtp.gmail.com``): :meth:`GmailStandIn.smtp_submission` starts a companion
:class:`~standins.smtp_submission.SmtpSubmissionServer` that takes ``AUTH XOAUTH2`` with this
stand-in's access tokens, only from grants with ``https://mail.google.com/`` (others get Gmail's
``535 5.7.8 Username and Password not accepted``), files every submitted message in the sender's
SENT before answering, and delivers it to the envelope recipients it hosts; mail to anyone
else is kept in :attr:`GmailStandIn.outbound`.

Test controls: :meth:`GmailStandIn.fail` injects 429/403/5xx answers (also inside
batches), or, with ``after=True``, carries a call out and then answers it with the
error, late, or not at all (the connection closes: ``drop=True``), which is how a send
whose outcome the client cannot know looks; :meth:`revoke` kills a grant, :meth:`expire_access_tokens` forces a
refresh, ``Mailbox.expire_history`` makes old historyIds answer 404, and
:attr:`calls` counts every API call (batch parts included) with its quota units.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from standins import gmail_api
from standins.discovery import Method, ParameterError, load_document, methods, validate
from standins.faults import DROPPED, Fault, Faults, with_fault
from standins.gmail_batch import MAX_PARTS, BatchFormatError, format_batch, parse_batch
from standins.gmail_store import GmailError, Mailbox, without_bcc
from standins.httpserver import ServerThread, drop_connection
from standins.smtp_submission import Refusal, SmtpSubmissionServer, with_message_id

TOKEN_LIFETIME = 3600
MAIL_SCOPE = "https://mail.google.com/"  # full access: the only scope Gmail's SMTP server accepts
# https://developers.google.com/gmail/api/reference/quota
QUOTA_UNITS = {
    "users.getProfile": 1,
    "users.labels.list": 1,
    "users.labels.create": 5,
    "users.history.list": 2,
    "users.messages.list": 5,
    "users.messages.get": 5,
    "users.messages.send": 100,
    "users.messages.insert": 25,
    "users.messages.import": 25,
    "users.messages.trash": 5,
    "users.messages.untrash": 5,
    "users.messages.delete": 10,
    "users.messages.modify": 5,
    "users.threads.get": 10,
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Not in the discovery document: Google's JSON error format and the OAuth 2.0 token
# response (RFC 6749 section 5), written in the same dialect and checked the same way.
EXTRA_SCHEMAS = {
    "_Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer", "format": "int32"},
                    "message": {"type": "string"},
                    "status": {"type": "string", "enum": sorted({*_STATUS.values(), "FAILED_PRECONDITION"})},
                    "errors": {"type": "array", "items": {"$ref": "_ErrorItem"}},
                },
            }
        },
    },
    "_ErrorItem": {
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "domain": {"type": "string"},
            "reason": {"type": "string"},
            "location": {"type": "string"},
            "locationType": {"type": "string"},
        },
    },
    "_Token": {
        "type": "object",
        "properties": {
            "access_token": {"type": "string"},
            "expires_in": {"type": "integer"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "scope": {"type": "string"},
        },
    },
    "_TokenError": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
}


@dataclass(frozen=True)
class Call:
    """One API call as the stand-in saw it (a batch part is one call too)."""

    method: str  # "users.history.list", "batch", "token"
    user: str | None
    status: int
    in_batch: bool = False


@dataclass
class _Grant:
    user: str
    revoked: bool = False
    scopes: frozenset[str] | None = None  # None: every scope


class GmailStandIn:
    """Gmail for any number of users, in memory, thread-safe."""

    def __init__(self, *, client_id: str = "postroom-test-client", client_secret: str = "postroom-test-secret") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        doc = load_document("gmail", "v1")
        self.doc = {**doc, "schemas": {**doc["schemas"], **EXTRA_SCHEMAS}}
        self.methods: dict[str, Method] = {
            mid: m for mid, m in methods(doc).items() if mid.removeprefix("gmail.") in gmail_api.HANDLERS
        }
        self._map = Map([Rule(m.rule, endpoint=mid, methods=[m.http_method]) for mid, m in self.methods.items()])
        self._scopes = _method_scopes(doc.get("resources", {}))
        self._lock = threading.Lock()
        self.mailboxes: dict[str, Mailbox] = {}
        self._grants: dict[str, _Grant] = {}  # refresh token -> grant
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (refresh token, expiry)
        self._faults = Faults()
        self._broken: dict[str, int] = {}  # message id -> status every messages.get of it answers
        self.calls: list[Call] = []
        self.schema_violations: list[str] = []
        self.outbound: list[tuple[str, list[str], bytes]] = []  # (sender, recipients, raw) submitted over SMTP

    # ------------------------------------------------------------ SMTP submission
    def smtp_submission(self, ssl_context: ssl.SSLContext | None = None) -> SmtpSubmissionServer:
        """Gmail's SMTP submission as a running companion server (plain text without ``ssl_context``)."""
        return SmtpSubmissionServer(
            self.smtp_authorize, self.smtp_deliver, ssl_context=ssl_context, hostname="smtp.gmail.com"
        )

    def smtp_authorize(self, user: str, token: str) -> str | Refusal:
        """Gmail's check of an XOAUTH2 sign-in: a live access token of ``user``'s grant, and the
        grant has ``https://mail.google.com/`` (Gmail's SMTP server takes no narrower scope)."""
        with self._lock:
            refresh_token, expiry = self._access.get(token, ("", 0.0))
            grant = self._grants.get(refresh_token)
        if grant is None or grant.revoked or expiry < time.time() or grant.user != user.lower():
            return _smtp_refusal("401")
        if grant.scopes is not None and MAIL_SCOPE not in grant.scopes:
            return _smtp_refusal("400")
        return grant.user

    def smtp_deliver(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """A message submitted over SMTP: one copy in the sender's SENT (with INBOX too when they
        are among the recipients, one message as Gmail keeps it), one in the inbox of each other
        envelope recipient this stand-in hosts, the rest in :attr:`outbound`."""
        raw = with_message_id(raw, "mail.gmail.com")
        box = self.mailbox(sender)
        targets = sorted({r.lower() for r in recipients})
        box.add(raw, ["SENT", *(["INBOX", "UNREAD"] if box.email in targets else [])])
        delivered, outside = without_bcc(raw), []
        for address in (t for t in targets if t != box.email):
            if address in self.mailboxes:
                self.mailbox(address).add(delivered, ["INBOX", "UNREAD"])
            else:
                outside.append(address)
        if outside:
            with self._lock:
                self.outbound.append((box.email, outside, delivered))

    # ------------------------------------------------------------ test controls
    def add_user(self, address: str) -> Mailbox:
        with self._lock:
            return self.mailboxes.setdefault(address.lower(), Mailbox(address.lower()))

    def mailbox(self, address: str) -> Mailbox:
        return self.mailboxes[address.lower()]

    def grant(self, address: str, scopes: Iterable[str] | None = None) -> str:
        """A new refresh token for ``address`` (as an OAuth consent would issue), limited
        to ``scopes`` if given."""
        self.add_user(address)
        token = "1//" + secrets.token_urlsafe(24)
        with self._lock:
            self._grants[token] = _Grant(address.lower(), scopes=None if scopes is None else frozenset(scopes))
        return token

    def issue_access_token(self, refresh_token: str) -> str | None:
        """A fresh access token for a live grant; None if the grant is unknown or revoked."""
        with self._lock:
            grant = self._grants.get(refresh_token)
            if grant is None or grant.revoked:
                return None
            access = "ya29." + secrets.token_urlsafe(24)
            self._access[access] = (refresh_token, time.time() + TOKEN_LIFETIME)
            return access

    def revoke_token(self, token: str) -> bool:
        """Google's revoke endpoint: a refresh token, or an access token (which takes its
        grant with it). False if the token is unknown or already revoked."""
        with self._lock:
            refresh_token = self._access[token][0] if token in self._access else token
            grant = self._grants.get(refresh_token)
            if grant is None or grant.revoked:
                return False
            grant.revoked = True
            return True

    def live_grant(self, refresh_token: str) -> tuple[str, frozenset[str] | None] | None:
        """Whose mailbox a refresh token opens and with which scopes (None: all); None if
        the token is unknown or revoked."""
        with self._lock:
            grant = self._grants.get(refresh_token)
            return None if grant is None or grant.revoked else (grant.user, grant.scopes)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a grant: its refresh gives invalid_grant, its access tokens 401."""
        with self._lock:
            self._grants[refresh_token].revoked = True

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access = {t: (rt, 0.0) for t, (rt, _) in self._access.items()}

    def deliver(self, address: str, raw: bytes, labels: Iterable[str] = ("INBOX", "UNREAD")) -> str:
        """Server-side delivery into ``address``'s mailbox; returns the Gmail message id."""
        return self.mailbox(address).add(raw, labels).id

    def fail(
        self,
        method: str = "*",
        *,
        times: int = 1,
        status: int = 429,
        reason: str | None = None,
        retry_after: float | None = None,
        after: bool = False,
        drop: bool = False,
        stall: float = 0.0,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` ("users.messages.get", "batch",
        "*") with an error: 429/403 rate limits (``reason`` rateLimitExceeded or
        userRateLimitExceeded), 5xx backend errors, with Retry-After if given.

        ``after=True``: carry the call out first (a send is sent, a message inserted), then
        answer with that error, or with no answer at all (``drop=True``: the connection is
        closed), or with the call's own answer ``stall`` seconds late (a client's read
        timeout). Only calls made outside a batch can be dropped."""
        default = {429: "rateLimitExceeded", 403: "rateLimitExceeded"}.get(status, "backendError")
        self._faults.add(Fault(method, times, status, reason or default, retry_after, after, drop, stall))

    def break_message(self, message_id: str, status: int = 500) -> None:
        """Make every ``messages.get`` of this message fail with ``status`` (500: the "Backend
        Error" Gmail answers, again and again, for a message it cannot read; 400 and others
        as Gmail words them), alone or inside a batch, until :meth:`mend_message`."""
        with self._lock:
            self._broken[message_id] = status

    def mend_message(self, message_id: str) -> None:
        with self._lock:
            self._broken.pop(message_id, None)

    def api_calls(self, method: str | None = None) -> list[Call]:
        """Calls other than the token endpoint and batch envelopes, optionally of one method."""
        return [c for c in self.calls if c.method not in ("token", "batch") and method in (None, c.method)]

    def quota_units(self) -> int:
        return sum(QUOTA_UNITS.get(c.method, 0) for c in self.api_calls())

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def serve(self) -> ServerThread:
        return ServerThread(self.wsgi)

    # ------------------------------------------------------------ WSGI
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        status, headers, body = self.dispatch(
            request.method, request.path, request.query_string.decode(), dict(request.headers), request.get_data()
        )
        if status == DROPPED:
            drop_connection(environ)
        return Response(body, status=status, headers=headers)(environ, start_response)

    def dispatch(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, in_batch: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k.lower(): v for k, v in headers.items()}
        if method == "POST" and path == "/token" and not in_batch:
            return self._token(body)
        if method == "POST" and path in ("/batch", "/batch/gmail/v1") and not in_batch:
            return self._batch(headers, body)
        try:
            endpoint, args = self._map.bind("stand-in", "/").match(path, method=method)
        except (NotFound, MethodNotAllowed):
            return self._error(404, f"No method at {method} {path}", "notFound")
        mid = str(endpoint).removeprefix("gmail.")
        user, scopes = self._authorize(headers.get("authorization", ""))
        if user is None:
            self._log(Call(mid, None, 401, in_batch))
            return self._error(401, "Request had invalid authentication credentials.", "authError")
        if scopes is not None and not scopes & self._scopes.get(str(endpoint), frozenset()):
            self._log(Call(mid, user, 403, in_batch))
            return self._error(403, "Request had insufficient authentication scopes.", "insufficientPermissions")
        status, out_headers, out = self._call(self.methods[str(endpoint)], mid, user, dict(args), query, body)
        self._log(Call(mid, user, status, in_batch))
        return status, out_headers, out

    def _call(
        self, method: Method, mid: str, user: str, args: dict[str, str], query: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if args.pop("userId") not in ("me", user):
            return self._error(403, "Delegation denied for " + user, "forbidden")
        broken = self._broken.get(args.get("id", "")) if mid == "users.messages.get" else None
        if broken is not None:
            text = "Backend Error" if broken >= 500 else "Invalid message"
            return self._error(broken, text, _REASONS.get(broken, "backendError"))
        return with_fault(
            self._faults.take(mid),
            lambda: self._carry_out(method, mid, user, args, query, body),
            self._fault_answer,
        )

    def _fault_answer(self, fault: Fault) -> tuple[int, dict[str, str], bytes]:
        extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        message = "Too many concurrent requests for user." if fault.status in (403, 429) else "Backend Error"
        return self._error(fault.status, message, fault.reason or "backendError", extra)

    def _carry_out(
        self, method: Method, mid: str, user: str, args: dict[str, str], query: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            params = method.parse_query(parse_qs(query, keep_blank_values=True))
        except ParameterError as exc:
            return self._error(400, str(exc), "invalidArgument")
        payload: Any = None
        if method.request_ref is not None:
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                return self._error(400, "Invalid JSON payload received.", "parseError")
            problems = validate(self.doc, payload, method.request_ref)
            if problems:
                return self._error(400, "Invalid JSON payload received. " + "; ".join(problems), "invalidArgument")
        try:
            result = gmail_api.HANDLERS[mid](self, self.mailbox(user), args, params, payload)
        except GmailError as exc:
            return self._error(exc.code, exc.message, exc.reason)
        if result is None:
            return 204, {}, b""
        return self._json(200, result, method.response_ref or "")

    # ------------------------------------------------------------ plumbing
    def _json(
        self, status: int, value: Any, ref: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        problems = validate(self.doc, value, ref) if ref else []
        if problems:
            with self._lock:
                self.schema_violations.extend(problems)
            status, value = (
                500,
                _error_body(500, "stand-in response violates the Gmail schema: " + "; ".join(problems), "backendError"),
            )
        out = {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}
        return status, out, json.dumps(value).encode()

    def _error(
        self, code: int, message: str, reason: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        extra = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'} if code == 401 else {}
        return self._json(code, _error_body(code, message, reason), "_Error", {**extra, **(headers or {})})

    def _log(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _authorize(self, header: str) -> tuple[str | None, frozenset[str] | None]:
        """The user an access token acts for and the scopes granted (None: all)."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None, None
        with self._lock:
            refresh_token, expiry = self._access.get(token.strip(), ("", 0.0))
            grant = self._grants.get(refresh_token)
            if grant is None or grant.revoked or expiry < time.time():
                return None, None
            return grant.user, grant.scopes

    def _token(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            self._log(Call("token", None, 401))
            return self._json(401, {"error": "invalid_client", "error_description": "Unauthorized"}, "_TokenError")
        if form.get("grant_type") != "refresh_token":
            self._log(Call("token", None, 400))
            return self._json(400, {"error": "unsupported_grant_type"}, "_TokenError")
        grant = self.live_grant(form.get("refresh_token", ""))
        access = self.issue_access_token(form.get("refresh_token", ""))
        if grant is None or access is None:
            self._log(Call("token", None, 400))
            err = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            return self._json(400, err, "_TokenError")
        self._log(Call("token", grant[0], 200))
        answer = {"access_token": access, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}
        if form.get("scope"):
            answer["scope"] = form["scope"]
        return self._json(200, answer, "_Token")

    def _batch(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        fault = self._faults.take("batch")
        if fault is not None:
            self._log(Call("batch", None, fault.status))
            return self._error(fault.status, "Backend Error", fault.reason or "backendError")
        try:
            parts = parse_batch(headers.get("content-type", ""), body)
        except BatchFormatError as exc:
            self._log(Call("batch", None, 400))
            return self._error(400, f"Failed to parse batch request: {exc}", "badRequest")
        if len(parts) > MAX_PARTS:
            self._log(Call("batch", None, 400))
            return self._error(400, f"Too many requests in batch; the limit is {MAX_PARTS}.", "badRequest")
        self._log(Call("batch", None, 200))
        answers = []
        for part in parts:
            status, part_headers, out = self.dispatch(
                part.method, part.path, part.query, part.headers, part.body, in_batch=True
            )
            if status == DROPPED:  # one part cannot close the batch's connection: a backend error instead
                status, part_headers, out = self._error(503, "Backend Error", "backendError")
            answers.append((part.content_id, status, part_headers, out))
        content_type, payload = format_batch(answers)
        return 200, {"Content-Type": content_type}, payload


def _smtp_refusal(status: str) -> Refusal:
    """Gmail's answer to a refused XOAUTH2 sign-in: 334 with the JSON error (400: the token lacks
    the scope; 401: the token is not valid), then 535 after the client's empty line."""
    challenge = {"status": status, "schemes": "Bearer", "scope": MAIL_SCOPE}
    reply = (  # two lines, as Gmail words it
        "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
        "535 5.7.8  https://support.google.com/mail/?p=BadCredentials"
    )
    return Refusal(reply, challenge)


def _method_scopes(resources: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Method id -> the OAuth scopes any one of which lets a caller use it (discovery document)."""
    out: dict[str, frozenset[str]] = {}
    for resource in resources.values():
        for m in resource.get("methods", {}).values():
            out[m["id"]] = frozenset(m.get("scopes", ()))
        out.update(_method_scopes(resource.get("resources", {})))
    return out


_REASONS = {400: "invalidArgument", 404: "notFound", 500: "backendError", 503: "backendError"}


def _error_body(code: int, message: str, reason: str) -> dict[str, Any]:
    domain = "usageLimits" if reason.endswith("RateLimitExceeded") or reason == "rateLimitExceeded" else "global"
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": _STATUS.get(code, "FAILED_PRECONDITION" if code < 500 else "INTERNAL"),
        }
    }
