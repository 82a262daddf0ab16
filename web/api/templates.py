"""``/api/v1/templates``: message templates (a subject and a Markdown body with ``{{
placeholders }}``) — list, add, read, replace, and how the messages made from one did."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from postroom.models import Template
from services.templates import (
    MAX_NAME,
    NoSuchTemplate,
    add_template,
    get_template_by_id,
    list_templates,
    template_results,
    update_template,
)
from web.api.common import api_blueprint, not_found, org_id, sessions
from web.api.schemas import Answer, CreatedSchema, PageArgs, Request, cut, described, page_of, when

bp = api_blueprint("templates", "Message templates and their results.")


class TemplateSummarySchema(Answer):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    subject = fields.String(required=True)
    json_part = fields.Boolean(required=True, **described("Messages also carry their data as application/json."))
    created_at = when(required=True)
    updated_at = when(required=True)


class TemplateSchema(TemplateSummarySchema):
    body = fields.String(required=True, **described("Markdown with {{ placeholders }}."))


TemplatePage = page_of(TemplateSummarySchema, "TemplatePage")


class TemplateBody(Request):
    name = fields.String(required=True, validate=validate.Length(max=MAX_NAME))
    subject = fields.String(required=True, **described("Itself a template, e.g. 'Your interview, {{ name }}'."))
    body = fields.String(required=True, **described("Markdown with {{ placeholders }}."))
    json_part = fields.Boolean(load_default=False)


class BucketSchema(Answer):
    start = fields.Date(required=True)
    days = fields.Integer(required=True)
    sent = fields.Integer(required=True)
    opened = fields.Integer(required=True)
    clicked = fields.Integer(required=True)
    replied = fields.Integer(required=True)
    machine_opened = fields.Integer(required=True)


class ResultsSchema(Answer):
    template_id = fields.Integer(required=True)
    messages = fields.Integer(required=True, **described("Messages made from the template that reached someone."))
    sent = fields.Integer(required=True, **described("Recipients reached."))
    tracked = fields.Integer(required=True, **described("Of them, reached by a tracked send."))
    opened = fields.Integer(required=True, **described("Recipients a person opened it for (people only)."))
    clicked = fields.Integer(required=True)
    replied = fields.Integer(required=True)
    machine_opened = fields.Integer(required=True, **described("Recipients whose copy a machine fetched, apart."))
    buckets = fields.List(fields.Nested(BucketSchema), required=True, **described("The same counts over time."))


def _template_json(t: Template) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "subject": t.subject,
        "body": t.body,
        "json_part": t.json_part,
        "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(),
    }


@bp.route("")
@bp.arguments(PageArgs, location="query")
@bp.response(200, TemplatePage)
def list_(args: dict[str, Any]) -> dict[str, Any]:
    """The organisation's templates, by name."""
    with sessions()() as s:
        return cut(list_templates(s, org_id()), args)


@bp.route("", methods=["POST"])
@bp.arguments(TemplateBody)
@bp.response(201, CreatedSchema)
def add(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Save a template; a syntax error is refused naming its line."""
    with sessions().begin() as s:
        template_id = add_template(s, org_id(), **body).id
    return {"id": template_id}, 201, {"Location": f"{bp.url_prefix}/{template_id}"}


@bp.route("/<int:template_id>")
@bp.response(200, TemplateSchema)
def get(template_id: int) -> dict[str, Any]:
    """One template with its body."""
    with sessions()() as s, not_found(NoSuchTemplate):
        return _template_json(get_template_by_id(s, org_id(), template_id))


@bp.route("/<int:template_id>", methods=["PUT"])
@bp.arguments(TemplateBody)
@bp.response(200, TemplateSchema)
def replace(body: dict[str, Any], template_id: int) -> dict[str, Any]:
    """Replace a template's name, subject, body and JSON part (checked as a new one is).
    Messages already sent from it keep what they said."""
    with sessions().begin() as s, not_found(NoSuchTemplate):
        return _template_json(update_template(s, org_id(), template_id, **body))


@bp.route("/<int:template_id>/results")
@bp.response(200, ResultsSchema)
def results(template_id: int) -> Any:
    """How the messages made from a template did: recipients reached, people's opens, clicks
    and replies, machine opens apart, and the same over time."""
    with sessions()() as s, not_found(NoSuchTemplate):
        return template_results(s, org_id(), template_id)
