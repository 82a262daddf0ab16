"""The access test (issue 12, item 7): every route of the app — pages and API, taken from
``app.url_map`` so a new route cannot be forgotten — called with every one of its methods, as
nobody and as another organisation's user, must refuse.

Organisation A gets one of everything, made the way a user makes it: a mailbox on the rig's
Dovecot synced by the real engine (so its thread, message, body and attachment are real), an
applicant, a template, a queued message, an API token. Every URL variable of a route is filled
with the id of A's object of that kind (the table :data:`tests.web.access_table.ROUTES` says
which), then:

* **nobody** (no cookie, no token): a page's GET redirects to ``/login``; any other method is
  refused before the view — 400 without a CSRF token, 401 with a valid anonymous one. The API
  answers 401 JSON with ``WWW-Authenticate: Bearer``, never a redirect.
* **organisation B's user** (pages, with B's valid CSRF token) or **B's API token** (API): 404
  for A's ids, exactly as for a missing id; a form without a CSRF token is refused with 400 first.
  B's user is a recruiter; on a route only an admin may change through (``admin=True`` in the
  table) B's recruiter is refused with 403 and B's admin makes the call, to reach the ownership check.
  A route without variables (a list, a form) may answer, but shows nothing of A — not even a
  form naming A's mailbox, applicant or template (send from A's account, preview A's template).
* in no answer does any of A's distinctive strings appear (body, ``Location``, or the flash on
  the next page), and afterwards A's accounts, applicants, templates, outbox and webhooks are unchanged.
* **control**: A's own user and token get each GET with A's ids answered 200, so a refusal
  above is the ownership check and not a wrongly filled URL.

:data:`ROUTES` must list exactly the rules in the URL map: a route added without a row (or a row
whose route is gone) fails :func:`test_every_route_is_in_the_table`. Public routes are listed
as :class:`Public` with the reason. The tracking endpoints ``/t/o/<token>.gif`` and
``/t/c/<token>`` are answered before Flask (:mod:`web.tracking`), so they are not in the URL map:
their tokens are HMAC-signed per recipient and they show nothing (tests/web/test_tracking_endpoints.py).
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from postroom.config import Config, load_config
from postroom.image_proxy import derive_key, sign_image_url
from postroom.models import (
    Applicant,
    ApplicantAddress,
    Email,
    MailAccount,
    OutboxMessage,
    Template,
    WebhookDelivery,
    WebhookSubscription,
)
from postroom.models_inbound import InboundAttachment, InboundMailbox
from services.applicants import add_applicant
from services.orgs import add_org
from services.sending import SendRequest, queue_message
from services.templates import add_template
from services.users import create_token
from services.webhooks import add_subscription, emit
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect, sync_ok
from tests.web.access_table import ROUTES, Private, Public, Ref
from tests.web.inbound_helpers import keep_attachment
from tests.web.signin import csrf_token, ensure_user, signed_in
from web import create_app

IGNORED_METHODS = {"HEAD", "OPTIONS"}
# Google's connect flow set up, so its routes answer as in production (Microsoft's would fetch
# its authority's metadata first; unset, it answers 503 "not set up", which is fine here)
CONNECT_FLOWS = {
    "POSTROOM_GOOGLE_CLIENT_ID": "cid.apps.googleusercontent.com",
    "POSTROOM_GOOGLE_CLIENT_SECRET": "google-secret",
}
# What only organisation A has: none of it may appear in an answer to nobody or to B.
A_ORG = "Zanzibar Alpha Hiring"
A_APPLICANT = "Quentin Xylophone-Alpha"
A_ADDRESS = "quentin.alpha@applicant-alpha.test"
A_SUBJECT = "Alpha offer letter Q7Z"
A_BODY = "Alpha salary figure 93417"
A_TEMPLATE = "Alpha template Kestrel"
A_TEMPLATE_SUBJECT = "Alpha template subject Heron"
A_OUTBOX_SUBJECT = "Alpha queued note Osprey"
A_ATTACHMENT = "alpha-contract-Z9.pdf"
A_WEBHOOK = "https://hooks.alpha-receiver.test/zanzibar-events"


@dataclass
class World:
    """Organisation A with one of everything, B with a user and a token, and the app."""

    app: Flask
    config: Config
    ids: dict[str, Any]
    a_email: str
    a_token: str
    b_email: str
    b_token: str
    b_admin_email: str
    b_admin_token: str

    def value(self, kind: str) -> Any:
        return self.ids[kind]


def _mail_from_the_applicant(box: Mailbox) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{A_APPLICANT} <{A_ADDRESS}>"
    msg["To"] = box.address
    msg["Subject"] = A_SUBJECT
    msg["Date"] = "Mon, 02 Jun 2025 09:30:00 +0000"
    msg["Message-ID"] = "<alpha-offer-1@applicant-alpha.test>"
    msg.set_content(f"Hello,\n\n{A_BODY}\n")
    msg.add_alternative(f'<p>{A_BODY}</p><img src="https://images.alpha.test/logo.png" alt="logo">', subtype="html")
    msg.add_attachment(b"%PDF-1.4 alpha", maintype="application", subtype="pdf", filename=A_ATTACHMENT)
    return msg.as_bytes(policy=SMTP)


@pytest.fixture
def world(env: dict[str, str], mailbox: Mailbox) -> Iterator[World]:
    config = load_config(env={**env, **CONNECT_FLOWS})
    app = create_app(config)
    sessions = app.extensions["postroom"]["sessions"]
    mailbox.append(_mail_from_the_applicant(mailbox))
    with sessions.begin() as s:
        a_org = add_org(s, A_ORG).id
        b_org = add_org(s, "Bravo Recruiting").id
    account_id = connect(config, sessions, mailbox, a_org)
    with sessions.begin() as s:
        applicant, _ = add_applicant(s, A_APPLICANT, [A_ADDRESS], org_id=a_org)
        template = add_template(s, a_org, A_TEMPLATE, A_TEMPLATE_SUBJECT, "Dear {{ applicant.name }}, welcome.")
        ids: dict[str, Any] = {
            "org": a_org,
            "account": account_id,
            "applicant": applicant.id,
            "template": template.id,
            "template_name": template.name,
            "static_file": "app.css",
        }
    sync_ok(config, sessions, ids["account"])  # the real engine: folder, thread, email, body, history
    with sessions.begin() as s:
        email = s.scalars(select(Email).where(Email.org_id == a_org)).one()
        assert email.body_id is not None, "the applicant's message body was not fetched"
        ids.update(email=email.id, thread=email.thread_id, message_id=email.message_id, attachment=0)
        queued = queue_message(
            s,
            config,
            SendRequest(
                account_id=ids["account"],
                to=[A_ADDRESS],
                subject=A_OUTBOX_SUBJECT,
                text="A note.",
                applicant_id=ids["applicant"],
            ),
        )
        ids.update(outbox=queued.id, outbox_message_id=queued.message_id)
        ids["webhook"], _ = add_subscription(s, config, a_org, A_WEBHOOK, ["message.opened"])
        emit(s, a_org, "message.opened", {"recipient": A_ADDRESS})  # a line in A's delivery log
    ids["inbound_attachment"] = keep_attachment(
        config, sessions, a_org, ids["account"], ids["applicant"], b"%PDF-1.4 alpha cv", filename="alpha-cv.pdf"
    )
    with sessions() as s:
        ids["inbound_item"] = s.get_one(InboundAttachment, ids["inbound_attachment"]).item_id
    image_url = "http://127.0.0.1:9/alpha-logo.png"  # loopback: the proxy refuses it without a connection
    signed = urlsplit(sign_image_url(derive_key(config.security.key()), image_url))
    ids.update(image_url=image_url, image_sig=signed.path.rsplit("/", 1)[1])
    a_user = ensure_user(app, "alice@alpha.test", a_org)
    b_user = ensure_user(app, "bob@bravo.test", b_org)
    b_admin = ensure_user(app, "bea@bravo.test", b_org, "admin")
    with sessions.begin() as s:
        a_token, b_token, b_admin_token = create_token(s, a_user), create_token(s, b_user), create_token(s, b_admin)
    yield World(
        app, config, ids, "alice@alpha.test", a_token, "bob@bravo.test", b_token, "bea@bravo.test", b_admin_token
    )
    app.extensions["postroom"]["hits"].close()
    sessions.kw["bind"].dispose()


A_STRINGS = (
    A_ORG,
    A_APPLICANT,
    A_ADDRESS,
    A_SUBJECT,
    A_BODY,
    A_TEMPLATE,
    A_TEMPLATE_SUBJECT,
    A_OUTBOX_SUBJECT,
    A_ATTACHMENT,
    A_WEBHOOK,
    "alpha-offer-1@applicant-alpha.test",
)


# ------------------------------------------------------------------------------------ helpers
@dataclass(frozen=True)
class Call:
    rule: Rule
    entry: Private | Public
    method: str
    url: str
    data: Mapping[str, Any]
    names_a: bool  # the URL (path or query) names one of A's objects

    @property
    def api(self) -> bool:
        return self.rule.rule.startswith("/api/")

    def __str__(self) -> str:
        return f"{self.method} {self.url} ({self.rule.rule})"


def _rules(app: Flask) -> list[Rule]:
    return sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))


def _resolve(world: World, values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: world.value(v.kind) if isinstance(v, Ref) else v for k, v in values.items()}


def _calls(world: World, kind: type[Private] | type[Public]) -> list[Call]:
    """Every (route, method) of ``kind``, with A's ids filled in, and each GET once more per query."""
    adapter = world.app.url_map.bind("localhost")
    calls = []
    for rule in _rules(world.app):
        entry = ROUTES[rule.rule]
        if not isinstance(entry, kind):
            continue
        values = {var: world.value(entry.fill[var]) for var in rule.arguments}
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            path = adapter.build(rule.endpoint, values, method=method)
            if method != "GET":
                calls.append(Call(rule, entry, method, path, _resolve(world, entry.data), bool(values)))
                continue
            calls.append(Call(rule, entry, method, path, {}, bool(values)))
            for query in entry.queries:
                url = path + "?" + urlencode(_resolve(world, query))
                refs = any(isinstance(v, Ref) for v in query.values())
                calls.append(Call(rule, entry, method, url, {}, bool(values) or refs))
    return calls


