"""``/threads/<id>``: one conversation, every message of it whichever mailboxes hold them, oldest
first (:func:`services.threads.get_thread`); another organisation's thread answers 404."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template

from services.threads import ThreadError, get_thread
from web.auth import org_id

bp = Blueprint("threads", __name__)


@bp.get("/threads/<int:thread_id>")
def show(thread_id: int) -> str:
    with current_app.extensions["postroom"]["sessions"]() as s:
        try:
            thread = get_thread(s, org_id(), thread_id)
        except ThreadError:
            abort(404)
    return render_template("threads/show.html", thread=thread)
