"""``/``: the dashboard — the organisation at a glance and what needs the recruiter
(:func:`services.dashboard.dashboard`)."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from postroom.models import utcnow
from services.dashboard import dashboard
from web.auth import org_id

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index() -> str:
    with current_app.extensions["postroom"]["sessions"]() as s:
        board = dashboard(s, org_id(), utcnow())
    return render_template("dashboard/index.html", board=board)
