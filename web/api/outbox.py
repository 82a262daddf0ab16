"""``/api/v1/outbox``: the messages sent through Postroom and their state (``queued``,
``sending``, ``sent``, ``uncertain``, ``failed``), and retrying one — an uncertain one is looked
for in the Sent folder first, as ``postroom outbox retry`` does.

How a delivery ended is told by the HTTP status as well as by ``status`` in the body
(:func:`delivery_status`): it went out (``200``/``201``); it is recorded but not known to have
gone out yet (``202``: ``queued`` for the worker, ``uncertain`` to be checked); the mail server
refused it (``502``, ``error`` says why, and the body carries ``field: null`` like every
error)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from postroom.states import OutboxStatus
from services.outbox import NoSuchOutboxMessage, list_outbox, retry_message
from web.api.common import api_blueprint, config, not_found, org_id, sessions
from web.api.schemas import Answer, PageArgs, Request, cut, described, page_of, when

bp = api_blueprint("outbox", "Messages sent through Postroom, their state, and retrying them.")

STATES = [str(s) for s in OutboxStatus]


def delivery_status(status: OutboxStatus, done: int = 200) -> int:
    """The HTTP status of a delivery that ended in ``status``; ``done`` when it went out."""
    if status == OutboxStatus.SENT:
        return done
    if status == OutboxStatus.FAILED:
        return 502
    return 202


class BounceSchema(Answer):
    status = fields.String(required=True, allow_none=True, **described('The RFC 3463 status, e.g. "5.1.1".'))
    reason = fields.String(required=True, allow_none=True, **described("The receiving server's words, one line."))
    bounced_at = when(required=True)


class OutboxEntrySchema(Answer):
    id = fields.Integer(required=True, **described("The outbox id."))
    message_id = fields.String(required=True, **described("The Message-ID, with its <>."))
    account_id = fields.Integer(required=True)
    account_email = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATES))
    recipients = fields.List(fields.String(), required=True)
    refused = fields.Dict(
        keys=fields.String(), values=fields.String(), required=True, **described("Refused recipients and why.")
    )
    error = fields.String(required=True, allow_none=True)
    subject = fields.String(required=True)
    attempts = fields.Integer(required=True)
    created_at = when(required=True)
    sent_at = when(required=True, allow_none=True)
    bounced = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(BounceSchema),
        required=True,
        **described("Recipients a delivery status notification said failed (read by a processing mailbox)."),
    )


OutboxPage = page_of(OutboxEntrySchema, "OutboxPage")


class OutboxArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(STATES), **described("Only messages in this state."))


class RetryBody(Request):
    force = fields.Boolean(
        load_default=False,
        **described("Send an uncertain message again although it may already have gone out (it is not in Sent)."),
    )


class RetrySchema(OutboxEntrySchema):
    found_in_sent = fields.Boolean(required=True, **described("An uncertain message was in Sent: it did go out."))
    already_sent = fields.Boolean(required=True, **described("It was sent before; nothing was done."))
    field = fields.String(
        allow_none=True, **described("null; present when the server refused it (502), as in every error.")
    )


@bp.route("")
@bp.arguments(OutboxArgs, location="query")
@bp.response(200, OutboxPage)
def list_(args: dict[str, Any]) -> dict[str, Any]:
    """The organisation's outbox, newest first."""
    with sessions()() as s:
        return cut(list_outbox(s, args.get("status"), org_id=org_id()), args)


@bp.route("/<int:outbox_id>/retry", methods=["POST"])
@bp.arguments(RetryBody)
@bp.response(200, RetrySchema)
@bp.alt_response(202, schema=RetrySchema, description="Not sent yet: queued for the worker, or uncertain.")
@bp.alt_response(502, schema=RetrySchema, description="The mail server refused it; error says why.")
def retry(body: dict[str, Any], outbox_id: int) -> tuple[dict[str, Any], int]:
    """Send a queued or failed message now (``postroom outbox retry``). An uncertain one is
    looked for in Sent first: found, it is marked sent and not sent again; not found, it is
    sent again only with ``force``."""
    with not_found(NoSuchOutboxMessage):
        outcome = retry_message(config(), sessions(), outbox_id, force=body["force"], org_id=org_id())
    entry = outcome.entry
    data = entry.as_json() | {"found_in_sent": outcome.found_in_sent, "already_sent": outcome.already_sent}
    status = delivery_status(entry.status)
    return (data | {"field": None} if status >= 400 else data), status
