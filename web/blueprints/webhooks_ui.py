"""``/webhooks``: the organisation's webhook subscriptions and their delivery log.

Everyone of the organisation sees the subscriptions (URL, events, active or why disabled, a
rotation in progress) and the delivery log (event, status, attempts, the receiver's last
answer, the next attempt), paged. Only **admins** add, rotate and delete: a subscription sends
the organisation's events (its applicants' mail, replies, bounces) to the URL it names, so a
recruiter sees the page without its forms, and a recruiter's POST answers 403 (after the
ownership check: another organisation's id is 404, as everywhere).

A new subscription's signing secret, and a rotated one, is shown once, on the page that answers
the form (never through a redirect, a flash or the session), with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from services.paging import clamp
from services.webhooks import (
    EVENTS,
    NoSuchWebhook,
    WebhookError,
    add_subscription,
    delete_subscription,
    delivery_page,
    get_subscription,
    list_subscriptions,
    rotate_secret,
)
from web.auth import org_id, require_admin
from web.form_errors import form_errors

bp = Blueprint("webhooks_ui", __name__)
LABELS = {"url": "URL", "events": "Events"}
LOG_PAGE = 50


def _index(errors: dict[str, str], url: str = "", events: list[str] | None = None, status: int = 200) -> Response:
    ext = current_app.extensions["postroom"]
    offset, limit = clamp(request.args.get("offset", type=int), LOG_PAGE)
    with ext["sessions"]() as s:
        subs = list_subscriptions(s, ext["config"], org_id())
        log = delivery_page(s, org_id(), offset, limit)
    page = render_template(
        "webhooks_ui/index.html",
        subs=subs,
        log=log,
        all_events=EVENTS,
        errors=errors,
        url=url,
        chosen=set(events or ()),
        admin=current_user.is_admin,
    )
    return Response(page, status=status)


@bp.get("/webhooks")
def index() -> Response:
    return _index({})


def _secret_page(sub_id: int, secret: str, rotated: bool) -> Response:
    ext = current_app.extensions["postroom"]
    with ext["sessions"]() as s:
        sub = get_subscription(s, ext["config"], org_id(), sub_id)
    response = Response(render_template("webhooks_ui/secret.html", sub=sub, secret=secret, rotated=rotated))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/webhooks")
def create() -> Response:
    require_admin()
    ext = current_app.extensions["postroom"]
    url = request.form.get("url", "")
    events = [e for e in request.form.getlist("events") if e]
    try:
        with ext["sessions"].begin() as s:
            sub_id, secret = add_subscription(s, ext["config"], org_id(), url, events)
    except WebhookError as exc:
        return _index(form_errors(exc, LABELS), url, events, status=400)
    return _secret_page(sub_id, secret, rotated=False)


@bp.post("/webhooks/<int:subscription_id>/rotate")
def rotate(subscription_id: int) -> Response:
    ext = current_app.extensions["postroom"]
    try:
        with ext["sessions"].begin() as s:
            get_subscription(s, ext["config"], org_id(), subscription_id)
            require_admin()
            secret, _ = rotate_secret(s, ext["config"], org_id(), subscription_id)
    except NoSuchWebhook:
        abort(404)
    return _secret_page(subscription_id, secret, rotated=True)


@bp.post("/webhooks/<int:subscription_id>/delete")
def delete(subscription_id: int) -> Response:
    ext = current_app.extensions["postroom"]
    try:
        with ext["sessions"].begin() as s:
            url = get_subscription(s, ext["config"], org_id(), subscription_id).url
            require_admin()
            delete_subscription(s, org_id(), subscription_id)
    except NoSuchWebhook:
        abort(404)
    flash(f"The subscription of {url} is deleted; nothing more is sent to it.", "ok")
    return redirect(url_for("webhooks_ui.index"))  # type: ignore[return-value]