def _send(client: FlaskClient, call: Call, *, token: str | None = None, csrf: str | None = None) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if call.method == "GET":
        return client.get(call.url, headers=headers)
    if call.api:
        return client.open(call.url, method=call.method, headers=headers, json=dict(call.data))
    form = {**call.data, **({"csrf_token": csrf} if csrf else {})}
    return client.open(call.url, method=call.method, headers={**headers, "Referer": "http://localhost/"}, data=form)


def _leaks(resp: TestResponse) -> list[str]:
    text = resp.get_data(as_text=True) + " " + resp.headers.get("Location", "")
    return [s for s in A_STRINGS if s in text]


def _check(failures: list[str], call: Call, resp: TestResponse, ok: Callable[[TestResponse], bool], want: str) -> None:
    leaked = _leaks(resp)
    if leaked:
        failures.append(f"{call} answered {resp.status_code} showing A's {leaked}")
    elif not ok(resp):
        failures.append(f"{call} answered {resp.status_code}, wanted {want}: {resp.get_data(as_text=True)[:200]!r}")


def _anonymous_csrf(client: FlaskClient) -> str:
    return csrf_token(client.get("/login").get_data(as_text=True))


def _page_csrf(client: FlaskClient) -> str:
    return csrf_token(client.get("/").get_data(as_text=True))


