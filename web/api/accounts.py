"""``/api/v1/accounts``: the organisation's mailboxes — list, one with its health, connect an
IMAP/SMTP mailbox (the fields of ``postroom accounts add-imap``, the password in the body),
remove one."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from postroom.models import utcnow
from services.accounts import (
    SECURITY_MODES,
    ImapAccountRequest,
    NoSuchAccount,
    add_imap_account,
    delete_account,
    get_account,
    list_accounts,
)
from web.api.common import api_blueprint, config, not_found, org_id, sessions
from web.api.schemas import Answer, CreatedSchema, PageArgs, Request, cut, described, page_of, when

bp = api_blueprint("accounts", "Connected mailboxes and their health.")


class AccountSchema(Answer):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    provider = fields.String(required=True, **described("imap, gmail, graph or ews."))
    status = fields.String(required=True, **described("active, syncing, backing-off, reconnect-needed or disabled."))
    last_sync_at = when(required=True, allow_none=True)
    last_success_at = when(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True, **described("The last error, in one sentence."))


AccountPage = page_of(AccountSchema, "AccountPage")


class AccountHealthSchema(Answer):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    provider = fields.String(required=True)
    status = fields.String(required=True)
    last_success_at = when(required=True, allow_none=True)
    lag_seconds = fields.Float(required=True, **described("Since the last successful sync (or since it was added)."))
    next_sync_at = when(required=True, allow_none=True)
    failure_count = fields.Integer(required=True, **described("Failures in a row."))
    last_error = fields.String(required=True, allow_none=True, **described("The last error, in one sentence."))
    last_error_class = fields.String(required=True, allow_none=True)
    syncing_on = fields.String(required=True, allow_none=True, **described("The worker syncing it now, if any."))


class ImapAccountBody(Request):
    email = fields.String(required=True, **described("The mailbox's address."))
    username = fields.String(required=True, **described("The login name (often the address)."))
    password = fields.String(required=True, load_only=True)
    imap_host = fields.String(required=True)
    imap_port = fields.Integer(required=True)
    imap_security = fields.String(required=True, validate=validate.OneOf(SECURITY_MODES))
    smtp_host = fields.String(required=True)
    smtp_port = fields.Integer(required=True)
    smtp_security = fields.String(required=True, validate=validate.OneOf(SECURITY_MODES))
    allow_plaintext = fields.Boolean(
        load_default=False, **described("Allow security none to a host that is not this machine.")
    )
    proxy = fields.String(load_default=None, allow_none=True, **described("An HTTP CONNECT proxy for IMAP."))


@bp.route("")
@bp.arguments(PageArgs, location="query")
@bp.response(200, AccountPage)
def list_(args: dict[str, Any]) -> dict[str, Any]:
    """The organisation's mailboxes, by id."""
    with sessions()() as s:
        return cut(list_accounts(s, org_id()), args)


@bp.route("", methods=["POST"])
@bp.arguments(ImapAccountBody)
@bp.response(201, CreatedSchema)
def add_imap(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Connect an IMAP/SMTP mailbox. The first sync starts within a minute; its health is at
    ``GET /api/v1/accounts/{id}``."""
    req = ImapAccountRequest(**body, org_id=org_id())
    with sessions().begin() as s:
        account_id = add_imap_account(s, config(), req).id
    return {"id": account_id}, 201, {"Location": f"{bp.url_prefix}/{account_id}"}


@bp.route("/<int:account_id>")
@bp.response(200, AccountHealthSchema)
def get(account_id: int) -> dict[str, Any]:
    """One mailbox with its health: state, last successful sync, lag, last error."""
    with sessions()() as s, not_found(NoSuchAccount):
        return get_account(s, org_id(), account_id, utcnow()).as_json()


@bp.route("/<int:account_id>", methods=["DELETE"])
@bp.response(204)
def delete(account_id: int) -> None:
    """Remove a mailbox and what only it held (its outbox, the messages no other mailbox holds);
    messages another mailbox also holds stay, with applicants' histories."""
    with sessions().begin() as s, not_found(NoSuchAccount):
        delete_account(s, org_id(), account_id)
