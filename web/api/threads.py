"""``/api/v1/threads/{id}``: one conversation of the organisation with its messages, oldest
first, whichever mailboxes hold them, each once (the ``thread_id`` of a timeline item)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from services.threads import ThreadError, get_thread
from web.api.common import api_blueprint, not_found, org_id, sessions
from web.api.schemas import Answer, PartySchema, described, when

bp = api_blueprint("threads", "Conversations.")


class ThreadMessageSchema(Answer):
    email_id = fields.Integer(required=True, **described("The message's id: GET /api/v1/messages/{id}."))
    message_id = fields.String(required=True)
    date = when(required=True, allow_none=True)
    subject = fields.String(required=True)
    from_ = fields.Nested(PartySchema, required=True, data_key="from", attribute="from")
    to = fields.List(fields.String(), required=True)
    cc = fields.List(fields.String(), required=True)
    direction = fields.String(
        required=True, validate=validate.OneOf(["in", "out"]), **described("out: sent from one of your mailboxes.")
    )
    snippet = fields.String(required=True)
    applicant_ids = fields.List(fields.Integer(), required=True, **described("Applicants whose history holds it."))


class ApplicantRefSchema(Answer):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class ThreadSchema(Answer):
    id = fields.Integer(required=True)
    subject = fields.String(required=True)
    messages = fields.List(fields.Nested(ThreadMessageSchema), required=True, **described("Oldest first."))
    applicants = fields.List(
        fields.Nested(ApplicantRefSchema), required=True, **described("The applicants its messages are with.")
    )


@bp.route("/<int:thread_id>")
@bp.response(200, ThreadSchema)
def get(thread_id: int) -> dict[str, Any]:
    """One thread with its messages."""
    with sessions()() as s, not_found(ThreadError):
        return get_thread(s, org_id(), thread_id).as_json()
