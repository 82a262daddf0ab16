"""A local Microsoft identity platform (Entra ID v2.0 endpoints) for the real msal.

>>> idp = IdentityStandIn()
>>> refresh_token = idp.grant("rita@contoso.test")
>>> fabrikam = idp.add_tenant("fabrikam.test")          # a second organisation (tenant id)
>>> fred = idp.add_user("fred@fabrikam.test", tenant="fabrikam.test")
>>> with idp.serve(ssl_context) as server:             # doctest: +SKIP
...     app = msal.ConfidentialClientApplication(idp.client_id, client_credential=idp.client_secret,
...             authority=f"{server.url}/{idp.tenant}",
...             instance_discovery=f"{server.url}/common/discovery/instance", http_client=...)

Endpoints (``{tenant}`` is the tenant id, its domain, ``organizations`` or ``common``):

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` -- msal reads it in its constructor.
* ``GET /common/discovery/instance`` -- instance discovery, which msal runs for any
  authority host it does not know (or point ``instance_discovery`` at it).
* ``GET|POST /{tenant}/oauth2/v2.0/authorize`` -- authorization code with PKCE (S256),
  answered by redirect or, with ``response_mode=form_post``, by a self-posting form.
  With :attr:`IdentityStandIn.auto_approve` set to a user, the GET redirects at once
  (test mode); otherwise it shows a one-field sign-in form whose POST redirects. With
  :attr:`IdentityStandIn.decline_consent` the user cancels consent: ``access_denied``.
* ``POST /{tenant}/oauth2/v2.0/token`` -- ``authorization_code`` and ``refresh_token``
  grants. Like Microsoft's, every redemption returns a *new* refresh token; the old
  one stays valid until the grant is revoked or expires. Failures are Microsoft's:
  ``invalid_grant`` with AADSTS codes (50173 revoked, 700082 expired, 9002313 an
  unknown token, 54005 a code redeemed twice, 501481 a PKCE mismatch, 65001 a
  scope never consented), ``invalid_client`` (7000215) for a wrong secret.

The directory holds tenants (a domain and an immutable tenant id, ``tid``) and their
users. A user signs in with a sign-in name (the ``userPrincipalName``) and has an
immutable object id (``oid``, a GUID that is never reused) and a ``mail`` attribute,
the mailbox's primary SMTP address, which an administrator may change
(:meth:`IdentityStandIn.change_mail`); a deleted user's address can go to a new
user with a new ``oid`` (:meth:`IdentityStandIn.delete_user`). As with Microsoft, the
ID token (for the ``openid`` scope) carries ``tid`` and ``oid``, its issuer is
``https://<host>/<tid>/v2.0``, and an authority names one tenant (its users only;
another tenant's user gets AADSTS50020) or ``organizations``/``common`` (users of any
tenant, whose discovery document has the issuer ``https://<host>/{tenantid}/v2.0``).

Access tokens are opaque; :meth:`IdentityStandIn.user_for` is how the Graph stand-in
(:mod:`standins.graph`) checks a bearer token: both share this one token store, and
both know a mailbox by its user's current ``mail``. As with Microsoft, a token is issued for
one resource (its scopes' prefix: ``https://graph.microsoft.com``, Exchange Online's
``https://outlook.office.com`` for ``SMTP.Send``...): a token request naming scopes of two
resources is refused (AADSTS28000), an authorization request may name several (the user
consents to all at once; msal's "extra scopes to consent"), and ``user_for(token, resource)``
refuses a token issued for another resource. :meth:`IdentityStandIn.smtp_authorize` is how
Exchange Online's SMTP submission (:mod:`standins.smtp_submission`) checks an XOAUTH2 sign-in:
a live token issued for ``https://outlook.office.com/SMTP.Send`` to that user, else
``535 5.7.3 Authentication unsuccessful``. :attr:`IdentityStandIn.withheld_scopes` models an
organisation whose consent leaves some scopes out (SMTP.Send not granted). Every JSON answer is checked
against :mod:`standins.graph_schema`; a violation becomes a 500 recorded in
``schema_violations``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlparse

from werkzeug.wrappers import Request, Response

from standins.graph_https import HttpsServerThread
from standins.graph_schema import check
from standins.smtp_submission import Refusal

GRAPH_SCOPES = ("https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send")
SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"  # Exchange Online's SMTP AUTH submission
GRAPH = "https://graph.microsoft.com"
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
ACCESS_LIFETIME = 3600


@dataclass
class _Grant:
    user: str  # the user's object id
    client_id: str
    scopes: frozenset[str]
    revoked: bool = False
    expired: bool = False


@dataclass
class _Code:
    grant: _Grant
    redirect_uri: str
    challenge: str | None
    nonce: str | None
    scopes: frozenset[str]
    used: bool = False


class _Refusal(Exception):
    def __init__(self, error: str, code: int, text: str) -> None:
        super().__init__(text)
        self.error, self.code, self.text = error, code, text


@dataclass(frozen=True)
class TokenCall:
    """One token endpoint request: its grant type, the refresh token redeemed (if any), the outcome."""

    grant_type: str
    refresh_token: str | None
    status: int
    error_code: int | None = None


@dataclass
class _User:
    """One directory user: signs in as ``upn``; ``mail`` is the mailbox's address (editable)."""

    upn: str
    mail: str
    tenant_id: str
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = ""
    deleted: bool = False


