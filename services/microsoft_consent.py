"""Microsoft's consent for connecting a Microsoft 365 mailbox, on the real msal.

Two steps, one per request of the connect flow (:mod:`web.blueprints.microsoft_connect`):

1. :func:`start` asks msal's ``ConfidentialClientApplication.initiate_auth_code_flow``
   for the sign-in URL: authorization code with PKCE (S256) and an OpenID nonce, both
   made by msal. The flow dict msal hands back (state, code verifier, nonce, redirect
   URI, scopes) is what must survive the round trip. Microsoft answers with
   ``response_mode=form_post`` (msal's recommendation, RFC 9700 §4.3.1: the code never
   appears in a URL, so not in browser history, proxy logs or Referer headers); that
   answer is a cross-site POST, which browsers send without ``SameSite=Lax`` cookies, so
   the blueprint keeps the flow in a cookie of its own (see there).
2. :func:`finish` hands msal the flow and the posted answer. msal checks the state
   (a mismatch raises ``ValueError``) and the nonce, redeems the code with the PKCE
   verifier, and Postroom then asks Graph ``/me`` for the mailbox's address.

Who signed in is the ID token's ``tid`` (the tenant, immutable) and ``oid`` (the user's
object id in that tenant: immutable, never reused), never the ``mail`` attribute, which
an administrator can change and, once freed, give to someone else (Microsoft's "ID token
claims reference": use ``oid`` and ``tid`` to identify a user). Since msal 1.38 the
``id_token_claims`` msal returns are decoded, not validated, apart from the nonce (msal
issue #911): the ID token came straight from the token endpoint over TLS, which OpenID
Connect Core §3.1.3.7 (6) accepts in place of its signature. :func:`signed_in_user` makes
the remaining checks that matter here: the audience is this app, the issuer names the
same tenant as ``tid``, both ids are GUIDs, and the tenant is one of
``microsoft.allowed_tenants`` (when set) — before Postroom calls Graph or stores anything.

Scopes (delegated permissions on Microsoft Graph), the fewest that let Postroom work:

* ``Mail.ReadWrite`` — read messages and folders (sync: delta queries, ``$value``),
  create the one canonical Sent copy and move messages;
* ``Mail.Send`` — send as the recruiter (``sendMail``);
* ``User.Read`` — read the signed-in user's profile: ``mail`` is the address of the
  mailbox, which may differ from the sign-in name (``preferred_username`` is the UPN).
* ``offline_access`` (a refresh token, so workers sync while nobody is signed in),
  ``openid`` and ``profile`` are added by msal itself, which refuses them as input.

Not ``Mail.ReadWrite.Shared``/``Mail.Send.Shared`` (other people's mailboxes) and no
application permissions: Postroom acts only for the recruiter who connected.

With ``microsoft.smtp_send`` (an opt-in, docs/microsoft.md) the sign-in also asks for
``https://outlook.office.com/SMTP.Send``: Exchange Online's SMTP AUTH submission, a resource
of its own, so tracked sends can go over SMTP. The identity platform consents to several
resources in one sign-in but issues a token for one resource at a time; this is msal's
"extra scopes to consent" (``acquire_token_interactive(extra_scopes_to_consent=...)``, which
``initiate_auth_code_flow`` lacks): the authorization request names both resources, the code
is redeemed for the Graph scopes only, and the refresh token is then asked once for an
``SMTP.Send`` token. If that works the grant includes SMTP sending and the account is stored
with ``smtp_submission`` on (:attr:`MicrosoftGrant.smtp_submission`); if the organisation
withheld it, the mailbox still connects, with tracked sends over Graph.

msal speaks https only and reads ``REQUESTS_CA_BUNDLE`` over ``Session.verify``; with
``microsoft.ca_file`` set, the backends' :class:`providers.common.http.MsalHttp` passes the
CA on every request instead (msal's requests and the Graph ``/me`` call alike).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests

from postroom.config import MicrosoftConfig
from postroom.errors import UserError
from providers.common.http import MsalHttp

GRAPH = "https://graph.microsoft.com/"
SCOPES = (GRAPH + "Mail.ReadWrite", GRAPH + "Mail.Send", GRAPH + "User.Read")
SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"  # Exchange Online's SMTP AUTH: another resource
NEEDED = {"mail.readwrite", "mail.send"}  # without these there is nothing to sync or send
log = logging.getLogger(__name__)
DENIED = "You declined access in Microsoft's consent screen, so no mailbox was connected."
STALE = "This sign-in has expired or was started in another browser; please start again from Connect Microsoft 365."


class ConnectError(UserError):
    """The consent flow cannot go on; the message says why in one sentence."""


@dataclass(frozen=True)
class Consent:
    """Where to send the browser, and what to keep in the session until it comes back."""

    url: str
    flow: dict[str, Any]


@dataclass(frozen=True)
class SignedInUser:
    """Who signed in, by Microsoft's immutable ids (lower-case GUIDs)."""

    tenant_id: str  # the ID token's tid
    object_id: str  # the ID token's oid