def _not_a_crash(resp: TestResponse) -> bool:
    return resp.status_code != 500


def _is_json_401(resp: TestResponse) -> bool:
    body = resp.get_json(silent=True)
    return (
        resp.status_code == 401
        and isinstance(body, dict)
        and bool(body.get("error"))
        and resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    )


def _is_json_404(resp: TestResponse) -> bool:
    body = resp.get_json(silent=True)
    return resp.status_code == 404 and isinstance(body, dict) and bool(body.get("error"))


def _snapshot(world: World) -> dict[str, Any]:
    """Everything of A's a refused request could have changed."""
    org = world.ids["org"]
    with world.app.extensions["postroom"]["sessions"]() as s:
        return {
            "accounts": s.execute(
                select(MailAccount.id, MailAccount.email, MailAccount.settings, MailAccount.secret, MailAccount.status)
                .where(MailAccount.org_id == org)
                .order_by(MailAccount.id)
            ).all(),
            "applicants": s.execute(
                select(Applicant.id, Applicant.name, ApplicantAddress.address)
                .join(ApplicantAddress, ApplicantAddress.applicant_id == Applicant.id)
                .where(Applicant.org_id == org)
                .order_by(ApplicantAddress.id)
            ).all(),
            "templates": s.execute(
                select(Template.id, Template.name, Template.subject, Template.body).where(Template.org_id == org)
            ).all(),
            "outbox": s.execute(
                select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.attempts)
                .join(MailAccount, MailAccount.id == OutboxMessage.account_id)
                .where(MailAccount.org_id == org)
                .order_by(OutboxMessage.id)
            ).all(),
            "webhooks": s.execute(
                select(WebhookSubscription.id, WebhookSubscription.url, WebhookSubscription.secret)
                .where(WebhookSubscription.org_id == org)
                .order_by(WebhookSubscription.id)
            ).all(),
            "deliveries": s.execute(
                select(WebhookDelivery.id, WebhookDelivery.status)
                .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
                .where(WebhookSubscription.org_id == org)
            ).all(),
            "processing mailboxes": s.execute(
                select(InboundMailbox.id, InboundMailbox.org_id)
                .join(MailAccount, MailAccount.id == InboundMailbox.account_id)
                .where(MailAccount.org_id == org)
            ).all(),
        }


