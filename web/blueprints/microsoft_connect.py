"""Connect a Microsoft 365 mailbox: ``GET /connect/microsoft`` → Microsoft's sign-in and consent →
``POST /connect/microsoft/callback``.

The connect flow chooses Microsoft Graph for Microsoft 365 accounts; Exchange mailboxes
reached through EWS (on-premises Exchange Server) are added with their server URL and
credentials instead (``postroom accounts add-ews``).

The views are thin: :mod:`services.microsoft_consent` talks to Microsoft through msal,
:func:`services.accounts.add_graph_account` stores the account (tokens sealed). msal's flow
dict — state, PKCE code verifier, nonce — waits in a cookie of its own, signed with the
app's key and valid for ten minutes, sent only to the callback and used once. Microsoft
posts its answer to the callback (``form_post``), a cross-site POST, so that cookie is
``SameSite=None; Secure`` (the Flask session cookie is ``Lax`` and would not come
along); the state msal checks is what ties the answer to this browser's sign-in.
Every failure answers 400 (503 when Microsoft connect is not set up or the sign-in
service is unreachable) with one sentence, as HTML for a browser or ``{"error": "..."}``
for a client that asks for JSON; success answers ``{"id": N, "email": "...", "status":
"active", "message": "..."}`` (``status`` "disabled" when an administrator disabled the
account) or a small page with the message.

The account is the signed-in user's: :func:`services.microsoft_consent.finish` reads the
ID token's tenant and object id (``tid``, ``oid``) and refuses a tenant outside
``microsoft.allowed_tenants``; :func:`services.accounts.add_graph_account` finds the account by
those ids, not by the ``mail`` attribute. Connecting again reconnects it, even after an
administrator changed the user's address (the account takes the new one): the new refresh
token replaces the old one and the account is ``active`` and due at once, unless an
administrator disabled it, which reconnecting never undoes (the answer says so). An
address whose account belongs to another user (other ids) is refused.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from postroom.errors import AccountError
from services import microsoft_consent
from services.accounts import add_graph_account
from web.answers import answer, connected
from web.auth import csrf, org_id

bp = Blueprint("microsoft_connect", __name__)
log = logging.getLogger("postroom.web")
PENDING_COOKIE = "postroom_microsoft_connect"
PENDING_SECONDS = 600  # time to sign in and consent


def _fail(sentence: str, status: int = 400) -> Response:
    return answer(status, "Microsoft 365 was not connected", sentence, {"error": sentence})


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="postroom microsoft connect")  # type: ignore[arg-type]


def _callback_path() -> str:
    return url_for("microsoft_connect.callback")


@bp.get("/connect/microsoft")
def start() -> Response:
    config = current_app.extensions["postroom"]["config"]
    redirect_uri = url_for("microsoft_connect.callback", _external=True)
    try:
        consent = microsoft_consent.start(config.microsoft, redirect_uri, config.sync.connect_timeout)
    except microsoft_consent.ConnectError as exc:
        return _fail(str(exc), 503)
    response = redirect(consent.url)
    response.set_cookie(
        PENDING_COOKIE,
        _signer().dumps({"flow": consent.flow, "org": org_id()}),
        max_age=PENDING_SECONDS,
        path=_callback_path(),
        secure=True,
        httponly=True,
        samesite="None",
    )
    return response  # type: ignore[return-value]


def _pending() -> tuple[dict[str, object], int] | None:
    """The flow started by a signed-in user, and their organisation, from the signed cookie."""
    try:
        pending = _signer().loads(request.cookies.get(PENDING_COOKIE, ""), max_age=PENDING_SECONDS)
    except BadSignature:  # missing, forged or expired
        return None
    if not isinstance(pending, dict) or not isinstance(pending.get("flow"), dict):
        return None
    return pending["flow"], int(pending["org"])


@bp.post("/connect/microsoft/callback")
@csrf.exempt  # a cross-site form post from Microsoft: the state in the signed pending cookie protects it
def callback() -> Response:
    """Microsoft posts the answer here (``response_mode=form_post``). The browser sends no
    ``SameSite=Lax`` session cookie with a cross-site POST, so who started the flow, and in
    which organisation, travels in the pending cookie, signed when the signed-in user started
    it; this endpoint is public in :mod:`web.auth` for that reason and never touches the session."""
    response = _connect()
    response.delete_cookie(PENDING_COOKIE, path=_callback_path(), secure=True, httponly=True, samesite="None")
    return response


def _connect() -> Response:
    ext = current_app.extensions["postroom"]
    config, sessions = ext["config"], ext["sessions"]
    pending = _pending()
    if pending is None:
        return _fail(microsoft_consent.STALE)
    flow, org = pending
    try:
        grant = microsoft_consent.finish(config.microsoft, flow, request.form.to_dict(), config.sync.connect_timeout)
        with sessions.begin() as s:
            account = add_graph_account(
                s,
                config,
                grant.email,
                grant.refresh_token,
                access_token=grant.access_token,
                token_expiry=grant.expiry,
                reconnect=True,
                smtp_submission=grant.smtp_submission,
                org_id=org,
                tenant_id=grant.user.tenant_id,
                object_id=grant.user.object_id,
            )
            account_id, email, status = account.id, account.email, account.status
    except (microsoft_consent.ConnectError, AccountError) as exc:
        return _fail(str(exc))
    log.info("connected Microsoft 365 mailbox %s (%s)", email, status, extra={"account_id": account_id})
    return connected("Microsoft 365", account_id, email, status)
