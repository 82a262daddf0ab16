"""``/api/v1/inbound``: processing mailboxes (docs/inbound.md) as ``postroom inbound`` manages
them — list and designate the mailboxes, read what they took (``items``, filterable by status),
retry a failed item, run every mailbox of the organisation once, download a kept attachment.

Each item is :meth:`services.inbound.InboundItemView.as_json`, the same JSON as ``postroom
inbound list --json`` and the ``inbound.*`` webhooks. A request body's ``account_id`` is the
service's ``account`` field, so its errors name ``account_id``. An item or attachment of another
organisation answers 404 exactly like a missing one.

Designating needs an admin's token: a processing mailbox moves every message out of the
account's source folder and sends the organisation's inbound mail to its webhooks, so a
recruiter's token answers ``403`` (and nothing is designated). Listing, running, retrying and
downloading are open to every token of the organisation.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from werkzeug.wrappers import Response

from services.inbound import (
    MOVE_MODES,
    STATUSES,
    NoSuchInbound,
    add_mailbox,
    get_attachment,
    get_item,
    item_page,
    list_mailboxes,
    retry_item,
    run_once,
)
from web.api.common import (
    admins_only,
    api_blueprint,
    config,
    name_fields,
    not_found,
    org_id,
    require_admin,
    sessions,
)
from web.api.schemas import Answer, PageArgs, Request, cut, described, page_of, when
from web.downloads import attachment_download

bp = api_blueprint("inbound", "Processing mailboxes: inbound mail turned into data, routed, retried.")
ADMINS_ONLY = "Only an admin of the organisation may designate a processing mailbox; this token is a recruiter's."


class InboundMailboxSchema(Answer):
    id = fields.Integer(required=True)
    account_id = fields.Integer(required=True)
    email = fields.String(required=True, **described("The account's address."))
    folder = fields.String(required=True, **described("Where mail is taken from."))
    processed = fields.String(required=True, **described("Where processed mail is moved."))
    failed = fields.String(required=True, **described("Where mail that failed is moved, for an operator to fix."))
    move = fields.String(required=True, validate=validate.OneOf(MOVE_MODES))
    last_run_at = when(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True, **described("Why the last run could not reach it."))


InboundMailboxes = page_of(InboundMailboxSchema, "InboundMailboxPage")


class InboundMailboxBody(Request):
    account_id = fields.Integer(required=True, **described("The account to designate (`GET /api/v1/accounts`)."))
    folder = fields.String(load_default="INBOX", **described("Where mail is taken from."))
    processed = fields.String(load_default="processed", **described("Where processed mail goes (created)."))
    failed = fields.String(load_default="failed", **described("Where mail that failed goes (created)."))
    move = fields.String(
        load_default="auto",
        validate=validate.OneOf(MOVE_MODES),
        **described("auto: MOVE where the server has it; copy-delete: always COPY + delete + expunge."),
    )


class InboundMailboxCreatedSchema(Answer):
    id = fields.Integer(required=True, **described("The processing mailbox's id."))


class InboundAttachmentSchema(Answer):
    id = fields.Integer(required=True, **described("Download it at /api/v1/inbound/attachments/{id}."))
    filename = fields.String(required=True)
    content_type = fields.String(required=True, **described("As the message declared it."))
    size = fields.Integer(required=True, **described("Bytes."))


class InboundRoutedSchema(Answer):
    kind = fields.String(required=True, **described('"outbox" (a message Postroom sent) or "applicant".'))
    id = fields.Integer(required=True)
    via = fields.String(
        **described("What matched: reply_token, in_reply_to, short_id, sender, or bounce (a delivery status notice).")
    )


class InboundBounceSchema(Answer):
    recipient_id = fields.Integer(required=True, **described("The outbox recipient."))
    recipient = fields.String(required=True, **described("The address that bounced."))
    status = fields.String(required=True, allow_none=True, **described('The RFC 3463 status, e.g. "5.1.1".'))
    reason = fields.String(required=True, allow_none=True, **described("The receiving server's words, one line."))


class InboundItemSchema(Answer):
    id = fields.Integer(required=True)
    message_id = fields.String(required=True, allow_none=True, **described("The Message-ID, with its <>."))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    reason = fields.String(required=True, allow_none=True, **described("Why it failed, in one sentence."))
    data = fields.Dict(required=True, **described("The structured data found (JSON part, JSON or YAML body)."))
    text = fields.String(required=True, **described("The free text, without signature and quoted history."))
    attachments = fields.List(fields.Nested(InboundAttachmentSchema), required=True)
    routed_to = fields.Nested(InboundRoutedSchema, required=True, allow_none=True)
    data_source = fields.String(
        required=True, allow_none=True, **described('Where the data came from: "json part", "json", "yaml", or null.')
    )
    auto_reply = fields.String(
        required=True, allow_none=True, **described("Why it is an automatic reply (RFC 3834), or null.")
    )
    sender = fields.String(required=True, allow_none=True)
    subject = fields.String(required=True)
    applicant_id = fields.Integer(required=True, allow_none=True)
    bounced_recipients = fields.Integer(required=True, **described("Recipients a bounce marked bounced."))
    bounces = fields.List(
        fields.Nested(InboundBounceSchema),
        required=True,
        **described("Who this bounce notice marked bounced."),
    )
    mailbox_id = fields.Integer(required=True)
    moved = fields.Boolean(required=True, **described("Moved out of the source folder yet."))
    created_at = when(required=True)
    processed_at = when(required=True, allow_none=True)


InboundItems = page_of(InboundItemSchema, "InboundItemPage")


class InboundItemArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(STATUSES), **described("Only processed or only failed items."))


class InboundRunSchema(Answer):
    processed = fields.Integer(required=True, **described("Messages processed in this run."))
    failed = fields.Integer(required=True, **described("Messages that failed (moved to the failed folder)."))


@bp.route("/mailboxes")
@bp.arguments(PageArgs, location="query")
@bp.response(200, InboundMailboxes)
def mailboxes(args: dict[str, Any]) -> dict[str, Any]:
    """The organisation's processing mailboxes, oldest first."""
    with sessions()() as s:
        return cut(list_mailboxes(s, org_id()), args)


