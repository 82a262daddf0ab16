"""``/api/v1/applicants``: the organisation's applicants — list and search, add (their history is
backfilled at once), read, rename or change their addresses, and their timeline: every message
with them across all the organisation's mailboxes, once, oldest first, with direction, thread
and how the messages Postroom sent have fared (people's opens apart from machines')."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from services.applicants import add_applicant, applicant_timeline, get_applicant, list_applicants, update_applicant
from web.api.common import api_blueprint, name_fields, not_found, org_id, sessions
from web.api.schemas import Answer, PageArgs, PartySchema, Request, cut, described, page_of, when

bp = api_blueprint("applicants", "Applicants, their addresses and their timelines.")


def addresses(**kwargs: Any) -> fields.List:
    return fields.List(fields.String(validate=validate.Length(min=1, max=320)), **kwargs)


class ApplicantSummarySchema(Answer):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    addresses = fields.List(fields.String(), required=True, **described("As entered, in the order added."))
    messages = fields.Integer(required=True, **described("Messages in their history."))
    last_message_at = when(required=True, allow_none=True)


class ApplicantSchema(ApplicantSummarySchema):
    created_at = when(required=True)


ApplicantPage = page_of(ApplicantSummarySchema, "ApplicantPage")


class ApplicantArgs(PageArgs):
    q = fields.String(
        validate=validate.Length(max=320), **described("Only those whose name or an address contains this.")
    )


class NewApplicant(Request):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    emails = addresses(required=True, validate=validate.Length(min=1), **described("Their addresses."))


class ApplicantChange(Request):
    name = fields.String(validate=validate.Length(min=1, max=200))
    emails = addresses(validate=validate.Length(min=1), **described("Their addresses, all of them: replaces the set."))


class AddedSchema(Answer):
    id = fields.Integer(required=True)
    history_entries = fields.Integer(required=True, **described("Messages already indexed brought into history."))


class AccountRefSchema(Answer):
    id = fields.Integer(required=True)
    email = fields.String(required=True)


class RecipientTrackingSchema(Answer):
    address = fields.String(required=True)
    kind = fields.String(required=True, **described("to, cc or bcc."))
    state = fields.String(
        required=True,
        **described(
            "The furthest step: queued, sending, uncertain, failed, bounced, sent, auto_replied, opened, "
            "clicked, replied (opened and clicked by a person)."
        ),
    )
    opens = fields.Integer(required=True, **described("People's opens."))
    clicks = fields.Integer(required=True, **described("People's clicks."))
    machine_opens = fields.Integer(required=True, **described("Opens judged a machine's, never counted as people."))
    machine_clicks = fields.Integer(required=True)
    replied_at = when(required=True, allow_none=True)
    auto_replied_at = when(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    bounced_at = when(
        required=True, allow_none=True, description="When a delivery status notification said the address failed."
    )
    bounce_status = fields.String(required=True, allow_none=True, **described('Its RFC 3463 status, e.g. "5.1.1".'))


class SentTrackingSchema(Answer):
    outbox_id = fields.Integer(required=True)
    status = fields.String(required=True)
    tracked = fields.Boolean(required=True, **described("Only a tracked send's opens and clicks are known."))
    recipients = fields.List(fields.Nested(RecipientTrackingSchema), required=True)


class TimelineItemSchema(Answer):
    email_id = fields.Integer(required=True, **described("The message's id: GET /api/v1/messages/{id}."))
    message_id = fields.String(required=True)
    thread_id = fields.Integer(required=True, allow_none=True)
    date = when(required=True, allow_none=True)
    direction = fields.String(required=True, validate=validate.OneOf(["in", "out"]))
    subject = fields.String(required=True)
    from_ = fields.Nested(PartySchema, required=True, data_key="from", attribute="from")
    snippet = fields.String(required=True)
    accounts = fields.List(fields.Nested(AccountRefSchema), required=True, **described("The mailboxes holding it."))
    has_attachments = fields.Boolean(required=True, allow_none=True, **described("null: body not downloaded."))
    body_stored = fields.Boolean(required=True)
    tracking = fields.Nested(SentTrackingSchema, required=True, allow_none=True, **described("Sent from Postroom."))


TimelinePage = page_of(TimelineItemSchema, "TimelinePage")


@bp.route("")
@bp.arguments(ApplicantArgs, location="query")
@bp.response(200, ApplicantPage)
def list_(args: dict[str, Any]) -> dict[str, Any]:
    """The organisation's applicants by name; with ``q``, those whose name or one of whose
    addresses contains it (case-insensitive)."""
    with sessions()() as s:
        page = list_applicants(s, org_id(), query=args.get("q"), offset=args["offset"], limit=args["limit"])
    return page.as_json(lambda a: a.as_json())


@bp.route("", methods=["POST"])
@bp.arguments(NewApplicant)
@bp.response(201, AddedSchema)
def add(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Add an applicant; the messages already indexed with their addresses join their history."""
    name_fields(email="emails")
    with sessions().begin() as s:
        applicant, backfilled = add_applicant(s, body["name"], body["emails"], org_id())
        applicant_id = applicant.id
    return {"id": applicant_id, "history_entries": backfilled}, 201, {"Location": f"{bp.url_prefix}/{applicant_id}"}


@bp.route("/<int:applicant_id>")
@bp.response(200, ApplicantSchema)
def get(applicant_id: int) -> dict[str, Any]:
    """One applicant."""
    with sessions()() as s, not_found("applicant"):
        return get_applicant(s, org_id(), applicant_id).as_json()


@bp.route("/<int:applicant_id>", methods=["PATCH"])
@bp.arguments(ApplicantChange)
@bp.response(200, ApplicantSchema)
def update(body: dict[str, Any], applicant_id: int) -> dict[str, Any]:
    """Rename the applicant and/or replace their addresses. A new address brings its messages
    into their history; a removed one takes out the messages only it matched."""
    name_fields(addresses="emails")
    with sessions().begin() as s, not_found("applicant"):
        detail = update_applicant(s, org_id(), applicant_id, name=body.get("name"), addresses=body.get("emails"))
        return detail.as_json()


@bp.route("/<int:applicant_id>/timeline")
@bp.arguments(PageArgs, location="query")
@bp.response(200, TimelinePage)
def timeline(args: dict[str, Any], applicant_id: int) -> dict[str, Any]:
    """Every message with the applicant across the organisation's mailboxes, once, oldest first."""
    with sessions()() as s, not_found("applicant"):
        return cut(applicant_timeline(s, org_id(), applicant_id), args)
