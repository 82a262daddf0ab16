"""``/inbound``: the organisation's processing mailboxes (docs/inbound.md) and what they took.

The page lists the mailboxes (account, folders, move mode, last run, last error) with, for an
admin, a form to designate another of the organisation's accounts, and the items, newest first,
a page at a time, filterable by status (processed / failed): sender, subject, status, the reason
in one sentence, where it was routed (an outbox message or an applicant, linked), its data as a
small key/value table, its text, and its attachments to download. *Run now* takes the new mail of the
organisation's mailboxes at once; *Retry* processes a failed item again from its kept message.

Only **admins** designate: a processing mailbox moves every message out of the account's
source folder and sends the organisation's inbound mail to its webhooks. A recruiter sees the
page with a note in place of the form, and a recruiter's POST answers 403. Running, retrying
and downloading are open to everyone of the organisation.

Everything shown of an item comes from mail anyone could have sent, so it is only ever rendered
through Jinja's escaping (the text as text, never as HTML). The views call
:mod:`services.inbound` only; an item or attachment of another organisation answers 404.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from services.accounts import list_accounts
from services.errors import ServerError
from services.inbound import (
    MOVE_MODES,
    STATUSES,
    InboundError,
    NoSuchInbound,
    add_mailbox,
    get_attachment,
    item_page,
    list_mailboxes,
    retry_item,
    run_once,
)
from web.auth import org_id, require_admin
from web.downloads import attachment_download
from web.form_errors import form_errors

bp = Blueprint("inbound_ui", __name__)
PAGE = 25
LABELS = {
    "account": "Account",
    "folder": "Source folder",
    "processed": "Processed folder",
    "failed": "Failed folder",
    "move": "Move mode",
}
DEFAULT_FORM = {"account": "", "folder": "INBOX", "processed": "processed", "failed": "failed", "move": "auto"}


def _ext() -> dict[str, Any]:
    found: dict[str, Any] = current_app.extensions["postroom"]
    return found


def _status() -> str | None:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        abort(404)
    return status


def _index(form: dict[str, str], errors: dict[str, str], status_code: int = 200) -> tuple[str, int]:
    status = _status()
    offset = request.args.get("offset", 0, type=int)
    with _ext()["sessions"]() as s:
        boxes = list_mailboxes(s, org_id())
        accounts = list_accounts(s, org_id())
        page = item_page(s, org_id(), status, offset, PAGE)
    taken = {b.account_id for b in boxes}
    page_html = render_template(
        "inbound_ui/index.html",
        boxes=boxes,
        accounts=[a for a in accounts if a.id not in taken],
        page=page,
        status=status,
        statuses=STATUSES,
        move_modes=MOVE_MODES,
        form=form,
        errors=errors,
        admin=current_user.is_admin,
    )
    return page_html, status_code


@bp.get("/inbound")
def index() -> tuple[str, int]:
    return _index(DEFAULT_FORM, {})


@bp.post("/inbound")
def designate() -> tuple[str, int] | Response:
    require_admin()
    form = {name: request.form.get(name, default).strip() for name, default in DEFAULT_FORM.items()}
    if not form["account"].isdigit():
        return _index(form, {"account": "Choose the account to designate."}, 400)
    ext = _ext()
    try:
        with ext["sessions"].begin() as s:
            box_id = add_mailbox(
                s,
                ext["config"],
                org_id(),
                int(form["account"]),
                form["folder"],
                form["processed"],
                form["failed"],
                form["move"],
            )
    except InboundError as exc:
        return _index(form, form_errors(exc, LABELS), 400)
    flash(
        f"Processing mailbox {box_id} designated: mail in {form['folder']} is taken on the next run "
        f"(or now, with Run now), then moved to {form['processed']} or {form['failed']}.",
        "ok",
    )
    return redirect(url_for("inbound_ui.index"))


def _back() -> Response:
    back = request.form.get("back") or None
    return redirect(url_for("inbound_ui.index", status=back if back in STATUSES else None))


@bp.post("/inbound/run")
def run() -> Response:
    ext = _ext()
    result = run_once(ext["config"], ext["sessions"], org_id())
    flash(f"Run done: {result.processed} processed, {result.failed} failed.", "ok")
    for error in result.errors:
        flash(f"Not reached: {error}", "error")
    return _back()


@bp.post("/inbound/items/<int:item_id>/retry")
def retry(item_id: int) -> Response:
    ext = _ext()
    try:
        item = retry_item(ext["config"], ext["sessions"], org_id(), item_id)
    except NoSuchInbound:
        abort(404)
    except InboundError as exc:
        flash(exc.sentence(), "error")
    except ServerError as exc:
        flash(f"Item {item_id} could not be retried: the mail server said {exc}", "error")
    else:
        if item.status == "processed":
            flash(f"Item {item.id} is processed now.", "ok")
        else:
            flash(f"Item {item.id} failed again: {item.reason}", "error")
    return _back()


@bp.get("/inbound/attachments/<int:attachment_id>")
def attachment(attachment_id: int) -> Response:
    """An attachment a processing mailbox kept (an applicant's résumé, say), as a download."""
    ext = _ext()
    with ext["sessions"]() as s:
        try:
            found = get_attachment(s, ext["config"], org_id(), attachment_id)
        except NoSuchInbound:
            abort(404)
    return attachment_download(found)