@bp.route("/mailboxes", methods=["POST"])
@admins_only(bp)
@bp.arguments(InboundMailboxBody)
@bp.response(201, InboundMailboxCreatedSchema)
def designate(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Designate an account as a processing mailbox (``postroom inbound add``); its folders are
    created on its first run. Admins only."""
    require_admin(ADMINS_ONLY)
    name_fields(account="account_id")
    with sessions().begin() as s:
        box_id = add_mailbox(
            s, config(), org_id(), body["account_id"], body["folder"], body["processed"], body["failed"], body["move"]
        )
    return {"id": box_id}, 201


@bp.route("/items")
@bp.arguments(InboundItemArgs, location="query")
@bp.response(200, InboundItems)
def items(args: dict[str, Any]) -> dict[str, Any]:
    """What the processing mailboxes took, newest first."""
    with sessions()() as s:
        page = item_page(s, org_id(), args.get("status"), args["offset"], args["limit"])
    return page.as_json(lambda item: item.as_json())


@bp.route("/items/<int:item_id>")
@bp.response(200, InboundItemSchema)
def item(item_id: int) -> dict[str, Any]:
    """One inbound item."""
    with sessions()() as s, not_found(NoSuchInbound):
        return get_item(s, org_id(), item_id).as_json()


@bp.route("/items/<int:item_id>/retry", methods=["POST"])
@bp.response(200, InboundItemSchema)
def retry(item_id: int) -> dict[str, Any]:
    """Process an item again from its kept message (``postroom inbound retry``); when it now
    succeeds, its message moves from the failed folder to the processed one. The answer is the
    item, ``processed`` or still ``failed`` with its reason."""
    with not_found(NoSuchInbound):
        return retry_item(config(), sessions(), org_id(), item_id).as_json()


@bp.route("/run", methods=["POST"])
@bp.response(200, InboundRunSchema)
def run() -> dict[str, Any]:
    """Take the new mail of the organisation's processing mailboxes now (the worker does it
    every ``[inbound] interval``); a mailbox it could not reach keeps the reason in its ``last_error``."""
    result = run_once(config(), sessions(), org_id())
    return {"processed": result.processed, "failed": result.failed}


@bp.route("/attachments/<int:attachment_id>")
@bp.response(
    200,
    {"type": "string", "format": "binary"},
    content_type="application/octet-stream",
    description="The file, as an attachment; inert types (PDF, PNG, JPEG, GIF, WebP, MP4) declared as they are.",
)
def attachment(attachment_id: int) -> Response:
    """An attachment a processing mailbox kept."""
    with sessions()() as s, not_found(NoSuchInbound):
        found = get_attachment(s, config(), org_id(), attachment_id)
    return attachment_download(found)
