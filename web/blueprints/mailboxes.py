"""``/mailboxes``: the organisation's mailboxes — provider, health, last good sync, lag, the last
error in one sentence, a *Reconnect* button where the mailbox needs one — and the progress of an
initial sync, live.

While some mailbox's initial sync runs, the table re-reads itself from ``/mailboxes/live`` every
two seconds (htmx polling; the fragment stops asking once no initial sync is left), so the
numbers ("1,240 of 10,000 messages, 2 of 7 folders") move as the engine records them
(:mod:`services.progress`).

Reconnecting: Gmail and Microsoft 365 mailboxes go through their consent flows again
(``/connect/google``, ``/connect/microsoft``); an IMAP mailbox takes its new password here
(:func:`services.accounts.reconnect_imap`).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from postroom.errors import AccountError
from postroom.models import utcnow
from postroom.states import SCHEDULED, AccountStatus
from services.accounts import AccountHealth, NoSuchAccount, account_status, reconnect_imap
from services.progress import AccountProgress, account_progress
from web.auth import org_id
from web.form_errors import form_errors

bp = Blueprint("mailboxes", __name__)

# the provider names accounts store (providers.registry), as people call them
PROVIDERS = {"imap": "IMAP/SMTP", "gmail": "Gmail", "graph": "Microsoft 365", "ews": "Exchange (EWS)"}
CONSENT = {"gmail": "google_connect.start", "graph": "microsoft_connect.start"}  # reconnect by signing in again


@dataclass(frozen=True)
class Row:
    """One mailbox as the page shows it."""

    health: AccountHealth
    progress: AccountProgress | None  # set while its initial sync runs
    provider: str
    lag: str
    problem: str | None
    reconnect_url: str | None


@bp.get("/mailboxes")
def index() -> str:
    return render_template("mailboxes/index.html", rows=_rows())


@bp.get("/mailboxes/live")
def live() -> str:
    """The mailboxes table alone, for the page to poll while an initial sync runs."""
    return render_template("mailboxes/_table.html", rows=_rows())


@bp.route("/mailboxes/<int:account_id>/reconnect", methods=["GET", "POST"])
def reconnect(account_id: int) -> str | Response:
    """An IMAP mailbox's new password (the server refused the old one)."""
    with current_app.extensions["postroom"]["sessions"]() as s:
        mine = account_status(s, utcnow(), org_id())
    health = next((a for a in mine if a.id == account_id and a.provider == "imap"), None)
    if health is None:
        abort(404)
    errors: dict[str, str] = {}
    if request.method == "POST":
        ext = current_app.extensions["postroom"]
        try:
            with ext["sessions"].begin() as s:
                account = reconnect_imap(s, ext["config"], org_id(), account_id, request.form.get("password", ""))
                email, status = account.email, account.status
        except NoSuchAccount:
            abort(404)
        except AccountError as exc:
            errors = form_errors(exc, {"password": "Password"})
        else:
            if status == AccountStatus.DISABLED:
                flash(f"{email} has its new password, but an administrator has disabled it, so it is not synced.", "ok")
            else:
                flash(f"{email} has its new password; Postroom syncs it again now.", "ok")
            return redirect(url_for("mailboxes.index"))
    status_code = 400 if errors else 200
    return render_template("mailboxes/reconnect.html", account=health, errors=errors), status_code  # type: ignore[return-value]


def _rows() -> list[Row]:
    with current_app.extensions["postroom"]["sessions"]() as s:
        org = org_id()
        accounts = account_status(s, utcnow(), org)
        progress = {p.account_id: p for p in account_progress(s, org)}
    rows = []
    for a in accounts:
        p = progress.get(a.id)
        running = p is not None and p.initial and a.status in SCHEDULED
        provider = PROVIDERS.get(a.provider, a.provider)
        rows.append(Row(a, p if running else None, provider, _duration(a.lag_seconds), _problem(a), _reconnect_url(a)))
    return rows


def _reconnect_url(a: AccountHealth) -> str | None:
    """Where the *Reconnect* button leads, for a mailbox whose server refused the sign-in."""
    if a.status != AccountStatus.RECONNECT_NEEDED:
        return None
    if a.provider == "imap":
        return url_for("mailboxes.reconnect", account_id=a.id)
    endpoint = CONSENT.get(a.provider)
    return url_for(endpoint) if endpoint and endpoint in current_app.view_functions else None


def _problem(a: AccountHealth) -> str | None:
    """The last error in one sentence a recruiter can act on, with the server's own words."""
    if not a.last_error:
        return None
    detail = a.last_error.partition(": ")[2] if a.last_error_class and ": " in a.last_error else a.last_error
    detail = detail.strip().rstrip(".")[:300]
    if a.status == AccountStatus.RECONNECT_NEEDED or a.last_error_class == "AuthError":
        return f"The mail server refused Postroom's sign-in ({detail}); reconnect the mailbox to sync it again."
    if a.last_error_class == "TransientError":
        return f"The mail server could not be reached ({detail}); Postroom tries again by itself."
    if a.last_error_class == "ConfigurationError":
        return f"The mailbox's settings do not work ({detail}); connect it again with the right settings."
    return f"The last sync had a problem ({detail}); Postroom tries again at the next sync."


def _duration(seconds: float) -> str:
    """``seconds`` as a person says it: "under a minute", "5 minutes", "3 hours", "2 days"."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute"
    n, unit = (
        (minutes, "minute")
        if minutes < 120
        else (minutes // 60, "hour")
        if minutes < 2880
        else (minutes // 1440, "day")
    )
    return f"{n} {unit}{'' if n == 1 else 's'}"