def tenant_id_of(domain: str) -> str:
    """The stand-in's (stable) tenant id for a tenant's domain."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, domain.lower()))


class IdentityStandIn:
    """Entra ID for one confidential (multi-tenant) client, in memory, thread-safe; ``tenant``
    is the home tenant, more are added with :meth:`add_tenant`."""

    def __init__(
        self,
        *,
        tenant: str = "contoso.test",
        client_id: str = "6731de76-14a6-49ae-97bc-6eba6914391e",
        client_secret: str = "postroom-standin-secret",
        redirect_uris: Iterable[str] = (),
    ) -> None:
        self.tenant, self.tenant_id = tenant, tenant_id_of(tenant)
        self.tenants: dict[str, str] = {tenant.lower(): self.tenant_id}  # domain -> tenant id
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uris = set(redirect_uris)  # empty: any https or loopback URI is accepted
        self.auto_approve: str | None = None  # sign this user in without a form (test mode)
        self.decline_consent = False  # the signed-in user clicks "Cancel" on the consent screen
        self.withheld_scopes: set[str] = set()  # asked for at sign-in, but never part of the consent
        self._lock = threading.Lock()
        self.users: dict[str, _User] = {}  # live users by sign-in name
        self._objects: dict[str, _User] = {}  # every user ever, by object id
        self._refresh: dict[str, _Grant] = {}
        self._access: dict[str, tuple[_Grant, float, frozenset[str]]] = {}  # token -> (grant, expiry, scopes)
        self._codes: dict[str, _Code] = {}
        self.token_calls: list[TokenCall] = []
        self.requests: list[str] = []  # "GET /path" of every request
        self.schema_violations: list[str] = []

    # ------------------------------------------------------------ test controls
    def add_tenant(self, domain: str) -> str:
        """Another organisation in the directory; its tenant id."""
        with self._lock:
            return self.tenants.setdefault(domain.lower(), tenant_id_of(domain))

    def add_user(self, address: str, name: str | None = None, *, tenant: str | None = None) -> _User:
        """The user signing in as ``address`` (also their ``mail``), in ``tenant`` (a domain;
        default: the home tenant), created with a new object id unless they exist."""
        tenant_id = self.add_tenant(tenant or self.tenant)
        upn = address.lower()
        with self._lock:
            user = self.users.get(upn)
            if user is None:
                self._check_mail_free(upn)
                user = _User(upn, upn, tenant_id, name=name or address.split("@")[0].title())
                self.users[upn] = self._objects[user.oid] = user
            return user

    def change_mail(self, address: str, mail: str) -> None:
        """An administrator changes the ``mail`` attribute (primary SMTP address) of the user who
        signs in as ``address``; the sign-in name and object id stay."""
        with self._lock:
            user = self.users[address.lower()]
            self._check_mail_free(mail.lower(), user)
            user.mail = mail.lower()

    def delete_user(self, address: str) -> None:
        """The user is deleted: their tokens stop working, and their sign-in name and address
        are free for a new user (who gets a new object id)."""
        with self._lock:
            self.users.pop(address.lower()).deleted = True

    def _check_mail_free(self, mail: str, owner: _User | None = None) -> None:
        taken = [u for u in self.users.values() if u.mail == mail and u is not owner]
        if taken:  # Exchange Online: one primary SMTP address, one recipient
            raise ValueError(f"{mail} is already the address of {taken[0].upn}.")

    def grant(self, address: str, scopes: Iterable[str] = GRAPH_SCOPES) -> str:
        """A refresh token for ``address`` as a completed consent would issue it."""
        user = self.add_user(address)
        grant = _Grant(user.oid, self.client_id, frozenset(scopes))
        with self._lock:
            return self._new_refresh(grant)

    def revoke(self, refresh_token: str) -> None:
        """The user revoked consent (or an admin revoked sessions): AADSTS50173, and its access tokens 401."""
        with self._lock:
            self._refresh[refresh_token].revoked = True

    def expire_grant(self, refresh_token: str) -> None:
        """The grant's refresh tokens ran out (90 days idle): AADSTS700082."""
        with self._lock:
            self._refresh[refresh_token].expired = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is now past its lifetime (Graph answers 401)."""
        with self._lock:
            self._access = {t: (g, 0.0, scopes) for t, (g, _, scopes) in self._access.items()}

    def user_for(self, access_token: str, resource: str | None = None) -> tuple[str | None, str]:
        """The mailbox address (current ``mail``) of the user an access token belongs to, or
        None and why it is refused; with ``resource``, only a token issued for it (its audience)."""
        with self._lock:
            grant, expiry, scopes = self._access.get(access_token, (None, 0.0, frozenset()))
            user = self._objects[grant.user] if grant is not None else None
        if grant is None or user is None:
            return None, "IDX14100: JWT is not well formed."
        if resource is not None and {resource_of(s) for s in scopes} != {resource}:
            return None, f"Invalid audience: the token was not issued for {resource}."
        if grant.revoked:
            return None, "The user or administrator has revoked the grant."
        if user.deleted:
            return None, "The user account does not exist in the directory."
        if expiry < time.time():
            return None, "Lifetime validation failed, the token is expired."
        return user.mail, ""

    def smtp_authorize(self, user: str, token: str) -> str | Refusal:
        """Exchange Online's check of an SMTP AUTH XOAUTH2 sign-in: a live token issued for
        ``SMTP.Send`` to the user whose address is ``user``."""
        address, _ = self.user_for(token, resource_of(SMTP_SCOPE))
        with self._lock:
            scopes = self._access.get(token, (None, 0.0, frozenset()))[2]
        if address is None or address != user.lower() or SMTP_SCOPE not in scopes:
            return Refusal("535 5.7.3 Authentication unsuccessful [stand-in]")
        return address

    def serve(self, ssl_context: ssl.SSLContext) -> HttpsServerThread:
        return HttpsServerThread(self.wsgi, ssl_context)

    # ------------------------------------------------------------ WSGI
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        base = f"https://{request.host}"
        self.requests.append(f"{request.method} {request.path}")
        parts = [p for p in request.path.split("/") if p]
        response: Response
        if request.path == "/common/discovery/instance" and request.method == "GET":
            response = self._instance_discovery(base, request.args.get("authorization_endpoint", ""))
        elif len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            response = self._openid_configuration(base, parts[0])
        elif len(parts) == 4 and parts[1:3] == ["oauth2", "v2.0"] and parts[3] == "authorize":
            response = self._authorize(request, parts[0])
        elif len(parts) == 4 and parts[1:3] == ["oauth2", "v2.0"] and parts[3] == "token" and request.method == "POST":
            response = self._token(request, base)
        else:
            response = Response("Not Found", status=404)
        return response(environ, start_response)

    def _json(self, status: int, value: Any, ref: str) -> Response:
        problems = check(value, ref)
        if problems:
            with self._lock:
                self.schema_violations.extend(problems)
            status, value = 500, {"error": "temporarily_unavailable", "error_description": "; ".join(problems)}
        return Response(
            json.dumps(value),
            status=status,
            content_type="application/json; charset=utf-8",
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _instance_discovery(self, base: str, endpoint: str) -> Response:
        parsed = urlparse(endpoint)
        parts = [p for p in parsed.path.split("/") if p]
        if parsed.hostname != urlparse(base).hostname or len(parts) < 1:  # msal sends the host without the port
            error = {
                "error": "invalid_instance",
                "error_description": f"AADSTS50049: Unknown or invalid instance. Trace ID: {uuid.uuid4()}",
                "error_codes": [50049],
            }
            return self._json(400, error, "tokenError")
        host = urlparse(base).netloc
        answer = {
            "tenant_discovery_endpoint": f"{base}/{parts[0]}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }
        return self._json(200, answer, "instanceDiscovery")

    def _tenant_id(self, tenant: str) -> str | None:
        """The tenant id an authority's tenant segment names; ``{tenantid}`` for ``organizations``
        and ``common`` (any tenant); None for an unknown tenant."""
        if tenant.lower() in ("common", "organizations"):
            return "{tenantid}"
        with self._lock:
            if tenant.lower() in self.tenants.values():
                return tenant.lower()
            return self.tenants.get(tenant.lower())

    def _openid_configuration(self, base: str, tenant: str) -> Response:
        tenant_id = self._tenant_id(tenant)
        if tenant_id is None:
            error = {
                "error": "invalid_request",
                "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                "error_codes": [90002],
            }
            return self._json(400, error, "tokenError")
        root = f"{base}/{tenant}"
        config = {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tenant_id}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "oid",
            ],
            "code_challenge_methods_supported": ["plain", "S256"],
            "kerberos_endpoint": f"{root}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }
        return self._json(200, config, "openidConfiguration")

    # ------------------------------------------------------------ authorize
    def _authorize(self, request: Request, tenant: str) -> Response:
        params = {**request.args.to_dict(), **request.form.to_dict()}
        tenant_id = self._tenant_id(tenant)
        if tenant_id is None:
            return _page(400, f"AADSTS90002: Tenant '{tenant}' not found.")
        if params.get("client_id") != self.client_id:
            return _page(400, f"AADSTS700016: Application with identifier '{params.get('client_id')}' was not found.")
        redirect_uri = params.get("redirect_uri", "")
        if not self._redirect_allowed(redirect_uri):
            return _page(
                400,
                "AADSTS50011: The redirect URI specified in the request does not match the redirect "
                "URIs configured for the application.",
            )
        if params.get("response_type") != "code":
            return _redirect(redirect_uri, {"error": "unsupported_response_type", "state": params.get("state", "")})
        method = params.get("code_challenge_method", "plain")
        if params.get("code_challenge") and method not in ("S256", "plain"):
            return _redirect(
                redirect_uri,
                {
                    "error": "invalid_request",
                    "state": params.get("state", ""),
                    "error_description": "AADSTS501491: Invalid code_challenge_method.",
                },
            )
        user = self.auto_approve if request.method == "GET" else params.get("login")
        if user is None:
            return _sign_in_form(params)
        with self._lock:
            account = self.users.get(user.lower())
        if account is None:
            return _page(400, f"AADSTS50034: The user account {user} does not exist in the directory.")
        if tenant_id not in ("{tenantid}", account.tenant_id):
            return _page(
                400,
                f"AADSTS50020: User account '{user}' from identity provider does not exist in tenant "
                f"'{tenant}' and cannot access the application '{self.client_id}' in that tenant.",
            )
        if self.decline_consent:
            declined = {
                "error": "access_denied",
                "error_subcode": "cancel",
                "error_description": "AADSTS65004: User declined to consent to access the app.",
                "state": params.get("state", ""),
            }
            if params.get("response_mode") == "form_post":
                return _form_post(redirect_uri, declined)
            return _redirect(redirect_uri, declined)
        scopes = frozenset(params.get("scope", "").split()) - OIDC_SCOPES - self.withheld_scopes
        grant = _Grant(account.oid, self.client_id, scopes)
        code = "0.A" + secrets.token_urlsafe(48)
        with self._lock:
            challenge = params.get("code_challenge")
            if challenge and method == "plain":
                challenge = _s256(challenge)
            self._codes[code] = _Code(grant, redirect_uri, challenge, params.get("nonce"), scopes)
        answer = {"code": code, "state": params.get("state", ""), "session_state": str(uuid.uuid4())}
        if params.get("response_mode") == "form_post":
            return _form_post(redirect_uri, answer)
        return _redirect(redirect_uri, answer)

    def _redirect_allowed(self, uri: str) -> bool:
        if self.redirect_uris:
            return uri in self.redirect_uris
        parsed = urlparse(uri)
        return parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in ("localhost", "127.0.0.1"))

    # ------------------------------------------------------------ token
    def _token(self, request: Request, base: str) -> Response:
        form = request.form.to_dict()
        if request.authorization and request.authorization.type == "basic":
            form.setdefault("client_id", request.authorization.username or "")
            form.setdefault("client_secret", request.authorization.password or "")
        grant_type = form.get("grant_type", "")
        rt = form.get("refresh_token") if grant_type == "refresh_token" else None
        if form.get("client_id") != self.client_id:
            return self._token_error(
                grant_type,
                rt,
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found.",
            )
        if form.get("client_secret") != self.client_secret:
            return self._token_error(grant_type, rt, 401, "invalid_client", 7000215, "Invalid client secret provided.")
        try:
            with self._lock:
                if grant_type == "refresh_token":
                    grant, scopes, nonce = self._redeem_refresh(form)
                elif grant_type == "authorization_code":
                    grant, scopes, nonce = self._redeem_code(form)
                else:
                    text = f"The app requested an unsupported grant type '{grant_type}'."
                    raise _Refusal("unsupported_grant_type", 70003, text)
                answer = self._issue(grant, scopes, nonce, base, form)
                self.token_calls.append(TokenCall(grant_type, rt, 200))
        except _Refusal as refusal:
            return self._token_error(grant_type, rt, 400, refusal.error, refusal.code, refusal.text)
        return self._json(200, answer, "tokenResponse")

    def _redeem_refresh(self, form: dict[str, str]) -> tuple[_Grant, frozenset[str], str | None]:
        grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None:
            raise _Refusal("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if grant.revoked:
            text = "The provided grant has expired due to it being revoked, a fresh auth token is needed."
            raise _Refusal("invalid_grant", 50173, text)
        if grant.expired:
            raise _Refusal("invalid_grant", 700082, "The refresh token has expired due to inactivity.")
        if self._objects[grant.user].deleted:
            raise _Refusal("invalid_grant", 50034, "The user account does not exist in the directory.")
        wanted = frozenset(form.get("scope", "").split()) - OIDC_SCOPES
        missing = wanted - grant.scopes
        if missing:
            text = f"The user or administrator has not consented to use the application for {sorted(missing)}."
            raise _Refusal("invalid_grant", 65001, text)
        return grant, _one_resource(wanted or grant.scopes), None

    def _redeem_code(self, form: dict[str, str]) -> tuple[_Grant, frozenset[str], str | None]:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            raise _Refusal("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if code.used:
            raise _Refusal("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed.")
        if form.get("redirect_uri") != code.redirect_uri:
            raise _Refusal("invalid_grant", 50148, "The redirect_uri does not match the authorization request.")
        if code.challenge is not None and _s256(form.get("code_verifier", "")) != code.challenge:
            text = "The Code_Verifier does not match the code_challenge supplied in the authorization request."
            raise _Refusal("invalid_grant", 501481, text)
        code.used = True
        wanted = frozenset(form.get("scope", "").split()) - OIDC_SCOPES
        missing = sorted(wanted - code.scopes)
        if missing:
            text = f"The user or administrator has not consented to use the application for {missing}."
            raise _Refusal("invalid_grant", 65001, text)
        return code.grant, _one_resource(wanted or code.scopes), code.nonce

    def _issue(
        self, grant: _Grant, scopes: frozenset[str], nonce: str | None, base: str, form: dict[str, str]
    ) -> dict[str, Any]:
        access = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(48)
        self._access[access] = (grant, time.time() + ACCESS_LIFETIME, scopes)
        user = self._objects[grant.user]
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(sorted(scopes)),
            "expires_in": ACCESS_LIFETIME,
            "ext_expires_in": ACCESS_LIFETIME,
            "access_token": access,
            "refresh_token": self._new_refresh(grant),
        }
        requested = set(form.get("scope", "").split())
        if "openid" in requested:
            answer["id_token"] = self._id_token(user, nonce, base)
        if form.get("client_info") == "1":
            answer["client_info"] = _b64url(json.dumps({"uid": user.oid, "utid": user.tenant_id}).encode())
        return answer

    def _new_refresh(self, grant: _Grant) -> str:
        token = "1.AQ" + secrets.token_urlsafe(96)
        self._refresh[token] = grant
        return token

    def _id_token(self, user: _User, nonce: str | None, base: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": self.client_id,
            "iss": f"{base}/{user.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_LIFETIME,
            "name": user.name,
            "oid": user.oid,
            "preferred_username": user.upn,
            "sub": hashlib.sha256(user.oid.encode()).hexdigest()[:43],
            "tid": user.tenant_id,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        header = {"typ": "JWT", "alg": "none"}  # msal never verifies id_token signatures (it got it over TLS)
        return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}."

    def _token_error(self, grant_type: str, rt: str | None, status: int, error: str, code: int, text: str) -> Response:
        with self._lock:
            self.token_calls.append(TokenCall(grant_type, rt, status, code))
        now = datetime.now(UTC)
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} "
            f"Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
            "error_codes": [code],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%SZ}",
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": "https://login.microsoftonline.com/error?code=" + str(code),
        }
        return self._json(status, body, "tokenError")


def resource_of(scope: str) -> str:
    """The resource a scope belongs to: ``https://outlook.office.com/SMTP.Send`` ->
    ``https://outlook.office.com``; a bare name (``Mail.Read``) is Graph's.

    >>> resource_of("https://graph.microsoft.com/Mail.Send"), resource_of("User.Read")
    ('https://graph.microsoft.com', 'https://graph.microsoft.com')
    """
    return scope.rsplit("/", 1)[0] if "://" in scope else GRAPH


def _one_resource(scopes: frozenset[str]) -> frozenset[str]:
    """``scopes`` when they are all one resource's: Microsoft issues a token for one at a time."""
    if len({resource_of(s) for s in scopes}) > 1:
        text = (
            "Provided value for the input parameter scope is not valid because it contains more than one "
            f"resource. Scope {' '.join(sorted(scopes))} is not valid."
        )
        raise _Refusal("invalid_scope", 28000, text)
    return scopes


