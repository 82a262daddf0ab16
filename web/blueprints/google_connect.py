"""Connect a Gmail mailbox: ``GET /connect/google`` → Google's consent → ``GET /connect/google/callback``.

The views are thin: :mod:`services.google_consent` talks to Google,
:func:`services.accounts.add_gmail_account` stores the account (tokens sealed). What
must survive the round trip through Google — the ``state`` and the PKCE code
verifier — waits in Flask's signed session cookie, and is used once. Every
failure answers 400 (503 when Gmail connect is not configured) with one sentence,
as HTML for a browser or ``{"error": "..."}`` for a client that asks for JSON;
success answers ``{"id": N, "email": "...", "status": "active", "message": "..."}`` (``status``
"disabled" when an administrator disabled the account) or a small page with the message.

Connecting an address that already has a Gmail account reconnects it: the new
refresh token replaces the old one and the account is ``active`` and due at once,
unless an administrator disabled it, which reconnecting never undoes (the answer says so).
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, current_app, redirect, request, session, url_for

from postroom.errors import AccountError
from services import google_consent
from services.accounts import add_gmail_account
from web.answers import answer, connected
from web.auth import org_id

bp = Blueprint("google_connect", __name__)
log = logging.getLogger("postroom.web")
_PENDING = "google_connect"
DENIED = "You declined access in Google's consent screen, so no mailbox was connected."
STALE = "This sign-in has expired or was started in another browser; please start again from Connect Gmail."


def _fail(sentence: str, status: int = 400) -> Response:
    return answer(status, "Gmail was not connected", sentence, {"error": sentence})


def _redirect_uri() -> str:
    return url_for("google_connect.callback", _external=True)


@bp.get("/connect/google")
def start() -> Response:
    config = current_app.extensions["postroom"]["config"]
    try:
        consent = google_consent.start(config.google, _redirect_uri())
    except google_consent.ConnectError as exc:
        return _fail(str(exc), 503)
    session[_PENDING] = {"state": consent.state, "code_verifier": consent.code_verifier}
    return redirect(consent.url)  # type: ignore[return-value]


@bp.get("/connect/google/callback")
def callback() -> Response:
    ext = current_app.extensions["postroom"]
    config, sessions = ext["config"], ext["sessions"]
    pending = session.pop(_PENDING, None)
    error = request.args.get("error")
    if error == "access_denied":
        return _fail(DENIED)
    if error:
        return _fail(f"Google refused the request ({error}); please start again from Connect Gmail.")
    state = request.args.get("state", "")
    if not isinstance(pending, dict) or not hmac.compare_digest(state, str(pending.get("state", ""))):
        return _fail(STALE)
    code = request.args.get("code")
    if not code:
        return _fail("Google sent no authorization code; please start again from Connect Gmail.")
    try:
        grant = google_consent.finish(
            config.google, _redirect_uri(), code, str(pending["code_verifier"]), config.sync.connect_timeout
        )
        with sessions.begin() as s:
            account = add_gmail_account(
                s,
                config,
                grant.email,
                grant.refresh_token,
                access_token=grant.access_token,
                token_expiry=grant.expiry,
                reconnect=True,
                smtp_submission=grant.smtp_submission,
                org_id=org_id(),
            )
            account_id, email, status = account.id, account.email, account.status
    except (google_consent.ConnectError, AccountError) as exc:
        return _fail(str(exc))
    log.info("connected Gmail mailbox %s (%s)", email, status, extra={"account_id": account_id})
    return connected("Gmail", account_id, email, status)
