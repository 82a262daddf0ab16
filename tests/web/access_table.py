"""The table of the access test (tests/web/test_access.py): every route of the app, by its rule
string, and how to call it — which of organisation A's objects fills each URL variable, which
query strings and form fields to send — or, for a public route, why it is public.

Add a row with every new route: the access test fails for a route of the URL map that is not here,
and for a row whose route is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ref:
    """The id (or name) of organisation A's object of ``kind``, in a query string or a form."""

    kind: str


@dataclass(frozen=True)
class Private:
    """A route for signed-in users (pages) or token holders (API).

    ``fill`` maps each URL variable to the kind of A's object whose id it takes (see
    :meth:`World.value`); ``queries`` are query strings to call it with as well (each a variant;
    a :class:`Ref` in one makes that call name A's object); ``data`` is a form (or JSON body)
    complete enough to get past validation to the ownership check, where a :class:`Ref` names
    A's object too; ``signs_out``: the route ends the session that calls it; ``admin``: only an
    admin may change through it, before any ownership check (its body names A's object, not its
    URL), so B's calls other than GET are made by B's admin, to reach that check."""

    fill: Mapping[str, str] = field(default_factory=dict)
    queries: tuple[Mapping[str, Any], ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    signs_out: bool = False
    admin: bool = False


@dataclass(frozen=True)
class Public:
    """A route anyone may call, and why; ``fill`` as for :class:`Private`."""

    reason: str
    fill: Mapping[str, str] = field(default_factory=dict)
    queries: tuple[Mapping[str, Any], ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


APPLICANT_FORM = {"name": "Renamed by Bravo", "addresses": "renamed@bravo.test"}
TEMPLATE_FORM = {"name": "Taken by Bravo", "subject": "Bravo subject", "body": "Bravo body"}
# B sends from A's mailbox, to A's applicant, with A's template: each must be refused
SEND_FORM = {
    "account": Ref("account"),
    "to": "someone@bravo.test",
    "subject": "Bravo sends as Alpha",
    "body": "This must not leave Alpha's mailbox.",
    "applicant": Ref("applicant"),
}
# B's admin designates A's mailbox as its processing mailbox: refused like an account that does not exist
INBOUND_FORM = {"account": Ref("account"), "folder": "INBOX", "processed": "processed", "failed": "failed"}
PREVIEW_FORM = {"account": Ref("account"), "to": "someone@bravo.test", "template": Ref("template_name")}

# Every rule of the URL map, by its rule string. Add a row with each new route.
ROUTES: dict[str, Private | Public] = {
    # ---- public
    "/login": Public("the sign-in page itself"),
    "/healthz": Public("liveness for load balancers: says only whether the database answers"),
    "/metrics": Public("Prometheus scrapes; [metrics] token guards it (tests/web/test_web_security.py)"),
    "/static/<path:filename>": Public("the stylesheet and htmx; no data", {"filename": "static_file"}),
    "/connect/microsoft/callback": Public(
        "Microsoft's cross-site form_post carries no session cookie; it is bound to the user who started "
        "the flow by its own signed cookie (web.blueprints.microsoft_connect)"
    ),
    # ---- pages
    "/": Private(),
    "/logout": Private(signs_out=True),
    "/connect": Private(),
    "/connect/imap": Private(data={"email": "not an address"}),
    "/connect/imap/save": Private(),
    "/connect/google": Private(),
    "/connect/google/callback": Private(),
    "/connect/microsoft": Private(),
    "/mailboxes": Private(),
    "/mailboxes/live": Private(),
    "/mailboxes/<int:account_id>/reconnect": Private(
        {"account_id": "account"}, data={"password": "bravo guesses a password"}
    ),
    "/applicants": Private(queries=({"q": "Quentin"},)),
    "/applicants/<int:applicant_id>": Private({"applicant_id": "applicant"}),
    "/applicants/<int:applicant_id>/edit": Private({"applicant_id": "applicant"}, data=APPLICANT_FORM),
    "/inbound": Private(queries=({"status": "failed"}, {"offset": "25"}), data=INBOUND_FORM, admin=True),
    "/inbound/run": Private(),
    "/inbound/items/<int:item_id>/retry": Private({"item_id": "inbound_item"}),
    "/inbound/attachments/<int:attachment_id>": Private({"attachment_id": "inbound_attachment"}),
    "/threads/<int:thread_id>": Private({"thread_id": "thread"}),
    "/messages/<int:email_id>": Private({"email_id": "email"}, queries=({"images": "1"},)),
    "/messages/<int:email_id>/attachments/<int:index>": Private({"email_id": "email", "index": "attachment"}),
    "/img/<sig>": Public(
        "the image proxy: the HMAC signature of the URL is the permission, and the sandboxed mail frame "
        "that loads it has an opaque origin, so it sends no session cookie (tests/browser/test_reading.py)",
        {"sig": "image_sig"},
        queries=({"u": Ref("image_url")},),
    ),
    "/compose": Private(queries=({"reply_to": Ref("email")}, {"applicant": Ref("applicant")}), data=SEND_FORM),
    "/compose/preview": Private(data=PREVIEW_FORM),
    "/templates": Private(),
    "/templates/new": Private(data={}),
    "/templates/<int:template_id>": Private({"template_id": "template"}, data=TEMPLATE_FORM),
    "/outbox": Private(queries=({"status": "queued"},)),
    "/outbox/<int:outbox_id>/retry": Private({"outbox_id": "outbox"}, data={"force": "1"}),
    "/webhooks": Private(
        queries=({"offset": "50"},), data={"url": "https://hooks.bravo.test/x", "events": "message.opened"}
    ),
    "/webhooks/<int:subscription_id>/rotate": Private({"subscription_id": "webhook"}),
    "/webhooks/<int:subscription_id>/delete": Private({"subscription_id": "webhook"}),
    # ---- the JSON API (bearer tokens)
    "/api/v1/openapi.json": Public("the OpenAPI document: the API's shape, no data"),
    "/api/v1/accounts": Private(queries=({"limit": "5"},), data={"email": "not an address"}),
    "/api/v1/accounts/<int:account_id>": Private({"account_id": "account"}),
    "/api/v1/applicants": Private(queries=({"q": "Quentin"},), data={"name": "", "addresses": []}),
    "/api/v1/applicants/<int:applicant_id>": Private({"applicant_id": "applicant"}, data={"name": "Renamed by Bravo"}),
    "/api/v1/applicants/<int:applicant_id>/timeline": Private({"applicant_id": "applicant"}),
    "/api/v1/inbound/mailboxes": Private(queries=({"limit": "5"},), data={"account_id": Ref("account")}, admin=True),
    "/api/v1/inbound/items": Private(queries=({"status": "failed"}, {"offset": "0", "limit": "1"})),
    "/api/v1/inbound/items/<int:item_id>": Private({"item_id": "inbound_item"}),
    "/api/v1/inbound/items/<int:item_id>/retry": Private({"item_id": "inbound_item"}),
    "/api/v1/inbound/run": Private(),
    "/api/v1/inbound/attachments/<int:attachment_id>": Private({"attachment_id": "inbound_attachment"}),
    "/api/v1/messages": Private(
        data={
            "account_id": Ref("account"),
            "to": ["someone@bravo.test"],
            "subject": "Bravo sends as Alpha",
            "body": "This must not leave Alpha's mailbox.",
            "applicant_id": Ref("applicant"),
        }
    ),
    "/api/v1/messages/<int:email_id>": Private({"email_id": "email"}, queries=({"show_images": "true"},)),
    "/api/v1/outbox": Private(queries=({"status": "queued"},)),
    "/api/v1/outbox/<int:outbox_id>/retry": Private({"outbox_id": "outbox"}, data={"force": True}),
    "/api/v1/templates": Private(data={"name": "", "subject": "", "body": ""}),
    "/api/v1/templates/<int:template_id>": Private({"template_id": "template"}, data=TEMPLATE_FORM),
    "/api/v1/templates/<int:template_id>/results": Private({"template_id": "template"}),
    "/api/v1/threads/<int:thread_id>": Private({"thread_id": "thread"}),
    "/api/v1/tracking": Private(queries=({"message_id": Ref("outbox_message_id")},)),
    "/api/v1/webhooks": Private(
        queries=({"limit": "5"},), data={"url": "https://hooks.bravo.test/x", "events": ["message.opened"]}
    ),
    "/api/v1/webhooks/<int:subscription_id>": Private({"subscription_id": "webhook"}),
    "/api/v1/webhooks/<int:subscription_id>/rotate": Private({"subscription_id": "webhook"}),
    "/api/v1/webhooks/deliveries": Private(queries=({"offset": "0"},)),
}