# ------------------------------------------------------------------------------------ tests
def test_every_route_is_in_the_table(config: Config) -> None:
    app = create_app(config)
    rules = {r.rule: r for r in _rules(app)}
    missing = sorted(set(rules) - set(ROUTES))
    assert not missing, f"routes the access test does not cover (add them to ROUTES): {missing}"
    stale = sorted(set(ROUTES) - set(rules))
    assert not stale, f"ROUTES lists routes the app no longer has: {stale}"
    for path, rule in rules.items():
        unfilled = set(rule.arguments) - set(ROUTES[path].fill)
        assert not unfilled, f"{path}: ROUTES does not say how to fill {sorted(unfilled)}"
    app.extensions["postroom"]["hits"].close()
    app.extensions["postroom"]["sessions"].kw["bind"].dispose()


def test_nobody_is_refused_by_every_private_route(world: World) -> None:
    before = _snapshot(world)
    failures: list[str] = []
    client = world.app.test_client()
    anonymous_token = _anonymous_csrf(client)
    for call in _calls(world, Private):
        if call.api:
            _check(failures, call, _send(client, call), _is_json_401, "401 JSON with WWW-Authenticate: Bearer")
        elif call.method == "GET":
            resp = _send(client, call)
            _check(
                failures,
                call,
                resp,
                lambda r: r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/login",
                "a redirect to /login",
            )
        else:
            _check(failures, call, _send(client, call), lambda r: r.status_code == 400, "400 (no CSRF token)")
            resp = _send(client, call, csrf=anonymous_token)
            _check(failures, call, resp, lambda r: r.status_code == 401, "401 (a valid token, but nobody signed in)")
    assert not failures, "\n".join(failures)
    assert _snapshot(world) == before