@dataclass(frozen=True)
class MicrosoftGrant:
    email: str
    refresh_token: str
    access_token: str
    expiry: datetime
    user: SignedInUser
    smtp_submission: bool = False  # the grant also yields SMTP.Send tokens (microsoft.smtp_send)


def _app(ms: MicrosoftConfig, http: MsalHttp) -> Any:
    import msal

    if not (ms.client_id and ms.client_secret):
        raise ConnectError(
            "Connecting Microsoft 365 is not set up: set microsoft.client_id and microsoft.client_secret "
            "(see docs/microsoft.md)."
        )
    try:  # msal reads the authority's OpenID configuration here
        return msal.ConfidentialClientApplication(
            ms.client_id,
            client_credential=ms.client_secret,
            authority=ms.authority,
            http_client=http,
            instance_discovery=None if ms.instance_discovery else False,
        )
    except requests.RequestException as exc:
        raise ConnectError(f"Microsoft's sign-in service could not be reached: {exc.__class__.__name__}.") from None
    except ValueError:
        raise ConnectError(f"Microsoft's sign-in service does not know the authority {ms.authority}.") from None


def start(ms: MicrosoftConfig, redirect_uri: str, timeout: float) -> Consent:
    with requests.Session() as session:
        app = _app(ms, MsalHttp(session, ms.ca_file, timeout))
        asked = [*SCOPES, SMTP_SCOPE] if ms.smtp_send else list(SCOPES)
        flow = dict(
            app.initiate_auth_code_flow(
                asked, redirect_uri=redirect_uri, response_mode="form_post", prompt="select_account"
            )
        )
    url = str(flow.pop("auth_uri"))  # the rest is what acquire_token_by_auth_code_flow needs back
    return Consent(url, flow)


def finish(ms: MicrosoftConfig, flow: dict[str, Any], response: dict[str, str], timeout: float) -> MicrosoftGrant:
    """Redeem the code msal checked the state of, check the permissions, learn the address."""
    with requests.Session() as session:
        http = MsalHttp(session, ms.ca_file, timeout)
        app = _app(ms, http)
        smtp_asked = SMTP_SCOPE in (flow.get("scope") or [])
        try:  # a token for Graph only: one resource per token (SMTP.Send is asked for below)
            result = app.acquire_token_by_auth_code_flow(flow, response, scopes=list(SCOPES))
        except (ValueError, RuntimeError):  # state or nonce mismatch, or neither code nor error
            raise ConnectError(STALE) from None
        except requests.RequestException as exc:
            raise ConnectError(f"Microsoft's token endpoint could not be reached: {exc.__class__.__name__}.") from None
        if "error" in result:
            raise ConnectError(_refusal(result))
        scope = result.get("scope") or ""
        granted = {s.rsplit("/", 1)[-1].lower() for s in (scope.split() if isinstance(scope, str) else scope)}
        if NEEDED - granted:
            raise ConnectError(
                "Postroom needs permission to read and send the mailbox's mail; "
                "connect again and accept every permission it asks for."
            )
        if not result.get("refresh_token"):
            raise ConnectError("Microsoft issued no refresh token, so Postroom could not sync later; connect again.")
        user = signed_in_user(ms, result.get("id_token_claims"))
        access_token = str(result["access_token"])
        email = mailbox_address(ms, http, access_token)
        refresh_token, smtp = str(result["refresh_token"]), False
        if smtp_asked:
            refresh_token, smtp = _smtp_granted(app, refresh_token)
    expiry = datetime.now(UTC) + timedelta(seconds=int(result.get("expires_in", 3600)))
    return MicrosoftGrant(email, refresh_token, access_token, expiry, user, smtp)


