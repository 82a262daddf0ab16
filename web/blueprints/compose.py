"""``/compose``: write and send a message — from one of the organisation's mailboxes, to To/Cc/Bcc,
written in Markdown or made from a template with its JSON data, tracked or not, optionally with
an interview invitation — as ``postroom send`` does (:func:`services.sending.send_message`:
queued with its Message-IDs first, then sent at once).

``/compose?reply_to=<email id>`` answers a message, ``/compose?applicant=<id>`` writes to an
applicant (:func:`services.drafts.compose_form`). While the user types, the form posts itself to
``/compose/preview`` (htmx), which renders the message exactly as sending would
(:func:`services.sending.preview_message`) and shows it in a sandboxed frame. After sending,
one sentence says what happened — for a tracked send, also how the copies went out (one SMTP
transaction per recipient, or one copy per recipient through the provider's API).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from postroom.errors import OutboxError, UserError
from postroom.safe_html import sanitize_mail_html, srcdoc_document
from postroom.states import OutboxStatus, SendMode
from services.drafts import ComposeForm, Draft, NothingToAnswer, compose_form
from services.sending import Invite, SendOutcome, SendRequest, preview_message, send_message
from web.auth import org_id
from web.form_errors import form_errors

bp = Blueprint("compose", __name__)

LABELS = {
    "account": "From",
    "to": "To",
    "cc": "Cc",
    "bcc": "Bcc",
    "subject": "Subject",
    "body": "Message",
    "template": "Template",
    "data": "Template data",
    "track": "Track opens and clicks",
    "applicant": "Applicant",
    "invite_start": "Interview starts",
    "invite_end": "Interview ends",
    "invite_timezone": "Time zone",
    "invite_location": "Location",
}
_SPLIT = re.compile(r"[,;\s]+")


@bp.get("/compose")
def index() -> str:
    reply_to, applicant = request.args.get("reply_to"), request.args.get("applicant")
    try:
        with current_app.extensions["postroom"]["sessions"]() as s:
            form = compose_form(s, org_id(), reply_to=_id(reply_to), applicant_id=_id(applicant))
    except NothingToAnswer:
        abort(404)
    values = _draft_values(form.draft) | {"template": request.args.get("template", "")}  # "Compose with it"
    return _page(form, values, {})


@bp.post("/compose/preview")
def preview() -> str:
    """The message as it would be sent, for the page's preview pane (an htmx fragment)."""
    ext = current_app.extensions["postroom"]
    if not request.form.get("template") and not request.form.get("body", "").strip():
        return render_template("compose/_preview.html", hint="Write the message, or choose a template, to see it here.")
    try:
        req = _request(request.form, org_id(), preview=True)
        with ext["sessions"]() as s:
            shown = preview_message(s, ext["config"], req)
    except UserError as exc:
        return render_template("compose/_preview.html", error=next(iter(form_errors(exc, LABELS).values())))
    document = srcdoc_document(sanitize_mail_html(shown.html, proxy=None).html, allow_images_from=None)
    return render_template("compose/_preview.html", subject=shown.subject, document=document, text=shown.text)


@bp.post("/compose")
def send() -> str | Response | tuple[str, int]:
    ext = current_app.extensions["postroom"]
    try:
        req = _request(request.form, org_id())
        outcome = send_message(ext["config"], ext["sessions"], req)
    except UserError as exc:
        with ext["sessions"]() as s:
            form = compose_form(s, org_id())
        return _page(form, request.form.to_dict(), form_errors(exc, LABELS)), 400
    ok, sentence = outcome_sentence(outcome)
    flash(sentence, "ok" if ok else "error")
    return redirect(url_for("outbox_ui.index"))


