"""``/connect``: connecting a mailbox — Google and Microsoft 365 through their consent flows
(:mod:`web.blueprints.google_connect`, :mod:`web.blueprints.microsoft_connect`), or IMAP/SMTP
in two steps:

1. the address and password (``POST /connect/imap``): the servers are guessed from the address
   (:func:`services.imap_connect.guess_imap_settings`: the built-in table of big providers, the
   domain's MX records, its autoconfig document, the ``imap.``/``mail.``/``smtp.`` host names,
   each probed with a short timeout);
2. the guess, pre-filled for the user to confirm or correct, saying where it came from and
   whether each server answered (``POST /connect/imap/save``): the account is stored in the
   signed-in user's organisation (:func:`services.accounts.add_imap_account`) and the user goes
   to ``/mailboxes``, where its initial sync shows its progress.

A mistake is shown next to the field it concerns; the password is never stored before step 2.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from postroom.errors import AccountError, UserError
from services.accounts import SECURITY_MODES, ImapAccountRequest, add_imap_account
from services.imap_connect import guess_imap_settings
from services.mail_settings import SettingsGuess, Source
from web.auth import org_id
from web.form_errors import form_errors

bp = Blueprint("connect", __name__)

LABELS = {
    "email": "Email address",
    "password": "Password",
    "username": "Username",
    "imap_host": "IMAP server",
    "imap_port": "IMAP port",
    "imap_security": "IMAP security",
    "smtp_host": "SMTP server",
    "smtp_port": "SMTP port",
    "smtp_security": "SMTP security",
}
SOURCES = {
    Source.KNOWN_PROVIDER: "Postroom's table of well-known providers",
    Source.MX: "the domain's MX records, which point at a provider Postroom knows",
    Source.AUTOCONFIG: "the domain's own autoconfig document",
    Source.COMMON_NAMES: "the usual server names (imap., mail., smtp.) that answered",
}


@bp.get("/connect")
def index() -> str:
    return render_template("connect/index.html", errors={}, values={})


@bp.post("/connect/imap")
def guess() -> tuple[str, int]:
    """Step 1 → 2: guess the servers of the address and show them for confirming."""
    address, password = request.form.get("email", "").strip(), request.form.get("password", "")
    try:
        found = guess_imap_settings(current_app.extensions["postroom"]["config"], address)
    except UserError as exc:
        return render_template("connect/index.html", errors=form_errors(exc, LABELS), values={"email": address}), 400
    return _step2(_prefill(found, address, password), {}, found), 200


@bp.post("/connect/imap/save")
def save() -> str | Response | tuple[str, int]:
    """Step 2: store the account as confirmed, then show the mailboxes."""
    values = {name: request.form.get(name, "").strip() for name in LABELS if name != "password"}
    values["password"] = request.form.get("password", "")
    ext = current_app.extensions["postroom"]
    try:
        req = ImapAccountRequest(
            email=values["email"],
            username=values["username"] or values["email"],
            password=values["password"],
            imap_host=_host(values["imap_host"], "imap_host"),
            imap_port=_port(values["imap_port"], "imap_port"),
            imap_security=values["imap_security"],
            smtp_host=_host(values["smtp_host"], "smtp_host"),
            smtp_port=_port(values["smtp_port"], "smtp_port"),
            smtp_security=values["smtp_security"],
            org_id=org_id(),
        )
        if not req.password:
            raise AccountError("Enter the mailbox's {password}.", "password")
        with ext["sessions"].begin() as s:
            email = add_imap_account(s, ext["config"], req).email
    except UserError as exc:
        return _step2(values, form_errors(exc, LABELS)), 400
    flash(f"{email} is connected; Postroom is syncing it now.", "ok")
    return redirect(url_for("mailboxes.index"))


def _step2(values: dict[str, str], errors: dict[str, str], found: SettingsGuess | None = None) -> str:
    source = _source(found) if found else None
    return render_template(
        "connect/imap.html", guess=found, source=source, values=values, errors=errors, modes=SECURITY_MODES
    )


def _prefill(found: SettingsGuess, address: str, password: str) -> dict[str, str]:
    imap, smtp = found.imap, found.smtp
    return {
        "email": address,
        "password": password,
        "username": found.username or address,
        "imap_host": imap.host if imap else "",
        "imap_port": str(imap.port) if imap else "993",
        "imap_security": imap.security if imap else "ssl",
        "smtp_host": smtp.host if smtp else "",
        "smtp_port": str(smtp.port) if smtp else "587",
        "smtp_security": smtp.security if smtp else "starttls",
    }


def _source(found: SettingsGuess) -> str:
    """Where the guess came from, in one sentence."""
    if found.source == Source.NONE:
        return "Postroom could not find this address's servers; fill them in from your provider's help pages."
    where = SOURCES.get(found.source, str(found.source))
    return f"Found in {where}" + (f" ({found.provider})." if found.provider else ".")


def _host(value: str, field: str) -> str:
    if not value:
        raise AccountError(f"Enter the {{{field}}}, such as mail.example.com.", field)
    return value


def _port(value: str, field: str) -> int:
    if not value.isdigit():
        raise AccountError(f"The {{{field}}} must be a number such as 993, not {value!r}.", field)
    return int(value)