def _smtp_granted(app: Any, refresh_token: str) -> tuple[str, bool]:
    """Whether the refresh token yields an ``SMTP.Send`` token (the user's organisation may have
    withheld it), and the newest refresh token (Microsoft issues one with every redemption)."""
    try:
        result = app.acquire_token_by_refresh_token(refresh_token, scopes=[SMTP_SCOPE])
    except requests.RequestException as exc:
        log.warning("could not learn whether SMTP.Send was granted (%s); tracked sends will use Graph", exc)
        return refresh_token, False
    if "access_token" not in result:
        log.info("SMTP.Send was not granted (%s); tracked sends will use Graph", result.get("error"))
        return refresh_token, False
    return str(result.get("refresh_token") or refresh_token), True


def signed_in_user(ms: MicrosoftConfig, claims: object) -> SignedInUser:
    """The tenant and user of msal's ``id_token_claims``, checked (see the module docstring):
    ``{"aud": client_id, "iss": "https://login.microsoftonline.com/<tid>/v2.0", "tid": <tid>,
    "oid": <oid>, ...}`` gives ``SignedInUser(tenant_id=<tid>, object_id=<oid>)``."""
    if not isinstance(claims, dict):
        raise ConnectError("Microsoft's answer did not say who signed in (no ID token); please connect again.")
    tenant_id, object_id = _guid(claims.get("tid")), _guid(claims.get("oid"))
    issuer = urlsplit(str(claims.get("iss") or "")).path.strip("/").split("/")[0]
    if claims.get("aud") != ms.client_id or tenant_id is None or object_id is None or _guid(issuer) != tenant_id:
        raise ConnectError("Microsoft's ID token is not for Postroom or does not name your organisation and account.")
    if ms.allowed_tenants and tenant_id not in ms.allowed_tenants:
        raise ConnectError(
            f"Your Microsoft 365 organisation (tenant {tenant_id}) may not connect mailboxes to Postroom; "
            "an administrator can add it to microsoft.allowed_tenants."
        )
    return SignedInUser(tenant_id, object_id)


def _guid(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, str) and len(value) == 36 else None
    except ValueError:
        return None


def _refusal(result: dict[str, Any]) -> str:
    error = str(result.get("error"))
    if error == "access_denied":
        return DENIED
    codes = result.get("error_codes") or []
    description = str(result.get("error_description") or "")
    code = f"AADSTS{codes[0]}" if codes else description.split(":", 1)[0] if description.startswith("AADSTS") else ""
    return f"Microsoft did not accept the sign-in ({error}{', ' + code if code else ''}); please connect again."


def mailbox_address(ms: MicrosoftConfig, http: MsalHttp, access_token: str) -> str:
    """The primary SMTP address of the signed-in user's mailbox (Graph ``/me``, ``User.Read``)."""
    try:
        resp = http.get(
            f"{ms.graph_root}/me",
            params={"$select": "mail,userPrincipalName"},
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
    except requests.RequestException as exc:
        raise ConnectError(f"Microsoft Graph could not be reached: {exc.__class__.__name__}.") from None
    if resp.status_code != 200:
        raise ConnectError(f"Microsoft Graph did not tell Postroom the mailbox's address ({resp.status_code}).")
    me = resp.json()
    if not me.get("mail"):
        who = me.get("userPrincipalName") or "This account"
        raise ConnectError(f"{who} has no Exchange Online mailbox, so there is nothing for Postroom to sync.")
    return str(me["mail"])
