"""``/api/v1/tracking``: who of a tracked message's recipients opened, clicked, replied or bounced —
people only, machine opens marked apart — and every hit with its verdict (the report of
``postroom tracking --json``, of the organisation's own messages only)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from services.tracking import tracking_report
from web.api.common import api_blueprint, not_found, org_id, sessions
from web.api.schemas import Answer, Request, described, when

bp = api_blueprint("tracking", "Opens, clicks and replies of the messages Postroom sent.")


class TrackingArgs(Request):
    message_id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=998),
        **described("The Message-ID of a message sent from Postroom (`message_id` of the send), with or without <>."),
    )


class HitSchema(Answer):
    kind = fields.String(required=True, **described("open or click."))
    at = fields.String(required=True, metadata={"format": "date-time"})
    machine = fields.Boolean(required=True, **described("A machine's hit (a mail proxy, a scanner), not a person's."))
    reason = fields.String(required=True, **described("Why the hit was judged so, in a few words."))


class RecipientReportSchema(Answer):
    address = fields.String(required=True)
    opened = fields.Boolean(required=True, **described("A person opened it (a person's click proves an open)."))
    clicked = fields.Boolean(required=True)
    replied = fields.Boolean(required=True)
    auto_replied = fields.Boolean(required=True)
    bounced = fields.Boolean(
        required=True, **described("A delivery status notification said the address failed (processing mailbox).")
    )
    bounced_at = when(required=True, allow_none=True)
    bounce_status = fields.String(required=True, allow_none=True, **described('The RFC 3463 status, e.g. "5.1.1".'))
    bounce_reason = fields.String(required=True, allow_none=True, **described("The receiving server's words."))
    events = fields.List(fields.Nested(HitSchema), required=True)


class TrackingReportSchema(Answer):
    message_id = fields.String(required=True)
    recipients = fields.List(fields.Nested(RecipientReportSchema), required=True)


@bp.route("")
@bp.arguments(TrackingArgs, location="query")
@bp.response(200, TrackingReportSchema)
def report(args: dict[str, Any]) -> dict[str, Any]:
    """One sent message's tracking, per recipient (To, then Cc, then Bcc). An unknown
    Message-ID and another organisation's message answer the same 404."""
    with sessions()() as s, not_found("message_id"):
        return tracking_report(s, args["message_id"], org_id())