def test_another_organisation_gets_404_for_every_id_of_a(world: World) -> None:
    before = _snapshot(world)
    failures: list[str] = []
    client = signed_in(world.app, world.b_email)
    b_csrf = _page_csrf(client)
    admin_client = signed_in(world.app, world.b_admin_email)
    admin_csrf = _page_csrf(admin_client)
    for call in _calls(world, Private):
        refused = call.names_a
        as_admin = isinstance(call.entry, Private) and call.entry.admin and call.method != "GET"
        if call.api:
            if as_admin:
                resp = _send(client, call, token=world.b_token)
                _check(failures, call, resp, lambda r: r.status_code == 403, "403 to B's recruiter (admins only)")
            resp = _send(client, call, token=world.b_admin_token if as_admin else world.b_token)
            if refused:
                _check(failures, call, resp, _is_json_404, "404 JSON, as for a missing id")
            else:
                _check(failures, call, resp, _not_a_crash, "an answer without A's data")
            continue
        if call.method != "GET":
            resp = _send(client, call)
            _check(failures, call, resp, lambda r: r.status_code == 400, "400 (no CSRF token)")
        if as_admin:
            resp = _send(client, call, csrf=b_csrf)
            _check(failures, call, resp, lambda r: r.status_code == 403, "403 to B's recruiter (admins only)")
            resp = _send(admin_client, call, csrf=admin_csrf)
        else:
            resp = _send(client, call, csrf=b_csrf)
        if refused:
            _check(failures, call, resp, lambda r: r.status_code == 404, "404, as for a missing id")
        else:
            _check(failures, call, resp, _not_a_crash, "an answer without A's data")
        if isinstance(call.entry, Private) and call.entry.signs_out:
            client = signed_in(world.app, world.b_email)
            b_csrf = _page_csrf(client)
        elif call.method != "GET":  # what it flashed shows on the next page
            after = (admin_client if as_admin else client).get("/")
            _check(failures, call, after, lambda r: r.status_code == 200, "the dashboard next")
    assert not failures, "\n".join(failures)
    assert _snapshot(world) == before, "B's requests changed A's data"


def test_organisation_a_itself_is_answered_for_every_id(world: World) -> None:
    """The control: each GET naming A's objects works for A's own user or token, so B's 404
    above is the ownership check and not an id that names nothing."""
    failures: list[str] = []
    checked = 0
    client = signed_in(world.app, world.a_email)
    for call in _calls(world, Private):
        if call.method != "GET" or not call.names_a:
            continue
        resp = _send(client, call, token=world.a_token if call.api else None)
        checked += 1
        if resp.status_code != 200:
            failures.append(f"{call} answered {resp.status_code} to A's own user")
    assert not failures, "\n".join(failures)
    assert checked >= 8, f"only {checked} calls name A's objects: ROUTES has lost its fills"


def test_public_routes_show_nothing_of_a(world: World) -> None:
    failures: list[str] = []
    for who in ("nobody", "B"):
        client = world.app.test_client() if who == "nobody" else signed_in(world.app, world.b_email)
        for call in _calls(world, Public):
            _check(failures, call, _send(client, call), _not_a_crash, "an answer without A's data")
    assert not failures, "\n".join(failures)


def test_b_can_have_an_applicant_with_a_s_address_and_sees_none_of_a_s_mail(world: World) -> None:
    """Addresses are per organisation: B adding A's applicant's address learns nothing of A —
    not that the address is taken, not A's messages with it."""
    client = signed_in(world.app, world.b_email)
    form = {"csrf_token": _page_csrf(client), "name": "Bravo's Quentin", "addresses": A_ADDRESS}
    resp = client.post("/applicants", data=form, headers={"Referer": "http://localhost/"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Bravo&#39;s Quentin" in page or "Bravo's Quentin" in page
    assert not [s for s in A_STRINGS if s in page and s != A_ADDRESS]
    assert "No messages with" in page
