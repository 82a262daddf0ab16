"""``/api/v1/webhooks``: the organisation's webhook subscriptions (list, add, read, delete, rotate
the signing secret) and the delivery log (``/api/v1/webhooks/deliveries``), as ``postroom
webhooks`` does; the contract of a delivery is ``docs/webhooks.md``.

A subscription's secret is in the answer to ``POST`` (and to ``rotate``) only: it is stored
sealed and never shown again. Reading needs any token of the organisation; changing (add,
rotate, delete) needs an admin's, because a subscription sends the organisation's events (its
applicants' mail, replies, bounces) to the URL it names: a recruiter's token answers ``403``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from services.webhooks import (
    EVENTS,
    MAX_URL,
    NoSuchWebhook,
    add_subscription,
    delete_subscription,
    delivery_page,
    get_subscription,
    list_subscriptions,
    rotate_secret,
)
from web.api.common import admins_only, api_blueprint, config, not_found, org_id, require_admin, sessions
from web.api.schemas import Answer, PageArgs, Request, cut, described, page_of, when

bp = api_blueprint("webhooks", "Webhook subscriptions, their signing secrets, and the delivery log.")
ADMINS_ONLY = "Only an admin of the organisation may change its webhooks; this token is a recruiter's."


class SubscriptionSchema(Answer):
    id = fields.Integer(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    active = fields.Boolean(required=True, **described("False once a receiver answered 410 Gone."))
    disabled_reason = fields.String(required=True, allow_none=True, **described("Why it was disabled, or null."))
    created_at = when(required=True)
    rotating_until = when(
        required=True,
        allow_none=True,
        description="During a rotation: until then deliveries are signed with the previous secret too.",
    )


SubscriptionPage = page_of(SubscriptionSchema, "WebhookSubscriptionPage")


class SubscriptionBody(Request):
    url = fields.String(
        required=True, validate=validate.Length(max=MAX_URL), **described("Where deliveries are POSTed (https).")
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENTS)),
        required=True,
        validate=validate.Length(min=1),
        **described(f"Of: {', '.join(EVENTS)}."),
    )


class SecretSchema(Answer):
    secret = fields.String(required=True, **described("The signing secret (whsec_…), shown only in this answer."))


class CreatedSubscriptionSchema(SecretSchema):
    id = fields.Integer(required=True)


class DeliverySchema(Answer):
    id = fields.Integer(required=True)
    subscription_id = fields.Integer(required=True)
    url = fields.String(required=True)
    event = fields.String(required=True)
    msg_id = fields.String(required=True, **described("The webhook-id header, the same on every attempt."))
    status = fields.String(required=True, **described("pending, failed (retried later), delivered or gave_up."))
    attempts = fields.Integer(required=True)
    next_attempt_at = when(required=True, allow_none=True)
    last_status_code = fields.Integer(required=True, allow_none=True, **described("The receiver's last HTTP status."))
    last_error = fields.String(required=True, allow_none=True)
    created_at = when(required=True)
    delivered_at = when(required=True, allow_none=True)


DeliveryPage = page_of(DeliverySchema, "WebhookDeliveryPage")


@bp.route("")
@bp.arguments(PageArgs, location="query")
@bp.response(200, SubscriptionPage)
def list_(args: dict[str, Any]) -> dict[str, Any]:
    """The organisation's subscriptions, oldest first (never their secrets)."""
    with sessions()() as s:
        return cut(list_subscriptions(s, config(), org_id()), args)


@bp.route("", methods=["POST"])
@admins_only(bp)
@bp.arguments(SubscriptionBody)
@bp.response(201, CreatedSubscriptionSchema)
def add(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Subscribe a URL to events; the answer holds its signing secret, shown only now. Admins only."""
    require_admin(ADMINS_ONLY)
    with sessions().begin() as s:
        sub_id, secret = add_subscription(s, config(), org_id(), body["url"], body["events"])
    return {"id": sub_id, "secret": secret}, 201, {"Location": f"{bp.url_prefix}/{sub_id}"}


@bp.route("/<int:subscription_id>")
@bp.response(200, SubscriptionSchema)
def get(subscription_id: int) -> dict[str, Any]:
    """One subscription."""
    with sessions()() as s, not_found(NoSuchWebhook):
        return get_subscription(s, config(), org_id(), subscription_id).as_json()


@bp.route("/<int:subscription_id>", methods=["DELETE"])
@admins_only(bp)
@bp.response(204)
def delete(subscription_id: int) -> None:
    """Remove a subscription with its queued deliveries and log; nothing more is sent to it. Admins only."""
    with sessions().begin() as s, not_found(NoSuchWebhook):
        get_subscription(s, config(), org_id(), subscription_id)  # another organisation's: 404 before 403
        require_admin(ADMINS_ONLY)
        delete_subscription(s, org_id(), subscription_id)


@bp.route("/<int:subscription_id>/rotate", methods=["POST"])
@admins_only(bp)
@bp.response(200, SecretSchema)
def rotate(subscription_id: int) -> dict[str, Any]:
    """A new signing secret, shown only now; the previous one keeps signing beside it for 24
    hours (``rotating_until``), so receivers can change over without losing a delivery. Admins only."""
    with sessions().begin() as s, not_found(NoSuchWebhook):
        get_subscription(s, config(), org_id(), subscription_id)
        require_admin(ADMINS_ONLY)
        secret, _ = rotate_secret(s, config(), org_id(), subscription_id)
    return {"secret": secret}


@bp.route("/deliveries")
@bp.arguments(PageArgs, location="query")
@bp.response(200, DeliveryPage)
def deliveries(args: dict[str, Any]) -> dict[str, Any]:
    """The delivery log, newest first: each delivery's event, status, attempts, next attempt and
    the receiver's last answer."""
    with sessions()() as s:
        return delivery_page(s, org_id(), args["offset"], args["limit"]).as_json(lambda d: d.as_json())
