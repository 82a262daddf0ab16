"""``/api/v1/messages``: read one message (its sanitised HTML and its text), and send one with
the options of ``postroom send`` — answering the JSON of ``postroom send --json``.

A send is written and queued with its Message-ID before any network I/O, then submitted at
once; the HTTP status says how it ended (:func:`web.api.outbox.delivery_status`): ``201`` sent,
``202`` queued for the worker or uncertain (see ``/api/v1/outbox``), ``502`` refused by the
mail server. Input that cannot be sent as asked answers ``400`` naming the field, and then
nothing is queued.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from services.messages import MessageError, get_message
from services.sending import Invite, SendRequest, send_message
from web.api.common import api_blueprint, config, name_fields, not_found, org_id, sessions
from web.api.outbox import delivery_status
from web.api.schemas import Answer, PartySchema, Request, described, when

bp = api_blueprint("messages", "Messages: read one, send one.")


def addresses(**kwargs: Any) -> fields.List:
    return fields.List(fields.String(validate=validate.Length(min=1, max=998)), **kwargs)


class SendBody(Request):
    account_id = fields.Integer(required=True, **described("The mailbox to send from (`GET /api/v1/accounts`)."))
    to = addresses(required=True, validate=validate.Length(min=1))
    cc = addresses(load_default=list)
    bcc = addresses(load_default=list, **described("Named in no header."))
    subject = fields.String(**described("With body; or give template instead."))
    body = fields.String(**described("Markdown, taken as written."))
    template = fields.String(**described("A template's name (`GET /api/v1/templates`), instead of subject and body."))
    data = fields.Dict(keys=fields.String(), **described("The template's placeholders' values."))
    applicant_id = fields.Integer(**described("The applicant this message is for ({{ applicant.name }})."))
    track = fields.Boolean(
        load_default=False, **described("One copy per recipient, with its own open pixel and links.")
    )
    in_reply_to = fields.String(**described("The Message-ID of the message answered."))
    invite_start = fields.AwareDateTime(**described("An interview invitation's start, e.g. 2027-01-12T10:00+01:00."))
    invite_end = fields.AwareDateTime(**described("The invitation's end."))
    invite_location = fields.String(load_default="", **described("Where, or a video link."))
    invite_timezone = fields.String(**described("The invitation's time zone, e.g. Europe/Berlin."))

    @validates_schema
    def _one_way_to_write_it(self, data: dict[str, Any], **kwargs: Any) -> None:
        """The checks ``postroom send`` makes on its flags, with the same sentences."""
        template, subject, body = data.get("template"), data.get("subject"), data.get("body")
        if template is None and (subject is None or body is None):
            raise ValidationError("Give subject and body, or template.", "subject" if subject is None else "body")
        if template is not None and (subject is not None or body is not None):
            raise ValidationError("Give either template or subject and body, not both.", "template")
        if data.get("data") is not None and template is None:
            raise ValidationError("data fills a template's placeholders; name the template too.", "data")
        start, end = data.get("invite_start"), data.get("invite_end")
        if (start is None) != (end is None):
            raise ValidationError("An invitation needs both invite_start and invite_end.", "invite_end")
        if start is None and (data.get("invite_location") or data.get("invite_timezone")):
            raise ValidationError(
                "invite_location and invite_timezone need invite_start and invite_end.", "invite_start"
            )


class SendSchema(Answer):
    message_id = fields.String(required=True, **described("The Message-ID, with its <>."))
    outbox_id = fields.Integer(required=True)
    id = fields.Integer(required=True, **described("The outbox id again (as `postroom send --json` has it)."))
    reply_to = fields.String(required=True, **described("The Reply-To, carrying the reply token."))
    short_id = fields.String(required=True, **described("The short id in the subject, e.g. [k3x9q2]."))
    recipients = fields.List(fields.String(), required=True)
    status = fields.String(required=True, **described("sent, queued, uncertain or failed."))
    tracked = fields.Boolean(required=True)
    mode = fields.String(required=True, **described("How a tracked send went out: smtp or api."))
    refused = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    error = fields.String(required=True, allow_none=True)
    field = fields.String(allow_none=True, **described("null; present when the server refused it (502)."))


@bp.route("", methods=["POST"])
@bp.arguments(SendBody)
@bp.response(201, SendSchema)
@bp.alt_response(202, schema=SendSchema, description="Not sent yet: queued for the worker, or uncertain.")
@bp.alt_response(502, schema=SendSchema, description="The mail server refused it; error says why.")
def send(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Send a message now (``postroom send``): written from a template or as given, optionally
    tracked per recipient, optionally an interview invitation."""
    name_fields(account="account_id", applicant="applicant_id")
    invite = None
    if body.get("invite_start") is not None:
        invite = Invite(
            start=body["invite_start"],
            end=body["invite_end"],
            location=body["invite_location"],
            timezone=body.get("invite_timezone"),
        )
    req = SendRequest(
        account_id=body["account_id"],
        to=body["to"],
        cc=body["cc"],
        bcc=body["bcc"],
        subject=body.get("subject"),
        text=body.get("body"),
        template=body.get("template"),
        data=body.get("data"),
        applicant_id=body.get("applicant_id"),
        track=body["track"],
        in_reply_to=body.get("in_reply_to"),
        invite=invite,
        org_id=org_id(),
    )
    outcome = send_message(config(), sessions(), req)
    status = delivery_status(outcome.entry.status, done=201)
    data = outcome.as_json()
    return (data | {"field": None} if status >= 400 else data), status


class MessageArgs(Request):
    show_images = fields.Boolean(
        load_default=False,
        **described("Keep remote images, each through Postroom's signed image proxy (/img/...), not the sender's."),
    )


class AttachmentSchema(Answer):
    index = fields.Integer(required=True)
    filename = fields.String(required=True)
    content_type = fields.String(required=True)
    size = fields.Integer(required=True, **described("Bytes."))


class MessageSchema(Answer):
    id = fields.Integer(required=True)
    message_id = fields.String(required=True)
    thread_id = fields.Integer(required=True, allow_none=True)
    subject = fields.String(required=True)
    from_ = fields.Nested(PartySchema, required=True, data_key="from", attribute="from")
    to = fields.List(fields.String(), required=True)
    cc = fields.List(fields.String(), required=True)
    date = when(required=True, allow_none=True)
    text = fields.String(required=True, **described("The plain-text body (derived from the HTML when there is none)."))
    html = fields.String(
        required=True,
        allow_none=True,
        **described(
            "The HTML body sanitised on an allow-list (no scripts, event handlers, forms, remote loads), or null "
            "when there is none. Show it in a sandboxed iframe all the same."
        ),
    )
    blocked_images = fields.Integer(required=True, **described("Remote images left out (see show_images)."))
    attachments = fields.List(fields.Nested(AttachmentSchema), required=True)
    body_state = fields.String(
        required=True, **described("stored, not downloaded, or one sentence saying why it cannot be shown.")
    )
    truncated = fields.Boolean(required=True, **described("A body part was too long and is cut off."))


@bp.route("/<int:email_id>")
@bp.arguments(MessageArgs, location="query")
@bp.response(200, MessageSchema)
def get(args: dict[str, Any], email_id: int) -> dict[str, Any]:
    """One message (the ``email_id`` of a timeline or thread; the same id as the page
    ``/messages/{id}``) with its body made safe to show."""
    with sessions().begin() as s, not_found(MessageError):  # reading may fill in the snippet
        return get_message(s, config(), org_id(), email_id, show_images=args["show_images"]).as_json()