def outcome_sentence(outcome: SendOutcome) -> tuple[bool, str]:
    """Whether the message went out, and what happened in one sentence."""
    e = outcome.entry
    who = ", ".join(outcome.recipients)
    if e.status == OutboxStatus.SENT:
        if outcome.tracked and outcome.mode == SendMode.SMTP:
            how = ", tracked: one SMTP transaction per recipient, every copy with the same visible headers"
        elif outcome.tracked and outcome.mode == SendMode.API:
            how = ", tracked: one copy per recipient through the provider's API, each naming only its recipient"
        else:
            how = ""
        refused = f"; the server refused {', '.join(e.refused)}" if e.refused else ""
        return True, f"Sent “{e.subject}” to {who}{how}{refused}."
    if e.status == OutboxStatus.UNCERTAIN:
        return False, (
            f"“{e.subject}” may have gone out although the server's answer was lost ({e.error}), so it is not sent "
            "again: check it in the outbox."
        )
    if e.status == OutboxStatus.FAILED:
        return False, f"“{e.subject}” was refused and not sent: {e.error}."
    return False, f"“{e.subject}” could not be sent yet ({e.error}); it waits in the outbox and is tried again."


def _page(form: ComposeForm, values: Mapping[str, str], errors: dict[str, str]) -> str:
    g.csp_inline_styles = True  # the preview frame's document carries the layout's inline styles
    zones = sorted(available_timezones())
    return render_template("compose/index.html", form=form, values=values, errors=errors, zones=zones)


def _draft_values(draft: Draft) -> dict[str, str]:
    return {
        "account": str(draft.account_id or ""),
        "to": ", ".join(draft.to),
        "cc": ", ".join(draft.cc),
        "subject": draft.subject,
        "in_reply_to": draft.in_reply_to or "",
        "applicant": str(draft.applicant_id or ""),
        "about": draft.about or "",
    }


def _id(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        abort(404)
    return int(value)


def _request(form: MultiDict[str, str], org: int, *, preview: bool = False) -> SendRequest:
    """The form as a :class:`SendRequest`; input that cannot mean anything is an OutboxError
    naming its field. A chosen template takes no subject or body of its own."""
    account = form.get("account", "")
    if not account.isdigit():
        raise OutboxError("Choose the mailbox to send from ({account}); connect one first if there is none.", "account")
    template = form.get("template", "").strip() or None
    subject, body = form.get("subject", ""), form.get("body", "")
    return SendRequest(
        account_id=int(account),
        to=_addresses(form.get("to", "")),
        cc=_addresses(form.get("cc", "")),
        bcc=_addresses(form.get("bcc", "")),
        subject=None if template and not subject.strip() else subject,
        text=None if template and not body.strip() else body,
        template=template,
        data=_data(form.get("data", "")) if template else None,
        applicant_id=int(form["applicant"]) if form.get("applicant", "").isdigit() else None,
        track=form.get("track") == "on",
        in_reply_to=form.get("in_reply_to") or None,
        invite=None if preview else _invite(form),
        org_id=org,
    )


def _addresses(text: str) -> list[str]:
    return [a for a in _SPLIT.split(text) if a]


def _data(text: str) -> dict[str, object]:
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutboxError(f"The {{data}} is not JSON: {exc.msg} on line {exc.lineno}.", "data") from None
    if not isinstance(data, dict):
        raise OutboxError('The {data} must be a JSON object, such as {"role": "Data Engineer"}.', "data")
    return data


def _invite(form: MultiDict[str, str]) -> Invite | None:
    start, end = form.get("invite_start", "").strip(), form.get("invite_end", "").strip()
    zone, location = form.get("invite_timezone", "").strip(), form.get("invite_location", "").strip()
    if not start and not end:
        if location:
            raise OutboxError("An invitation needs its {invite_start} and {invite_end}.", "invite_start")
        return None
    if not zone:
        raise OutboxError("An invitation needs its {invite_timezone}, such as Europe/Berlin.", "invite_timezone")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise OutboxError(f"{zone!r} is not a time zone name such as Europe/Berlin.", "invite_timezone") from None
    return Invite(_when(start, "invite_start", tz), _when(end, "invite_end", tz), location, zone)


def _when(text: str, field: str, tz: ZoneInfo) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OutboxError(f"The {{{field}}} must be a date and time, such as 2027-01-12 10:00.", field) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)