def _s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _redirect(uri: str, params: dict[str, str]) -> Response:
    joiner = "&" if urlparse(uri).query else "?"
    return Response(status=302, headers={"Location": uri + joiner + urlencode(params)})


def _form_post(uri: str, params: dict[str, str]) -> Response:
    """response_mode=form_post: a page that posts the answer to the redirect URI."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
    )
    body = (
        '<!DOCTYPE html><html><body onload="document.forms[0].submit()">'
        f'<form method="post" action="{html.escape(uri)}">{hidden}</form></body></html>'
    )
    return Response(body, status=200, content_type="text/html; charset=utf-8")


def _page(status: int, text: str) -> Response:
    body = f"<!DOCTYPE html><title>Sign in to your account</title><p>{html.escape(text)}</p>"
    return Response(body, status=status, content_type="text/html; charset=utf-8")


def _sign_in_form(params: dict[str, str]) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
    )
    body = (
        "<!DOCTYPE html><title>Sign in to your account</title>"
        f'<form method="post">{hidden}<label>Email <input name="login" type="email"></label>'
        '<button type="submit">Accept</button></form>'
    )
    return Response(body, status=200, content_type="text/html; charset=utf-8")


__all__ = ["GRAPH_SCOPES", "SMTP_SCOPE", "IdentityStandIn", "TokenCall", "resource_of"]
