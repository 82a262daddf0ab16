"""A local Microsoft Graph v1.0 stand-in: the mail subset Postroom uses, over HTTPS.

>>> idp = IdentityStandIn()
>>> graph = GraphStandIn(idp)
>>> box = graph.add_user("rita@contoso.test")
>>> with graph.serve(ssl_context) as server:            # doctest: +SKIP
...     requests.get(server.url + "/v1.0/me", headers={"Authorization": "Bearer " + token})

Routes (also reachable as parts of ``POST /v1.0/$batch``, at most 20 per batch:
:mod:`standins.graph_batch`):
``GET /me``; ``GET /me/mailFolders`` (``$top``/``$skip`` paging), ``/me/mailFolders/{id}``
and ``.../childFolders`` (ids or well-known names); ``POST /me/mailFolders`` and ``POST
.../childFolders`` (create; 409 ``ErrorFolderExists`` for a name the parent has);
``GET /me/mailFolders/{id}/messages/delta``
(``$select``, ``$top`` or ``Prefer: odata.maxpagesize``, absolute ``@odata.nextLink`` /
``@odata.deltaLink``, ``@removed`` entries, 410 ``SyncStateNotFound``); ``POST
/me/mailFolders/{id}/messages`` and ``POST /me/messages`` (JSON, or base64 MIME as
text/plain, which always makes a draft); ``GET|PATCH|DELETE /me/messages/{id}``
(``$select``, ``$expand=singleValueExtendedProperties($filter=id eq '...')``);
``GET /me/messages/{id}/$value``; ``DELETE`` moves into Deleted Items (out of sight from
there), ``POST /me/messages/{id}/permanentDelete`` removes for good;
``GET /me/mailFolders/{id}/messages`` (``$filter`` of the one form
``internetMessageId eq '<id>'``, compared without regard to case as Exchange compares strings;
``$select``, ``$top``/``$skip``); ``POST /me/messages/{id}/move`` and ``/send``;
``POST /me/sendMail`` (JSON with ``saveToSentItems``, or base64 MIME, which always
saves to Sent Items). Mail sent to another user of the stand-in lands in their inbox;
mail to anyone else is kept in :attr:`GraphStandIn.outbound`.

Every call needs a bearer token from the shared :class:`~standins.microsoft_identity.IdentityStandIn`,
issued for Graph (a token for another resource answers 401, as an audience Graph does not accept).
:meth:`GraphStandIn.smtp_submission` starts Exchange Online's SMTP submission
(``smtp.office365.com``) as a companion: XOAUTH2 with tokens issued for ``SMTP.Send``, the
message filed in the sender's Sent Items before the ``250`` and delivered to exactly the
envelope recipients (:mod:`standins.smtp_submission`).
Test controls: :meth:`GraphStandIn.fail` (429/503/504 with Retry-After, per route,
also inside batches; with ``after=True`` the call is carried out first and only its
answer fails, is late or never comes), :meth:`GraphStandIn.break_message` (one message
whose every GET fails), ``mailbox.expire_sync_state()`` and the identity stand-in's
``expire_access_tokens``/``revoke``. :attr:`calls` records every call (batch parts
included) and :meth:`http_requests` the requests on the wire. Every JSON answer is
validated against :mod:`standins.graph_schema`; a violation becomes a 500 and is
recorded in ``schema_violations``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import compat32
from email.utils import getaddresses, make_msgid
from typing import Any
from urllib.parse import parse_qsl, urlencode

from werkzeug.wrappers import Request, Response

from standins import graph_render as render
from standins.faults import DROPPED, Fault, Faults, with_fault
from standins.graph_batch import batch_parts, part_answer
from standins.graph_https import HttpsServerThread
from standins.graph_schema import check
from standins.graph_store import GraphError, GraphMailbox, Item
from standins.httpserver import drop_connection
from standins.microsoft_identity import GRAPH, IdentityStandIn
from standins.smtp_submission import SmtpSubmissionServer

DEFAULT_PAGE, MAX_PAGE = 10, 1000
PROP_DELETE_AFTER_SUBMIT = ("boolean", 0x0E01)  # PidTagDeleteAfterSubmit
Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Call:
    """One Graph call as the stand-in saw it (a batch part is one call too)."""

    route: str  # "delta", "messages.get", "batch", ...
    user: str | None
    status: int
    in_batch: bool = False


_FILTER_ID = re.compile(r"internetMessageId eq '((?:[^']|'')*)'")


@dataclass
class _Req:
    mailbox: GraphMailbox
    groups: tuple[str, ...]
    args: dict[str, str]
    headers: dict[str, str]
    body: bytes
    base: str


_OPTIONS = {
    "me": {"$select"},
    "mailFolders.list": {"$top", "$skip", "$select", "includeHiddenFolders"},
    "mailFolders.get": {"$select"},
    "childFolders": {"$top", "$skip", "$select"},
    "mailFolders.create": set(),
    "delta": {"$select", "$top", "$skiptoken", "$deltatoken", "changeType"},
    "messages.get": {"$select", "$expand"},
    "messages.list": {"$filter", "$select", "$top", "$skip"},
}


class GraphStandIn:
    """Graph mail for any number of users, in memory, thread-safe."""

    def __init__(self, identity: IdentityStandIn) -> None:
        self.identity = identity
        self._lock = threading.Lock()
        self.mailboxes: dict[str, GraphMailbox] = {}
        self._faults = Faults()
        self._broken: dict[str, int] = {}  # message id -> status every GET of it answers
        self.calls: list[Call] = []
        self.outbound: list[tuple[str, list[str], bytes]] = []  # (sender, recipients, raw) leaving the tenant
        self.schema_violations: list[str] = []
        m = r"([^/]+)"
        self._routes: list[tuple[str, re.Pattern[str], str, Callable[[_Req], Answer]]] = [
            ("GET", re.compile(r"/me"), "me", self._me),
            ("GET", re.compile(r"/me/mailFolders"), "mailFolders.list", self._folders),
            ("GET", re.compile(rf"/me/mailFolders/{m}"), "mailFolders.get", self._folder),
            ("GET", re.compile(rf"/me/mailFolders/{m}/childFolders"), "childFolders", self._folders),
            ("POST", re.compile(r"/me/mailFolders"), "mailFolders.create", self._create_folder),
            ("POST", re.compile(rf"/me/mailFolders/{m}/childFolders"), "mailFolders.create", self._create_folder),
            ("GET", re.compile(rf"/me/mailFolders/{m}/messages/delta"), "delta", self._delta),
            ("GET", re.compile(rf"/me/mailFolders/{m}/messages"), "messages.list", self._list),
            ("POST", re.compile(rf"/me/mailFolders/{m}/messages"), "messages.create", self._create),
            ("POST", re.compile(r"/me/messages"), "messages.create", self._create),
            ("GET", re.compile(rf"/me/messages/{m}"), "messages.get", self._get),
            ("PATCH", re.compile(rf"/me/messages/{m}"), "messages.update", self._update),
            ("DELETE", re.compile(rf"/me/messages/{m}"), "messages.delete", self._delete),
            ("GET", re.compile(rf"/me/messages/{m}/\$value"), "messages.value", self._value),
            ("POST", re.compile(rf"/me/messages/{m}/move"), "messages.move", self._move),
            ("POST", re.compile(rf"/me/messages/{m}/permanentDelete"), "messages.permanentDelete", self._purge),
            ("POST", re.compile(rf"/me/messages/{m}/send"), "messages.send", self._send_draft),
            ("POST", re.compile(r"/me/sendMail"), "sendMail", self._send_mail),
        ]

    # ------------------------------------------------------------ test controls
    def add_user(self, address: str, display_name: str | None = None) -> GraphMailbox:
        self.identity.add_user(address, display_name)
        with self._lock:
            return self.mailboxes.setdefault(address.lower(), GraphMailbox(address, display_name))

    def mailbox(self, address: str) -> GraphMailbox:
        return self.mailboxes[address.lower()]

    def fail(
        self,
        route: str = "*",
        *,
        times: int = 1,
        status: int = 429,
        retry_after: float | None = None,
        after: bool = False,
        drop: bool = False,
        stall: float = 0.0,
    ) -> None:
        """Answer the next ``times`` calls of ``route`` ("delta", "batch", "*", ...) with ``status``.

        ``after=True``: carry the call out first (``sendMail`` sends), then answer with that
        status, or not at all (``drop=True``: the connection is closed), or with the call's
        own answer ``stall`` seconds late (a client's read timeout). Only calls made
        outside a batch can be dropped."""
        self._faults.add(Fault(route, times, status, None, retry_after, after, drop, stall))

    def break_message(self, message_id: str, status: int = 500) -> None:
        """Make every ``GET /me/messages/{id}`` of this message fail with ``status`` (500: an
        item Exchange cannot render, again and again), alone or inside a batch, until
        :meth:`mend_message`."""
        with self._lock:
            self._broken[message_id] = status

    def mend_message(self, message_id: str) -> None:
        with self._lock:
            self._broken.pop(message_id, None)

    def http_requests(self) -> list[Call]:
        """Calls that were requests on the wire (a batch counts once, its parts not at all)."""
        return [c for c in self.calls if not c.in_batch]

    def api_calls(self, route: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.route != "batch" and route in (None, c.route)]

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def serve(self, ssl_context: Any) -> HttpsServerThread:
        return HttpsServerThread(self.wsgi, ssl_context)

    def smtp_submission(self, ssl_context: Any) -> SmtpSubmissionServer:
        """Exchange Online's SMTP AUTH submission as a running companion server, STARTTLS required."""
        return SmtpSubmissionServer(
            self.identity.smtp_authorize, self.smtp_deliver, ssl_context=ssl_context, hostname="smtp.office365.com"
        )

    def smtp_deliver(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """A message submitted over SMTP: filed in the sender's Sent Items, delivered to exactly ``recipients``."""
        box = self.mailbox(sender)
        with box.lock:
            self._transport(box, raw, True, recipients)

    # ------------------------------------------------------------ WSGI
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        query = request.query_string.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, out_headers, body = self.dispatch(
            request.method, request.path, query, headers, request.get_data(), f"https://{request.host}"
        )
        if status == DROPPED:
            drop_connection(environ)
        return Response(body, status=status, headers=out_headers)(environ, start_response)

    def dispatch(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        base: str,
        batch_user: str | None = None,
    ) -> Answer:
        in_batch = batch_user is not None
        if not in_batch:
            if not path.startswith("/v1.0/"):
                return self._error(404, "BadRequest", f"Invalid version: {path.split('/')[1:2]}")
            path = path[len("/v1.0") :]
        path = re.sub(r"\('([^']*)'\)", r"/\1", path).removesuffix("()").replace("/delta()", "/delta")
        if path == "/$batch" and method == "POST" and not in_batch:
            return self._batch(headers, body, base)
        found = next(
            (
                (name, match.groups(), handler)
                for verb, rx, name, handler in self._routes
                if verb == method and (match := rx.fullmatch(path))
            ),
            None,
        )
        if found is None:
            return self._error(400, "BadRequest", f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'.")
        route, groups, handler = found
        user = batch_user
        if user is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            user, reason = self.identity.user_for(token.strip(), GRAPH) if scheme.lower() == "bearer" else (None, "")
            if user is None:
                self._log(Call(route, None, 401))
                return self._unauthorized(reason or "Access token is empty.")
        answer = self._call(route, groups, handler, user, query, headers, body, base)
        self._log(Call(route, user, answer[0], in_batch))
        return answer

    def _call(
        self,
        route: str,
        groups: tuple[str, ...],
        handler: Callable[[_Req], Answer],
        user: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        base: str,
    ) -> Answer:
        broken = self._broken.get(groups[0]) if route == "messages.get" else None
        if broken is not None:
            return render.unreadable_answer(broken)
        return with_fault(
            self._faults.take(route),
            lambda: self._carry_out(handler, user, query, groups, headers, body, base, route),
            self._fault,
        )

    def _carry_out(
        self,
        handler: Callable[[_Req], Answer],
        user: str,
        query: str,
        groups: tuple[str, ...],
        headers: dict[str, str],
        body: bytes,
        base: str,
        route: str,
    ) -> Answer:
        args = dict(parse_qsl(query, keep_blank_values=True))
        allowed = _OPTIONS.get(route, set())
        for name in args:
            if name not in allowed and (name.startswith("$") or route in _OPTIONS):
                return self._error(400, "BadRequest", f"Query option '{name}' is not allowed.")
        try:
            with self.mailbox(user).lock:
                return handler(_Req(self.mailbox(user), groups, args, headers, body, base))
        except GraphError as exc:
            return self._error(exc.status, exc.code, exc.message)

    # ------------------------------------------------------------ plumbing
    def _json(self, status: int, value: Any, ref: str, headers: dict[str, str] | None = None) -> Answer:
        problems = check(value, ref)
        if problems:
            with self._lock:
                self.schema_violations.extend(problems)
            return self._error(500, "InternalServerError", "stand-in broke the Graph schema: " + "; ".join(problems))
        out = {"Content-Type": "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"}
        out["request-id"] = str(uuid.uuid4())
        return status, {**out, **(headers or {})}, json.dumps(value).encode()

    _error = staticmethod(render.error_answer)
    _unauthorized = staticmethod(render.unauthorized_answer)
    _fault = staticmethod(render.fault_answer)

    def _log(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    # ------------------------------------------------------------ folders
    def _me(self, r: _Req) -> Answer:
        mb = r.mailbox
        me = {
            "@odata.context": f"{r.base}/v1.0/$metadata#users/$entity",
            "businessPhones": [],
            "displayName": mb.display_name,
            "mail": mb.address,
            "userPrincipalName": mb.address,
            "id": mb.user_id,
        }
        return self._json(200, me, "user")

    def _folders(self, r: _Req) -> Answer:
        parent = r.mailbox.folder(r.groups[0]).id if r.groups else r.mailbox.root_id
        folders = sorted(r.mailbox.children(parent), key=lambda f: f.display_name.lower())
        top, skip = int(r.args.get("$top", "10")), int(r.args.get("$skip", "0"))
        page = [render.folder_json(r.mailbox, f) for f in folders[skip : skip + top]]
        out: dict[str, Any] = {
            "@odata.context": f"{r.base}/v1.0/$metadata#users('{r.mailbox.user_id}')/mailFolders",
            "value": page,
        }
        if skip + top < len(folders):
            path = f"/v1.0/me/mailFolders/{r.groups[0]}/childFolders" if r.groups else "/v1.0/me/mailFolders"
            out["@odata.nextLink"] = f"{r.base}{path}?" + urlencode({"$top": top, "$skip": skip + top})
        return self._json(200, out, "mailFolderCollection")

    def _folder(self, r: _Req) -> Answer:
        value = render.folder_json(r.mailbox, r.mailbox.folder(r.groups[0]))
        return self._json(
            200, {"@odata.context": f"{r.base}/v1.0/$metadata#users/mailFolders/$entity", **value}, "mailFolder"
        )

    def _create_folder(self, r: _Req) -> Answer:
        """mailFolder create (at the top, or under a folder): 409 ErrorFolderExists when the parent
        has a folder of that name already (case aside, as Exchange compares names)."""
        name = render.json_body(r.body).get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise GraphError(400, "ErrorInvalidRequest", "displayName is missing.")
        parent = r.mailbox.folder(r.groups[0]).id if r.groups else r.mailbox.root_id
        if any(f.display_name.casefold() == name.casefold() for f in r.mailbox.children(parent)):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        folder = r.mailbox.folder(r.mailbox.add_folder(name, r.groups[0] if r.groups else None))
        value = {"@odata.context": f"{r.base}/v1.0/$metadata#users/mailFolders/$entity"}
        return self._json(201, {**value, **render.folder_json(r.mailbox, folder)}, "mailFolder")

    # ------------------------------------------------------------ delta
    def _delta(self, r: _Req) -> Answer:
        mb, args = r.mailbox, r.args
        headers: dict[str, str] = {}
        if "$deltatoken" in args or "$skiptoken" in args:
            if len(args) > 1:
                raise GraphError(400, "BadRequest", "Query options cannot be combined with a delta or skip token.")
            if "$deltatoken" in args:
                state = mb.delta_token(args["$deltatoken"])
                skip = mb.start_round(r.groups[0], state, state.select, state.page_size)
            else:
                skip = args["$skiptoken"]
        else:
            select = render.parse_select(args.get("$select"))
            page = int(args.get("$top", DEFAULT_PAGE))
            prefer = re.search(r"odata\.maxpagesize=(\d+)", r.headers.get("prefer", ""))
            if prefer:
                page = int(prefer.group(1))
                headers["Preference-Applied"] = f"odata.maxpagesize={min(page, MAX_PAGE)}"
            skip = mb.start_round(r.groups[0], None, select, max(1, min(page, MAX_PAGE)))
        entries, next_skip, delta, round_ = mb.next_page(skip)
        value = [
            render.message_json(mb, item, round_.select)
            if item is not None
            else {"@odata.type": "#microsoft.graph.message", "id": mid, "@removed": {"reason": "deleted"}}
            for mid, item in entries
        ]
        link = f"{r.base}/v1.0/me/mailFolders('{round_.folder_id}')/messages/delta?"
        out: dict[str, Any] = {"@odata.context": f"{r.base}/v1.0/$metadata#Collection(message)", "value": value}
        if next_skip is not None:
            out["@odata.nextLink"] = link + urlencode({"$skiptoken": next_skip})
        else:
            out["@odata.deltaLink"] = link + urlencode({"$deltatoken": delta})
        return self._json(200, out, "messageCollection", headers)

    # ------------------------------------------------------------ messages
    def _list(self, r: _Req) -> Answer:
        """The messages of one folder, oldest change first; ``$filter`` only as
        ``internetMessageId eq '...'`` (quotes doubled inside the literal)."""
        folder = r.mailbox.folder(r.groups[0])
        items = r.mailbox.in_folder(folder.id)
        if "$filter" in r.args:
            match = _FILTER_ID.fullmatch(r.args["$filter"].strip())
            if match is None:
                raise GraphError(400, "BadRequest", f"The stand-in does not implement $filter={r.args['$filter']!r}.")
            wanted = match.group(1).replace("''", "'").casefold()
            items = [i for i in items if str(i.headers().get("Message-ID", "")).strip().casefold() == wanted]
        select = render.parse_select(r.args.get("$select"))
        top, skip = int(r.args.get("$top", str(DEFAULT_PAGE))), int(r.args.get("$skip", "0"))
        value = [render.message_json(r.mailbox, i, select) for i in items[skip : skip + max(1, min(top, MAX_PAGE))]]
        context = f"{r.base}/v1.0/$metadata#users('{r.mailbox.user_id}')/mailFolders('{folder.id}')/messages"
        out: dict[str, Any] = {"@odata.context": context, "value": value}
        if skip + top < len(items):
            args = {k: v for k, v in r.args.items() if k != "$skip"} | {"$skip": str(skip + top)}
            out["@odata.nextLink"] = f"{r.base}/v1.0/me/mailFolders/{r.groups[0]}/messages?" + urlencode(args)
        return self._json(200, out, "messageCollection")

    def _render(self, r: _Req, item: Item, status: int = 200) -> Answer:
        select = render.parse_select(r.args.get("$select"))
        expand = render.parse_expand(r.args.get("$expand"))
        value = {
            "@odata.context": f"{r.base}/v1.0/$metadata#users('{r.mailbox.user_id}')/messages/$entity",
            **render.message_json(r.mailbox, item, select, expand),
        }
        return self._json(status, value, "message")

    def _get(self, r: _Req) -> Answer:
        return self._render(r, r.mailbox.item(r.groups[0]))

    def _value(self, r: _Req) -> Answer:
        return 200, {"Content-Type": "text/plain"}, r.mailbox.item(r.groups[0]).raw

    def _create(self, r: _Req) -> Answer:
        folder = r.groups[0] if r.groups else "drafts"
        if r.headers.get("content-type", "").startswith("text/plain"):
            raw = render.mime_body(r.body)
            item = r.mailbox.add(raw, folder, is_read=True, is_draft=True, delivered=False)
        else:
            message = render.json_body(r.body)
            raw, flags = render.mime_from_json(r.mailbox, message)
            draft = flags is None or bool(flags & 0x8)  # MSGFLAG_UNSENT, settable only on creation
            read = flags is None or bool(flags & 0x1)
            item = r.mailbox.add(raw, folder, is_read=read, is_draft=draft, delivered=False)
            status = (message.get("flag") or {}).get("flagStatus")
            if status:
                item = r.mailbox.update(item.id, flag=status)
        return self._render(r, item, 201)

    def _update(self, r: _Req) -> Answer:
        change = render.json_body(r.body)
        item = r.mailbox.item(r.groups[0])
        unknown = set(change) - {"isRead", "flag", "singleValueExtendedProperties", "categories"}
        if unknown:
            raise GraphError(400, "ErrorInvalidProperty", f"The stand-in does not update {sorted(unknown)}.")
        for prop in change.get("singleValueExtendedProperties") or []:
            kind, tag = render.property_id(prop["id"])
            if (kind, tag) != ("integer", 0x0E07):  # PidTagMessageFlags is read-only after the first save
                item.props[f"{kind} 0x{tag:x}"] = str(prop["value"])
        flag = (change.get("flag") or {}).get("flagStatus")
        read = change.get("isRead")
        if read is not None and not isinstance(read, bool):
            raise GraphError(400, "BadRequest", "Cannot convert the literal to the expected type 'Edm.Boolean'.")
        return self._render(r, r.mailbox.update(item.id, is_read=read, flag=flag))

    def _delete(self, r: _Req) -> Answer:
        """Into Deleted Items, as Exchange does; from Deleted Items out of the client's sight."""
        box = r.mailbox
        if box.item(r.groups[0]).folder_id == box.folder("deleteditems").id:
            box.delete(r.groups[0])
        else:
            box.move(r.groups[0], "deleteditems")
        return 204, {}, b""

    def _purge(self, r: _Req) -> Answer:
        r.mailbox.delete(r.groups[0])
        return 204, {}, b""

    def _move(self, r: _Req) -> Answer:
        destination = render.json_body(r.body).get("destinationId")
        if not isinstance(destination, str):
            raise GraphError(400, "ErrorInvalidIdMalformed", "destinationId is missing.")
        return self._render(r, r.mailbox.move(r.groups[0], destination), 201)

    # ------------------------------------------------------------ sending
    def _send_mail(self, r: _Req) -> Answer:
        if r.headers.get("content-type", "").startswith("text/plain"):
            raw, save = render.mime_body(r.body), True  # MIME sendMail always saves a copy
        else:
            payload = render.json_body(r.body)
            if not isinstance(payload.get("message"), dict):
                raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty.")
            raw, _ = render.mime_from_json(r.mailbox, payload["message"])
            save = payload.get("saveToSentItems", True)
            if not isinstance(save, bool):
                raise GraphError(400, "BadRequest", "Cannot convert the literal to the expected type 'Edm.Boolean'.")
        self._transport(r.mailbox, raw, save)
        return 202, {}, b""

    def _send_draft(self, r: _Req) -> Answer:
        item = r.mailbox.item(r.groups[0])
        if not item.is_draft:
            raise GraphError(400, "ErrorInvalidOperation", "Only draft messages can be sent.")
        save = item.props.get("boolean 0xe01", "false").lower() != "true"  # PidTagDeleteAfterSubmit
        r.mailbox.delete(item.id)
        self._transport(r.mailbox, item.raw, save)
        return 202, {}, b""

    def _transport(self, sender: GraphMailbox, raw: bytes, save: bool, envelope: list[str] | None = None) -> None:
        """Sent Items (``save``), then each recipient: the envelope's (SMTP) or the headers' (Graph)."""
        msg = message_from_bytes(raw, policy=compat32)
        if not msg.get("Message-ID"):
            raw = f"Message-ID: {make_msgid(domain='standin.prod.outlook.com')}\r\n".encode() + raw
        headers = [str(v) for h in ("To", "Cc", "Bcc") for v in msg.get_all(h, [])]
        recipients = envelope if envelope is not None else [a for _, a in getaddresses(headers) if a]
        if not recipients:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")
        if save:
            sender.add(raw, "sentitems", is_read=True, delivered=False)
        delivered = render.without_bcc(raw)
        outside = []
        for address in recipients:
            box = self.mailboxes.get(address.lower())
            if box is None:
                outside.append(address)
            elif box is sender:
                box.add(delivered, "inbox")
            else:
                with box.lock:
                    box.add(delivered, "inbox")
        if outside:
            with self._lock:
                self.outbound.append((sender.address, outside, delivered))

    # ------------------------------------------------------------ batch
    def _batch(self, headers: dict[str, str], body: bytes, base: str) -> Answer:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        user, reason = self.identity.user_for(token.strip(), GRAPH) if scheme.lower() == "bearer" else (None, "")
        if user is None:
            self._log(Call("batch", None, 401))
            return self._unauthorized(reason or "Access token is empty.")
        fault = self._faults.take("batch")
        if fault is not None:
            self._log(Call("batch", user, fault.status))
            return self._fault(fault)
        try:
            parts = batch_parts(body)
        except GraphError as exc:
            self._log(Call("batch", user, exc.status))
            return self._error(exc.status, exc.code, exc.message)
        self._log(Call("batch", user, 200))

        def dispatch(method: str, path: str, query: str, part_headers: dict[str, str], data: bytes) -> Answer:
            return self.dispatch(method, path, query, part_headers, data, base, batch_user=user)

        responses = [part_answer(part, dispatch, self._error) for part in parts]
        return self._json(200, {"responses": responses}, "batchResponse")
