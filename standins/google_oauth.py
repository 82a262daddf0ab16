"""A local Google OAuth 2.0 authorization server: consent, token and revoke endpoints.

It shares its grants with a :class:`standins.gmail.GmailStandIn`, so a refresh
token issued through the consent flow opens that user's mailbox in the Gmail
stand-in, limited to the scopes consented to::

    >>> gmail = GmailStandIn()
    >>> oauth = GoogleOAuthStandIn(gmail, redirect_uris=["http://localhost/connect/google/callback"])
    >>> oauth.user = "rita@example.test"          # who "signs in" at the consent screen
    >>> with oauth.serve() as server:             # doctest: +SKIP
    ...     auth_uri, token_uri = server.url + "/o/oauth2/auth", server.url + "/token"

Endpoints, as Google answers them:

``GET /o/oauth2/auth``
    The consent screen. Checks ``client_id`` (unknown: a 401 ``invalid_client``
    page), ``redirect_uri`` (not registered: a 400 ``redirect_uri_mismatch`` page,
    never a redirect), ``response_type=code``, ``scope`` (every scope must be one
    Google knows) and PKCE (``code_challenge`` with ``code_challenge_method=S256``
    is required here). Then, in ``decision="approve"`` mode (the tests' user
    clicks Allow), a 302 to ``redirect_uri`` with ``code``, ``state`` and the
    granted ``scope``; in ``"deny"`` mode ``error=access_denied`` and ``state``.
    ``include_granted_scopes=true`` adds scopes granted earlier;
    ``access_type=offline`` gets a refresh token when ``prompt=consent`` is
    asked for or the user consents for the first time (as Google does).
    ``granted_scopes``, when set, models a user who unticks boxes in Google's
    granular consent screen.
``POST /token``
    ``authorization_code`` (single-use code, same ``redirect_uri``, the
    ``code_verifier`` whose S256 digest is the challenge) and ``refresh_token``
    grants; the client authenticates with HTTP Basic (requests-oauthlib) or form
    fields (google-auth). Unknown, used, expired or revoked: 400 ``invalid_grant``.
    An ``openid`` scope adds an ``id_token``.
``POST /revoke``
    ``token=`` a refresh or access token; its grant is revoked for good.

Every JSON answer is checked against the token response schemas below (RFC 6749
section 5 as Google fills it in), the same way the Gmail stand-in checks its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from werkzeug.wrappers import Request, Response

from standins.discovery import validate
from standins.gmail import TOKEN_LIFETIME, GmailStandIn
from standins.httpserver import ServerThread

CODE_LIFETIME = 600.0
OPENID_SCOPES = frozenset({"openid", "email", "profile"})
_SCHEMAS: dict[str, Any] = {
    "schemas": {
        "Token": {
            "type": "object",
            "properties": {
                "access_token": {"type": "string"},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"},
                "scope": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "id_token": {"type": "string"},
                "refresh_token_expires_in": {"type": "integer"},
            },
        },
        "TokenError": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        },
        "Empty": {"type": "object", "properties": {}},
    }
}


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    user: str
    scopes: frozenset[str]
    refresh: bool  # access_type=offline and a refresh token is due
    expires: float
    used: bool = False


@dataclass
class _Client:
    secret: str
    redirect_uris: set[str] = field(default_factory=set)


class GoogleOAuthStandIn:
    """Google's authorization server for the Gmail stand-in's users, in memory, thread-safe."""

    def __init__(self, gmail: GmailStandIn, *, redirect_uris: Iterable[str] = ()) -> None:
        self.gmail = gmail
        self.clients = {gmail.client_id: _Client(gmail.client_secret, set(redirect_uris))}
        self.known_scopes = frozenset(gmail.doc.get("auth", {}).get("oauth2", {}).get("scopes", {})) | OPENID_SCOPES
        self.user = ""  # the Google account signed in at the consent screen
        self.decision = "approve"  # or "deny": the user clicks Cancel
        self.granted_scopes: frozenset[str] | None = None  # None: every scope asked for
        self._codes: dict[str, _Code] = {}
        self._consented: dict[tuple[str, str], frozenset[str]] = {}  # (user, client) -> scopes
        self._lock = threading.Lock()
        self.schema_violations: list[str] = []
        self.requests: list[tuple[str, int]] = []  # (endpoint, status) as answered

    def register_redirect_uri(self, uri: str, client_id: str | None = None) -> None:
        self.clients[client_id or self.gmail.client_id].redirect_uris.add(uri)

    def serve(self) -> ServerThread:
        return ServerThread(self.wsgi)

    # ------------------------------------------------------------ WSGI
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        route = {
            ("GET", "/o/oauth2/auth"): self._authorize,
            ("GET", "/o/oauth2/v2/auth"): self._authorize,
            ("POST", "/token"): self._token,
            ("POST", "/revoke"): self._revoke,
            ("POST", "/o/oauth2/revoke"): self._revoke,
        }.get((request.method, request.path))
        response = route(request) if route else _page(404, "Error 404: not_found", "No such endpoint.")
        with self._lock:
            self.requests.append((request.path, response.status_code))
        return response(environ, start_response)

    # ------------------------------------------------------------ consent
    def _authorize(self, request: Request) -> Response:
        args = request.args
        client = self.clients.get(args.get("client_id", ""))
        if client is None:
            return _page(401, "Error 401: invalid_client", "The OAuth client was not found.")
        redirect_uri = args.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _page(
                400,
                "Error 400: redirect_uri_mismatch",
                f"The redirect URI {redirect_uri!r} is not registered for this OAuth client.",
            )
        scopes = frozenset(args.get("scope", "").split())
        problem = None
        if args.get("response_type") != "code":
            problem = "Only response_type=code is supported."
        elif not scopes:
            problem = "Missing required parameter: scope"
        elif scopes - self.known_scopes:
            return _page(400, "Error 400: invalid_scope", f"Unknown scope: {sorted(scopes - self.known_scopes)[0]}")
        elif not args.get("code_challenge") or args.get("code_challenge_method") != "S256":
            problem = "PKCE is required: send code_challenge with code_challenge_method=S256."
        if problem:
            return _page(400, "Error 400: invalid_request", problem)
        state = args.get("state")
        if self.decision == "deny" or not self.user:
            return _redirect(redirect_uri, {"error": "access_denied", "state": state})
        granted = scopes if self.granted_scopes is None else scopes & self.granted_scopes
        key = (self.user.lower(), args["client_id"])
        with self._lock:
            earlier = self._consented.get(key)
            if args.get("include_granted_scopes") == "true" and earlier:
                granted |= earlier
            self._consented[key] = granted | (earlier or frozenset())
            refresh = args.get("access_type") == "offline" and (
                "consent" in args.get("prompt", "").split() or not earlier
            )
            code = "4/" + secrets.token_urlsafe(32)
            self._codes[code] = _Code(
                args["client_id"],
                redirect_uri,
                args["code_challenge"],
                self.user.lower(),
                granted,
                refresh,
                time.time() + CODE_LIFETIME,
            )
        return _redirect(redirect_uri, {"state": state, "code": code, "scope": " ".join(sorted(granted))})

    # ------------------------------------------------------------ tokens
    def _token(self, request: Request) -> Response:
        form = request.form
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id, secret = request.authorization.username or "", request.authorization.password or ""
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(client.secret, secret):
            return self._json(401, {"error": "invalid_client", "error_description": "Unauthorized"}, "TokenError")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange(client_id, form)
        if grant_type == "refresh_token":
            refresh_token = form.get("refresh_token", "")
            grant = self.gmail.live_grant(refresh_token)
            access = self.gmail.issue_access_token(refresh_token)
            if grant is None or access is None:
                return self._invalid_grant("Token has been expired or revoked.")
            answer: dict[str, Any] = {"access_token": access, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}
            if grant[1] is not None:
                answer["scope"] = " ".join(sorted(grant[1]))
            return self._json(200, answer, "Token")
        return self._json(
            400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}, "TokenError"
        )

    def _exchange(self, client_id: str, form: Any) -> Response:
        with self._lock:
            code = self._codes.get(form.get("code", ""))
            if code is None or code.used or code.expires < time.time() or code.client_id != client_id:
                return self._invalid_grant("Malformed auth code.")
            if form.get("redirect_uri") != code.redirect_uri:
                return self._json(
                    400, {"error": "redirect_uri_mismatch", "error_description": "Bad Request"}, "TokenError"
                )
            verifier = form.get("code_verifier", "")
            if not verifier:
                return self._invalid_grant("Missing code verifier.")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not hmac.compare_digest(digest, code.challenge):
                return self._invalid_grant("Invalid code verifier.")
            code.used = True
        refresh_token = self.gmail.grant(code.user, code.scopes)
        access = self.gmail.issue_access_token(refresh_token)
        assert access is not None
        answer: dict[str, Any] = {
            "access_token": access,
            "expires_in": TOKEN_LIFETIME - 1,
            "scope": " ".join(sorted(code.scopes)),
            "token_type": "Bearer",
        }
        if code.refresh:  # else an online grant: the access token works until it expires
            answer["refresh_token"] = refresh_token
        if "openid" in code.scopes:
            answer["id_token"] = self._id_token(client_id, code)
        return self._json(200, answer, "Token")

    def _id_token(self, client_id: str, code: _Code) -> str:
        """An OpenID Connect ID token. Google signs with RS256 and its published keys; this
        one is HS256 with the client secret (clients here take it straight from the token
        endpoint over TLS, where OpenID Connect lets them skip the signature check)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": client_id,
            "azp": client_id,
            "sub": str(int(hashlib.sha256(code.user.encode()).hexdigest()[:15], 16)),
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        if "email" in code.scopes:
            claims.update(email=code.user, email_verified=True)
        parts = [_b64(json.dumps(p).encode()) for p in ({"alg": "HS256", "typ": "JWT"}, claims)]
        signing_input = ".".join(parts).encode()
        key = self.clients[client_id].secret.encode()
        return ".".join([*parts, _b64(hmac.new(key, signing_input, hashlib.sha256).digest())])

    def _revoke(self, request: Request) -> Response:
        token = request.form.get("token") or request.args.get("token", "")
        if not self.gmail.revoke_token(token):
            return self._json(
                400, {"error": "invalid_token", "error_description": "Token expired or revoked"}, "TokenError"
            )
        return self._json(200, {}, "Empty")

    # ------------------------------------------------------------ plumbing
    def _invalid_grant(self, description: str) -> Response:
        return self._json(400, {"error": "invalid_grant", "error_description": description}, "TokenError")

    def _json(self, status: int, value: dict[str, Any], ref: str) -> Response:
        problems = validate(_SCHEMAS, value, ref)
        if problems:
            with self._lock:
                self.schema_violations.extend(problems)
            status, value = 500, {"error": "server_error", "error_description": "; ".join(problems)}
        headers = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"}
        return Response(json.dumps(value), status=status, mimetype="application/json", headers=headers)


def _redirect(uri: str, params: dict[str, str | None]) -> Response:
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return Response(status=302, headers={"Location": urlunsplit(parts._replace(query=query))})


def _page(status: int, title: str, detail: str) -> Response:
    body = f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1><p>{escape(detail)}</p>"
    return Response(body, status=status, mimetype="text/html")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_redirect(location: str) -> dict[str, str]:
    """The query parameters of a redirect back to the client (tests read ``code``, ``error``)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
