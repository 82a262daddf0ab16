"""``/outbox``: the organisation's messages sent through Postroom and their states — queued,
sending, sent, uncertain, failed — newest first, filterable by state.

An *uncertain* message may have gone out although the server's answer was lost, so Postroom
never sends it again on its own; it is highlighted with two actions
(:func:`services.outbox.retry_message`): *Check Sent* looks for it in the mailbox's Sent folder
and marks it sent if it is there (nothing is sent), and *Send again anyway* sends it even so
(``force``). A queued or failed message can be retried now.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from postroom.errors import OutboxError
from services.outbox import NoSuchOutboxMessage, OutboxStatus, RetryOutcome, list_outbox, retry_message
from web.auth import org_id
from web.form_errors import form_errors

bp = Blueprint("outbox_ui", __name__)
LABELS = {"force": "“Send again anyway”"}


@bp.get("/outbox")
def index() -> str:
    status = request.args.get("status") or None
    if status is not None and status not in set(OutboxStatus):
        abort(404)
    with current_app.extensions["postroom"]["sessions"]() as s:
        entries = list_outbox(s, status, org_id())
    return render_template("outbox_ui/index.html", entries=entries, status=status, states=list(OutboxStatus))


@bp.post("/outbox/<int:outbox_id>/retry")
def retry(outbox_id: int) -> Response:
    ext = current_app.extensions["postroom"]
    force = request.form.get("force") == "1"
    try:
        outcome = retry_message(ext["config"], ext["sessions"], outbox_id, force=force, org_id=org_id())
    except NoSuchOutboxMessage:
        abort(404)
    except OutboxError as exc:
        flash(next(iter(form_errors(exc, LABELS).values())), "error")
    else:
        ok, sentence = retry_sentence(outcome)
        flash(sentence, "ok" if ok else "error")
    return redirect(url_for("outbox_ui.index", status=request.form.get("back") or None))


def retry_sentence(outcome: RetryOutcome) -> tuple[bool, str]:
    """Whether the message is sent now, and what happened in one sentence."""
    e = outcome.entry
    what = f"“{e.subject}”"
    if outcome.already_sent:
        return True, f"{what} was already sent; nothing was done."
    if outcome.found_in_sent and e.status == OutboxStatus.SENT:
        where = f"the Sent folder of {e.account_email}"
        return True, f"{what} is in {where}, so it did go out: marked sent, not sent again."
    if e.status == OutboxStatus.SENT:
        return True, f"{what} is sent to {', '.join(e.recipients)}."
    if e.status == OutboxStatus.UNCERTAIN:
        lost = f"although the answer was lost ({e.error})"
        return False, f"{what} may have gone out again {lost}; check Sent before retrying."
    if e.status == OutboxStatus.FAILED:
        return False, f"{what} was refused and not sent: {e.error}."
    return False, f"{what} could not be sent yet ({e.error}); it stays in the outbox and is tried again later."
