"""``/templates``: the organisation's message templates — list, new, edit — and how the messages
made from each did: sends, people's opens, clicks and replies over time as a small chart of CSS
bars (:func:`services.templates.template_results`). Machine opens (image proxies, privacy relays,
scanners) have a chart of their own and are never counted as people.

A template is checked when it is saved (:mod:`services.templates`): a syntax error is shown next
to the subject or body, naming its line.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from postroom.templating import TemplateError
from services.templates import (
    NoSuchTemplate,
    TemplateResults,
    add_template,
    get_template_by_id,
    list_templates,
    template_results,
    update_template,
)
from web.auth import org_id
from web.form_errors import form_errors

bp = Blueprint("templates_ui", __name__)

LABELS = {"name": "Name", "subject": "Subject", "body": "Body", "json_part": "JSON part"}
SERIES = (
    ("sent", "Sent"),
    ("opened", "Opened by a person"),
    ("clicked", "Clicked"),
    ("replied", "Replied"),
)


@bp.get("/templates")
def index() -> str:
    with current_app.extensions["postroom"]["sessions"]() as s:
        templates = list_templates(s, org_id())
    return render_template("templates_ui/index.html", templates=templates)


@dataclass(frozen=True)
class Fields:
    """The editor's fields, as typed."""

    name: str = ""
    subject: str = ""
    body: str = ""
    json_part: bool = False


@bp.get("/templates/new")
def new() -> str:
    return _editor(None, Fields(), {}, None)


@bp.post("/templates/new")
def create() -> Response | tuple[str, int]:
    typed = _typed()
    try:
        with current_app.extensions["postroom"]["sessions"].begin() as s:
            template = add_template(s, org_id(), typed.name, typed.subject, typed.body, typed.json_part)
            template_id, name = template.id, template.name
    except TemplateError as exc:
        return _editor(None, typed, form_errors(exc, LABELS), None), 400
    flash(f"Template “{name}” is saved; choose it when you compose a message.", "ok")
    return redirect(url_for("templates_ui.edit", template_id=template_id))


@bp.get("/templates/<int:template_id>")
def edit(template_id: int) -> str:
    with current_app.extensions["postroom"]["sessions"]() as s:
        try:
            t = get_template_by_id(s, org_id(), template_id)
            results = template_results(s, org_id(), template_id)
        except NoSuchTemplate:
            abort(404)
        fields = Fields(t.name, t.subject, t.body, t.json_part)
    return _editor(template_id, fields, {}, results)


@bp.post("/templates/<int:template_id>")
def save(template_id: int) -> Response | tuple[str, int]:
    typed = _typed()
    sessions = current_app.extensions["postroom"]["sessions"]
    try:
        with sessions.begin() as s:
            name = update_template(
                s, org_id(), template_id, typed.name, typed.subject, typed.body, typed.json_part
            ).name
    except NoSuchTemplate:
        abort(404)
    except TemplateError as exc:
        with sessions() as s:
            results = template_results(s, org_id(), template_id)
        return _editor(template_id, typed, form_errors(exc, LABELS), results), 400
    flash(f"Template “{name}” is saved; messages already sent keep what they said.", "ok")
    return redirect(url_for("templates_ui.edit", template_id=template_id))


def _editor(template_id: int | None, fields: Fields, errors: dict[str, str], results: TemplateResults | None) -> str:
    return render_template(
        "templates_ui/edit.html", template_id=template_id, values=fields, errors=errors, results=results, series=SERIES
    )


def _typed() -> Fields:
    form = request.form
    return Fields(form.get("name", ""), form.get("subject", ""), form.get("body", ""), form.get("json_part") == "on")
