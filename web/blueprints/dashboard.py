"""``/``: the dashboard — the organisation's mailboxes at a glance and what needs attention."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from postroom.models import utcnow
from services.accounts import account_status
from web.auth import org_id

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index() -> str:
    with current_app.extensions["postroom"]["sessions"]() as s:
        accounts = account_status(s, utcnow(), org_id())
    return render_template("dashboard/index.html", accounts=accounts)
