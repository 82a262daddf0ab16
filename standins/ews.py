"""A local Exchange Web Services stand-in: SOAP over HTTP(S) at ``/EWS/Exchange.asmx``.

>>> ews = EwsStandIn()
>>> box = ews.add_user("rita@contoso.test", password="secret")
>>> with ews.serve() as server:                          # doctest: +SKIP
...     Configuration(service_endpoint=server.url + "/EWS/Exchange.asmx", ...)

Operations: ``GetFolder`` (ids or distinguished names), ``SyncFolderHierarchy``, ``CreateFolder``
(ErrorFolderExists for a name the parent folder has already),
``SyncFolderItems`` (SyncState, MaxChangesReturned paging, Create/Update/Delete/
ReadFlagChange, ErrorInvalidSyncStateData), ``GetItem`` (only the requested
properties; MimeContent base64 when asked), ``CreateItem`` (MessageDisposition
SaveOnly / SendOnly / SendAndSaveCopy, MIME or plain properties), ``FindItem`` (Shallow,
IndexedPageItemView paging, a Restriction of the one form ``IsEqualTo
message:InternetMessageId``, compared without regard to case as Exchange compares
strings), ``MoveItem`` and ``DeleteItem``. Mail sent to another user of the stand-in lands in their inbox; mail
to anyone else is kept in :attr:`EwsStandIn.outbound`.

Authentication: HTTP Basic (``add_user(password=...)``) and OAuth bearer tokens: ones
registered with ``add_token``, and, when built with ``EwsStandIn(identity)``, access
tokens issued by that :class:`~standins.microsoft_identity.IdentityStandIn` (the token
store it shares with the Graph stand-in) for a grant that consented to
``https://outlook.office365.com/EWS.AccessAsUser.All`` -- expired or revoked ones, or a
Graph-only grant's, are refused. Anything else is a 401 with ``WWW-Authenticate``
challenges (for a refused bearer, ``error="invalid_token"`` as Exchange Online says). NTLM
is not offered (see ``tests/standins/test_ews_standin.py``). A caller may open
another user's mailbox (``X-AnchorMailbox``/the ``Mailbox`` of a distinguished
folder id) only after :meth:`grant_delegate`.

Test controls: :meth:`busy` answers the next calls with the ``ErrorServerBusy``
fault carrying ``BackOffMilliseconds``; :meth:`fail` carries the next calls of an
operation out and then answers with an IIS error page (HTTP 500), late, or not at all; ``mailbox.expire_sync_states()``;
:attr:`calls` records every request (operation, mailbox, requested properties, the
request XML). It is served by the keep-alive server of :mod:`standins.httpserver`,
never with ``Connection: close`` (which exchangelib reads as throttling). Every
response is checked by :mod:`standins.ews_schema`; a violation becomes a 500 and
is recorded in :attr:`schema_violations`.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import compat32
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from lxml import etree

from standins import ews_xml as x
from standins.ews_schema import check
from standins.ews_store import MSGFLAG_READ, MSGFLAG_UNSENT, EwsFault, EwsMailbox
from standins.faults import DROPPED, Fault, Faults
from standins.graph_https import HttpsServerThread
from standins.httpserver import ServerThread, drop_connection
from standins.microsoft_identity import IdentityStandIn

PATH = "/EWS/Exchange.asmx"
EWS_SCOPE = "https://outlook.office365.com/EWS.AccessAsUser.All"
MAX_SYNC_CHANGES = 512
Answer = tuple[int, list[tuple[str, str]], bytes]
XML = [("Content-Type", "text/xml; charset=utf-8")]


@dataclass(frozen=True)
class Call:
    """One EWS request as the stand-in saw it."""

    operation: str
    user: str | None  # who authenticated
    mailbox: str | None  # whose mailbox it touched
    fields: tuple[x.Field, ...]  # the properties the ItemShape asked for
    status: int
    body: bytes


@dataclass
class _Busy:
    times: int
    back_off_ms: int
    operation: str
    mailbox: str | None


IIS_ERROR = b"<html><body><h1>Server Error in '/EWS' Application.</h1></body></html>"


class EwsStandIn:
    """Exchange mailboxes in memory, thread-safe, spoken to over EWS."""

    def __init__(self, identity: IdentityStandIn | None = None) -> None:
        self.identity = identity
        self._lock = threading.Lock()
        self.mailboxes: dict[str, EwsMailbox] = {}
        self._passwords: dict[str, tuple[str, str]] = {}  # username -> (password, address)
        self._tokens: dict[str, str] = {}  # bearer token -> address
        self._delegates: set[tuple[str, str]] = set()  # (caller, mailbox)
        self._busy: list[_Busy] = []
        self._faults = Faults()
        self.calls: list[Call] = []
        self.outbound: list[tuple[str, list[str], bytes]] = []
        self.schema_violations: list[str] = []

    # ------------------------------------------------------------ test controls
    def add_user(
        self, address: str, *, password: str | None = None, username: str | None = None, name: str | None = None
    ) -> EwsMailbox:
        with self._lock:
            box = self.mailboxes.setdefault(address.lower(), EwsMailbox(address, name))
            if password is not None:
                self._passwords[(username or address).lower()] = (password, address.lower())
            return box

    def mailbox(self, address: str) -> EwsMailbox:
        return self.mailboxes[address.lower()]

    def add_token(self, token: str, address: str) -> None:
        with self._lock:
            self._tokens[token] = address.lower()

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def grant_delegate(self, caller: str, mailbox: str) -> None:
        with self._lock:
            self._delegates.add((caller.lower(), mailbox.lower()))

    def busy(
        self, *, times: int = 1, back_off_ms: int = 30_000, operation: str = "*", mailbox: str | None = None
    ) -> None:
        """Answer the next ``times`` matching requests with ErrorServerBusy and BackOffMilliseconds."""
        with self._lock:
            self._busy.append(_Busy(times, back_off_ms, operation, mailbox and mailbox.lower()))

    def fail(self, operation: str = "CreateItem", *, times: int = 1, drop: bool = False, stall: float = 0.0) -> None:
        """Carry the next ``times`` requests of ``operation`` out (a send is sent), then answer
        with an IIS error page (HTTP 500), or not at all (``drop``: the connection is closed),
        or with the real answer ``stall`` seconds late (a client's read timeout)."""
        self._faults.add(Fault(operation, times, after=True, drop=drop, stall=stall))

    def requests(self, operation: str | None = None) -> list[Call]:
        return [c for c in self.calls if operation in (None, c.operation)]

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def serve(self, ssl_context: Any = None) -> ServerThread:
        """Serve on a free loopback port; over TLS when ``ssl_context`` is given."""
        return ServerThread(self.wsgi) if ssl_context is None else HttpsServerThread(self.wsgi, ssl_context)

    # ------------------------------------------------------------ HTTP
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        status, out, payload = self.handle(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), headers, body)
        if status == DROPPED:
            drop_connection(environ)
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal"}
        start_response(f"{status} {reason.get(status, 'Error')}", [*out, ("Content-Length", str(len(payload)))])
        return [payload]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.lower() != PATH.lower():
            return 404, [("Content-Type", "text/plain")], b"Not Found"
        if method != "POST":
            return 405, [("Content-Type", "text/plain"), ("Allow", "POST")], b"Method Not Allowed"
        user = self._authenticate(headers.get("authorization", ""))
        if user is None:
            bearer = (
                'Bearer error="invalid_token"'
                if headers.get("authorization", "")[:7].lower() == "bearer "
                else "Bearer"
            )
            challenges = [("WWW-Authenticate", 'Basic realm="ews.contoso.test"'), ("WWW-Authenticate", bearer)]
            self._log(Call("", None, None, (), 401, body))
            return 401, [("Content-Type", "text/plain"), *challenges], b"401 - Unauthorized: Access is denied."
        try:
            request = etree.fromstring(body)
            operation_el = next(el for el in request.find(f"{{{x.S}}}Body") if isinstance(el.tag, str))
        except (etree.XMLSyntaxError, StopIteration, TypeError):
            return 500, XML, b"<error>not a SOAP request</error>"
        operation = etree.QName(operation_el).localname
        target = (headers.get("x-anchormailbox") or user).lower()
        for address in operation_el.iter(f"{{{x.T}}}EmailAddress"):
            if address.getparent() is not None and etree.QName(address.getparent()).localname == "Mailbox":
                parent = address.getparent().getparent()
                if parent is not None and etree.QName(parent).localname == "DistinguishedFolderId":
                    target = (address.text or target).lower()
        fields = tuple(x.requested_fields(operation_el.find(x.m("ItemShape"))))
        if (target != user and (user, target) not in self._delegates) or target not in self.mailboxes:
            root, messages = x.envelope(operation)
            x.error(messages, operation, "ErrorAccessDenied", f"{user} may not open the mailbox {target}.")
            return self._answer(Call(operation, user, target, fields, 200, body), root)
        busy = self._take_busy(operation, target)
        if busy is not None:
            self._log(Call(operation, user, target, fields, 500, body))
            return 500, XML, x.serialize(x.server_busy(busy.back_off_ms))
        handler = getattr(self, f"_{operation}", None)
        root, messages = x.envelope(operation)
        if handler is None:
            x.error(messages, operation, "ErrorInvalidOperation", f"The stand-in does not implement {operation}.")
        else:
            box = self.mailbox(target)
            with box.lock:
                handler(box, operation_el, messages, operation)
        fault = self._faults.take(operation)
        if fault is not None:  # carried out; only the answer goes wrong
            time.sleep(fault.stall)
            if fault.drop:
                self._log(Call(operation, user, target, fields, DROPPED, body))
                return DROPPED, [], b""
            if not fault.stall:
                self._log(Call(operation, user, target, fields, 500, body))
                return 500, [("Content-Type", "text/html")], IIS_ERROR
        return self._answer(Call(operation, user, target, fields, 200, body), root)

    def _answer(self, call: Call, root: etree._Element) -> Answer:
        problems = check(root)
        if problems:
            with self._lock:
                self.schema_violations.extend(problems)
            call = Call(call.operation, call.user, call.mailbox, call.fields, 500, call.body)
            self._log(call)
            return (
                500,
                [("Content-Type", "text/plain")],
                ("stand-in broke the EWS schema: " + "; ".join(problems)).encode(),
            )
        self._log(call)
        return 200, XML, x.serialize(root)

    def _authenticate(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                username, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            known = self._passwords.get(username.lower())
            return known[1] if known and known[0] == password else None
        if scheme.lower() == "bearer":
            token = value.strip()
            if token in self._tokens:
                return self._tokens[token]
            return self._identity_user(token)
        return None

    def _identity_user(self, token: str) -> str | None:
        """The user of an access token from the identity stand-in, if it is valid for EWS."""
        if self.identity is None:
            return None
        user, _reason = self.identity.user_for(token)
        if user is None:
            return None
        # The audience check Exchange Online makes: the grant behind the token must include
        # the EWS permission. IdentityStandIn keeps no per-token scopes, so the grant's are read.
        with self.identity._lock:
            grant = self.identity._access.get(token, (None, 0.0))[0]
        return user if grant is not None and EWS_SCOPE in grant.scopes else None

    def _log(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _take_busy(self, operation: str, mailbox: str) -> _Busy | None:
        with self._lock:
            for busy in self._busy:
                if busy.times > 0 and busy.operation in ("*", operation) and busy.mailbox in (None, mailbox):
                    busy.times -= 1
                    return busy
        return None

    # ------------------------------------------------------------ folders
    def _GetFolder(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        for ref in x.folder_refs(op.find(x.m("FolderIds"))):
            try:
                folder = box.folder(ref)
            except EwsFault as exc:
                x.error(out, name, exc.code, exc.text)
                continue
            x.render_folder(x.sub(x.success(out, name), x.m("Folders")), folder, box)

    def _SyncFolderHierarchy(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        refs = x.folder_refs(op.find(x.m("SyncFolderId")))
        state = op.findtext(x.m("SyncState"))
        if state:  # the stand-in hands out no hierarchy states it could honour later
            text = "Synchronization state data is corrupt or otherwise invalid."
            failed = x.error(out, name, "ErrorInvalidSyncStateData", text)
            x.sub(failed, x.m("SyncState"))
            x.sub(failed, x.m("IncludesLastFolderInRange"), "true")
            return
        folders = box.subfolders(refs[0] if refs else "root")
        msg = x.success(out, name)
        x.sub(msg, x.m("SyncState"), base64.b64encode(f"hier:{len(folders)}".encode()).decode())
        x.sub(msg, x.m("IncludesLastFolderInRange"), "true")
        changes = x.sub(msg, x.m("Changes"))
        for folder in folders:
            x.render_folder(x.sub(changes, x.t("Create")), folder, box)

    def _CreateFolder(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        """Folders under the ParentFolderId; ErrorFolderExists for a name the parent has (case aside)."""
        refs = x.folder_refs(op.find(x.m("ParentFolderId")))
        for spec in op.findall(f"{x.m('Folders')}/{x.t('Folder')}"):
            display = (spec.findtext(x.t("DisplayName")) or "").strip()
            try:
                parent = box.folder(refs[0] if refs else "msgfolderroot")
                if not display:
                    raise EwsFault("ErrorInvalidFolderName", "The folder name is not valid.")
                if any(f.parent_id == parent.id and f.display_name.casefold() == display.casefold()
                       for f in box.folders.values()):  # fmt: skip
                    raise EwsFault("ErrorFolderExists", "A folder with the specified name already exists.")
            except EwsFault as exc:
                x.error(out, name, exc.code, exc.text)
                continue
            folder = box.folder(box.add_folder(display, parent.id))
            created = x.sub(x.sub(x.success(out, name), x.m("Folders")), x.t("Folder"))
            x.sub(created, x.t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)

    # ------------------------------------------------------------ items
    def _SyncFolderItems(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        refs = x.folder_refs(op.find(x.m("SyncFolderId")))
        fields = x.requested_fields(op.find(x.m("ItemShape")))
        try:
            limit = int(op.findtext(x.m("MaxChangesReturned")) or "")
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_SYNC_CHANGES:
            x.error(out, name, "ErrorInvalidArgument", f"MaxChangesReturned must be between 1 and {MAX_SYNC_CHANGES}.")
            return
        try:
            state, last, changes = box.sync_items(refs[0], op.findtext(x.m("SyncState")), limit)
        except EwsFault as exc:
            # Exchange answers a refused sync with an empty SyncState too (exchangelib reads it first)
            failed = x.error(out, name, exc.code, exc.text)
            x.sub(failed, x.m("SyncState"))
            x.sub(failed, x.m("IncludesLastItemInRange"), "true")
            return
        msg = x.success(out, name)
        x.sub(msg, x.m("SyncState"), state)
        x.sub(msg, x.m("IncludesLastItemInRange"), "true" if last else "false")
        container = x.sub(msg, x.m("Changes"))
        for change in changes:
            el = x.sub(container, x.t(change.kind))
            if change.item is not None:
                x.render_item(el, change.item, fields, box)
            else:
                x.sub(el, x.t("ItemId"), Id=change.item_id, ChangeKey="")
                if change.kind == "ReadFlagChange":
                    x.sub(el, x.t("IsRead"), "true" if change.is_read else "false")

    def _GetItem(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        fields = x.requested_fields(op.find(x.m("ItemShape")))
        for item_id in x.item_ids(op.find(x.m("ItemIds"))):
            try:
                item = box.item(item_id)
            except EwsFault as exc:
                x.error(out, name, exc.code, exc.text)
                continue
            x.render_item(x.sub(x.success(out, name), x.m("Items")), item, fields, box)

    def _FindItem(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        fields = x.requested_fields(op.find(x.m("ItemShape")))
        view = op.find(x.m("IndexedPageItemView"))
        try:
            offset = int(view.get("Offset") or 0) if view is not None else 0
            limit = int(view.get("MaxEntriesReturned") or 1000) if view is not None else 1000
        except ValueError:
            x.error(out, name, "ErrorInvalidArgument", "The paging view is not valid.")
            return
        restriction = op.find(x.m("Restriction"))
        wanted = None
        if restriction is not None:
            equal = restriction.find(x.t("IsEqualTo"))
            uri = equal.find(x.t("FieldURI")) if equal is not None else None
            constant = equal.find(f"{x.t('FieldURIOrConstant')}/{x.t('Constant')}") if equal is not None else None
            if len(restriction) != 1 or uri is None or uri.get("FieldURI") != "message:InternetMessageId":
                text = "The stand-in implements one restriction: IsEqualTo message:InternetMessageId."
                x.error(out, name, "ErrorInvalidRestriction", text)
                return
            wanted = (constant.get("Value") if constant is not None else "") or ""
        for ref in x.folder_refs(op.find(x.m("ParentFolderIds"))):
            try:
                items = box.in_folder(ref)
            except EwsFault as exc:
                x.error(out, name, exc.code, exc.text)
                continue
            if wanted is not None:
                items = [i for i in items if (i.header("Message-ID") or "").casefold() == wanted.casefold()]
            if op.get("Traversal") == "SoftDeleted" and restriction is not None:
                items = []  # Exchange: a soft-deleted traversal with a restriction finds nothing
            page = items[offset : offset + limit]
            root = x.sub(
                x.success(out, name),
                x.m("RootFolder"),
                IndexedPagingOffset=str(offset + len(page)),
                TotalItemsInView=str(len(items)),
                IncludesLastItemInRange="true" if offset + len(page) >= len(items) else "false",
            )
            container = x.sub(root, x.t("Items"))
            for item in page:
                x.render_item(container, item, fields, box)

    def _MoveItem(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        refs = x.folder_refs(op.find(x.m("ToFolderId")))
        for item_id in x.item_ids(op.find(x.m("ItemIds"))):
            try:
                moved = box.move(item_id, refs[0])
            except EwsFault as exc:
                x.error(out, name, exc.code, exc.text)
                continue
            message = x.sub(x.sub(x.success(out, name), x.m("Items")), x.t("Message"))
            x.sub(message, x.t("ItemId"), Id=moved.id, ChangeKey=moved.change_key)

    def _DeleteItem(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        to_trash = op.get("DeleteType") == "MoveToDeletedItems"  # from Deleted Items: out of sight
        trash = box.folder("deleteditems").id
        for item_id in x.item_ids(op.find(x.m("ItemIds"))):
            try:
                if to_trash and box.item(item_id).folder_id != trash:
                    box.move(item_id, "deleteditems")
                else:
                    box.delete(item_id)
            except EwsFault as exc:
                x.error(out, name, exc.code, exc.text)
                continue
            x.success(out, name)

    def _CreateItem(self, box: EwsMailbox, op: etree._Element, out: etree._Element, name: str) -> None:
        disposition = op.get("MessageDisposition") or "SaveOnly"
        refs = x.folder_refs(op.find(x.m("SavedItemFolderId")))
        for message in op.findall(f"{x.m('Items')}/{x.t('Message')}"):
            raw = self._mime_of(box, message)
            if raw is None:
                x.error(out, name, "ErrorMimeContentInvalidBase64String", "The MIME content is not valid base64.")
                continue
            msg = x.success(out, name)
            items = x.sub(msg, x.m("Items"))
            if disposition == "SaveOnly":
                props = x.extended_values(message)
                flags = int(props.get((0x0E07, "Integer"), str(MSGFLAG_UNSENT)))
                read = message.findtext(x.t("IsRead"))
                saved = box.add(
                    raw,
                    refs[0] if refs else "drafts",
                    is_read=x.boolean(read) if read is not None else bool(flags & MSGFLAG_READ),
                    is_draft=bool(flags & MSGFLAG_UNSENT),
                    delivered=False,
                    extended={k: v for k, v in props.items() if k[0] != 0x0E07},
                )
                x.sub(x.sub(items, x.t("Message")), x.t("ItemId"), Id=saved.id, ChangeKey=saved.change_key)
                continue
            self._deliver(box, raw)
            if disposition == "SendAndSaveCopy":
                box.add(raw, refs[0] if refs else "sentitems", is_read=True, delivered=False)

    def _mime_of(self, box: EwsMailbox, message: etree._Element) -> bytes | None:
        mime = message.findtext(x.t("MimeContent"))
        if mime is not None:
            try:
                return base64.b64decode(mime, validate=True)
            except binascii.Error:
                return None
        to = [el.text or "" for el in message.iterfind(f"{x.t('ToRecipients')}//{x.t('EmailAddress')}")]
        lines = [
            f"From: {box.address}",
            f"To: {', '.join(to)}",
            f"Subject: {message.findtext(x.t('Subject')) or ''}",
            f"Date: {formatdate(usegmt=True)}",
            f"Message-ID: {make_msgid(domain='ews.contoso.test')}",
            "Content-Type: text/plain; charset=utf-8",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n" + (message.findtext(x.t("Body")) or "") + "\r\n").encode()

    def _deliver(self, box: EwsMailbox, raw: bytes) -> None:
        headers = message_from_bytes(raw, policy=compat32)
        recipients = [a for _, a in getaddresses([str(v) for h in ("To", "Cc", "Bcc") for v in headers.get_all(h, [])])]
        delivered = raw if "Bcc" not in headers else _without_bcc(raw)
        outside = []
        for address in recipients:
            if address.lower() in self.mailboxes and address.lower() != box.address.lower():
                self.mailboxes[address.lower()].add(delivered, "inbox")
            elif address.lower() == box.address.lower():
                box.add(delivered, "inbox")
            else:
                outside.append(address)
        if outside:
            with self._lock:
                self.outbound.append((box.address, outside, delivered))


def _without_bcc(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines, skipping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            lines.append(line)
    return b"\r\n".join(lines) + sep + body
