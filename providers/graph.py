"""Microsoft Graph backend (Microsoft 365 mailboxes): plain HTTPS with requests, tokens from msal.

Options (``ProviderSettings.options``)::

    client_id, client_secret   the Entra ID app the refresh token was issued to (required; with the
                               authority and ca_bundle from ``[microsoft]``: :class:`MicrosoftBackend`)
    tenant                     default "organizations"
    authority                  default "https://login.microsoftonline.com/{tenant}"
    instance_discovery         msal's: None (Microsoft's endpoint), False, or a URL
    graph_root                 default "https://graph.microsoft.com/v1.0"
    scopes                     default Mail.ReadWrite and Mail.Send on Graph
    ca_bundle                  a PEM file to trust instead of the system store (tests, proxies)
    page_size                  delta page size asked with Prefer: odata.maxpagesize (default 200)
    retry_budget               seconds of backoff one call may spend on 429/5xx (default 60)
    max_retries                retries per call (default 4)
    retry_base, retry_cap      first backoff (1.0 s, doubling) and the longest Retry-After honoured (30 s)
    smtp_submission            True: send_without_copy submits over Exchange Online's SMTP with XOAUTH2 (a
                               token for https://outlook.office.com/SMTP.Send from the same refresh token),
                               so tracked sends have an SMTP envelope (Capability.SMTP_ENVELOPE);
                               smtp_host, smtp_port, smtp_security (default smtp.office365.com, 587,
                               starttls; from [microsoft]), smtp_copy_wait: :mod:`providers.smtp_oauth`

Credentials: ``refresh_token`` (plus, optionally, a stored ``access_token`` and its
``token_expiry``, used as they are while valid). Microsoft rotates refresh tokens on
every refresh: ``settings.on_refresh_token_rotated(new_refresh_token)`` is called, then
``settings.on_token_refresh(access_token, expiry)``.

Request counts: ``list_folders`` is one ``$batch`` (the folder list plus the well-known
folders that give roles), plus one per level of nested folders; a no-change
``fetch_changes`` is one GET of the stored deltaLink; ``fetch_headers`` is one
``$batch`` per 20 messages; ``fetch_bodies`` one GET of ``$value`` per message.
Folder sync (cursors, header blocks) is in :mod:`providers.graph_codec`; HTTP, tokens,
retries and batching in :mod:`providers.graph_calls`.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from providers import graph_codec
from providers.base import (
    Capability,
    ChangeSet,
    FlagUpdate,
    FolderListing,
    FolderRole,
    OutgoingMessage,
    ProviderSettings,
    RemoteFolder,
    RemoteMessage,
    SendResult,
)
from providers.common.backend import check_oauth
from providers.common.messages import FLAGGED, SEEN
from providers.common.retry import RetryPolicy
from providers.errors import AuthError, ConfigurationError, FolderNotFound, ProtocolError, SendError
from providers.graph_calls import GraphCalls
from providers.graph_folders import Folders
from providers.microsoft_tokens import MicrosoftBackend
from providers.smtp import SmtpFactory, connect_smtp
from providers.smtp_oauth import OAuthSubmission

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/{tenant}"
DEFAULT_GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
ROLES = {
    "inbox": FolderRole.INBOX,
    "sentitems": FolderRole.SENT,
    "deleteditems": FolderRole.TRASH,
    "drafts": FolderRole.DRAFTS,
    "junkemail": FolderRole.JUNK,
    "archive": FolderRole.ARCHIVE,
}
SKIPPED = ("outbox",)  # in-flight mail: not a folder recruiters read
SMTP_SCOPES = ("https://outlook.office.com/SMTP.Send",)  # Exchange Online's SMTP: a resource of its own
SMTP_HINT = (
    "reconnect the account through Microsoft sign-in with microsoft.smtp_send on, so that it grants "
    "https://outlook.office.com/SMTP.Send, and check that SMTP AUTH is allowed for the mailbox "
    "(or turn the account's smtp_submission off)"
)
SessionFactory = Callable[[], requests.Session]


class GraphProvider(MicrosoftBackend):
    """A :class:`providers.base.MailProvider` for one Microsoft 365 mailbox, over Microsoft Graph.

    Folders are named by their Graph id (stable across renames); the role says what they are::

        >>> provider.list_folders()                                    # doctest: +SKIP
        [RemoteFolder(name='AAMkAGI2TG93AAA=', role=<FolderRole.INBOX: 'inbox'>, ...),
         RemoteFolder(name='AAMkAGI2TG94AAA=', role=<FolderRole.SENT: 'sent'>, ...),
         RemoteFolder(name='AAMkAGI2THh1AAA=', role=None, ...)]
        >>> provider.fetch_changes(inbox, None)                        # doctest: +SKIP
        ChangeSet(new=('AAMkAGI2...AAA=', ...), present=frozenset({...}),
                  cursor='{"deltaLink": "https://graph.microsoft.com/v1.0/me/mailFolders(...)...", "v": 1}')
        >>> next(provider.fetch_headers(inbox, ["AAMkAGI2...AAA="]))   # doctest: +SKIP
        RemoteMessage(remote_id='AAMkAGI2...AAA=', headers=b'Message-ID: <a@b>\\r\\nFrom: ...',
                      flags=frozenset({'\\\\Seen'}), size=5120, thread_hint='AAQkAGI2...=', ...)
        >>> provider.send(outgoing)                                    # doctest: +SKIP
        SendResult(message_id='<x@y>', provider_id=None, sent_copy_stored=True, refused={})

    As a processing mailbox (:mod:`providers.graph_folders`), folders may be named by path:
    ``ensure_folder("processed")`` -> ``RemoteFolder("AAMkAGI2...")``; ``list_ids(RemoteFolder("INBOX"))``.
    """

    supports_inbound = True

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        session_factory: SessionFactory | None = None,
        sleep: Callable[[float], None] = time.sleep,
        smtp_factory: SmtpFactory = connect_smtp,
    ) -> None:
        check_oauth(
            settings,
            no_grant="A Microsoft 365 account needs a refresh token; reconnect it through Microsoft sign-in.",
            no_client="Microsoft Graph settings need client_id and client_secret for the Entra ID app.",
        )
        opts = settings.options
        root = str(opts.get("graph_root") or DEFAULT_GRAPH_ROOT).rstrip("/")
        authority = str(opts.get("authority") or DEFAULT_AUTHORITY.format(tenant=opts.get("tenant") or "organizations"))
        for name, url in (("graph_root", root), ("authority", authority)):
            if not url.startswith("https://"):
                raise ConfigurationError(f"Microsoft Graph setting {name} must be an https URL, not {url!r}.")
        super().__init__(settings)
        self._root, self._authority = root, authority.rstrip("/")
        self._session_factory = session_factory or requests.Session
        self._sleep = sleep
        self._page_size = int(opts.get("page_size", 200))
        self._calls: GraphCalls | None = None
        self._session: requests.Session | None = None
        self._folders: Folders | None = None
        self._smtp = OAuthSubmission.for_account(
            opts,
            default_host="smtp.office365.com",
            ca_file=opts.get("ca_bundle"),
            what="Microsoft 365 SMTP",
            address=settings.email,
            where=f"Graph {settings.email}",
            token=self._smtp_token,
            hint=SMTP_HINT,
            timeout=settings.timeout,
            factory=smtp_factory,
            sleep=sleep,
        )

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = {Capability.SERVER_THREAD_IDS, Capability.MOVE, Capability.SEND, Capability.STORE_SENT_COPY}
        if self._smtp is not None:
            caps.add(Capability.SMTP_ENVELOPE)
        return frozenset(caps)

    def _api(self) -> GraphCalls:
        if self._calls is None:
            opts = self._settings.options
            self._session = self._session_factory()
            self._calls = GraphCalls(
                self._settings,
                self._session,
                root=self._root,
                authority=self._authority,
                verify=opts.get("ca_bundle"),
                policy=RetryPolicy(
                    base=float(opts.get("retry_base", 1.0)),
                    cap=float(opts.get("retry_cap", 30.0)),
                    budget=float(opts.get("retry_budget", 60.0)),
                    max_retries=int(opts.get("max_retries", 4)),
                    give_up_above_cap=True,
                ),
                sleep=self._sleep,
            )
        return self._calls

    def close(self) -> None:
        """Drop the HTTP connections. Safe to call twice; the next call reconnects."""
        session, self._session, self._calls, self._folders = self._session, None, None, None
        if session is not None:
            session.close()

    # ------------------------------------------------------------ folders
    def list_folders(self) -> list[RemoteFolder]:
        """Every mail folder (nested ones too), with roles from Graph's well-known folder names."""
        api = self._api()
        parts: dict[str, dict[str, Any]] = {"*": {"url": "/me/mailFolders?$top=250"}}
        parts |= {name: {"url": f"/me/mailFolders/{name}?$select=id"} for name in (*ROLES, *SKIPPED)}
        answers = api.batch(parts, "mailFolders")
        if "*" not in answers:
            raise ProtocolError(f"Graph {self._settings.email}: the folder list is missing")
        roles = {answers[n]["id"]: ROLES.get(n) for n in (*ROLES, *SKIPPED) if n in answers}
        skipped = {answers[n]["id"] for n in SKIPPED if n in answers}
        folders: list[RemoteFolder] = []
        level = self._pages(answers["*"], "mailFolders")
        while level:
            parents = []
            for entry in level:
                if entry["id"] in skipped:
                    continue
                folders.append(RemoteFolder(entry["id"], roles.get(entry["id"])))
                if entry.get("childFolderCount"):
                    parents.append(entry["id"])
            children = api.batch(
                {fid: {"url": f"/me/mailFolders/{quote(fid)}/childFolders?$top=250"} for fid in parents}, "childFolders"
            )
            level = [
                entry for fid in parents if fid in children for entry in self._pages(children[fid], "childFolders")
            ]
        return folders

    def _pages(self, page: dict[str, Any], what: str) -> list[dict[str, Any]]:
        entries = list(page.get("value", []))
        while page.get("@odata.nextLink"):
            page = self._api().json("GET", page["@odata.nextLink"], what)
            entries.extend(page.get("value", []))
        return entries

    # ------------------------------------------------------------ processing mailbox
    def _paths(self) -> Folders:
        if self._folders is None:
            self._folders = Folders(self._api(), f"Graph {self._settings.email}")
        return self._folders

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """The folder's (by id, well-known name or path) message ids; the validity is a constant."""
        return self._paths().list_ids(folder)

    def ensure_folder(self, name: str) -> RemoteFolder:
        """The folder at path ``name``, created (mailFolders / childFolders) where missing."""
        return self._paths().ensure(name)

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """The folder's message with this ``internetMessageId``, or None."""
        return self._paths().find_message(folder, message_id)

    # ------------------------------------------------------------ sync
    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        api = self._api()
        headers = {"Prefer": f"odata.maxpagesize={self._page_size}"}
        if cursor is None:
            url = f"{self._root}/me/mailFolders/{quote(folder.name)}/messages/delta?$select={graph_codec.DELTA_SELECT}"
        else:
            url = graph_codec.Cursor.load(cursor, self._root).delta_link
        live: dict[str, frozenset[str]] = {}
        removed: dict[str, None] = {}
        while True:
            page = api.json("GET", url, "messages.delta", headers=headers, not_found=FolderNotFound)
            for entry in page.get("value", []):
                mid = str(entry["id"])
                if "@removed" in entry:
                    live.pop(mid, None)
                    removed[mid] = None
                else:
                    removed.pop(mid, None)
                    live[mid] = graph_codec.flags_of(entry)
            if page.get("@odata.nextLink"):
                url = page["@odata.nextLink"]
                continue
            if not page.get("@odata.deltaLink"):
                raise ProtocolError(f"Graph {self._settings.email}: a delta page with neither nextLink nor deltaLink")
            next_cursor = graph_codec.Cursor(page["@odata.deltaLink"]).dump()
            break
        ids = tuple(live)
        if cursor is None:
            return ChangeSet(new=ids, present=frozenset(ids), cursor=next_cursor)
        changed = tuple(FlagUpdate(mid, flags) for mid, flags in live.items())
        return ChangeSet(new=ids, changed=changed, removed=tuple(removed), cursor=next_cursor)

    # ------------------------------------------------------------ messages
    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        api = self._api()
        query = f"$select={graph_codec.HEADER_SELECT}&$expand={graph_codec.EXPAND}"
        ids = list(dict.fromkeys(remote_ids))
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            answers = api.batch({rid: {"url": f"/me/messages/{quote(rid)}?{query}"} for rid in chunk}, "messages.get")
            for rid in chunk:
                if rid in answers:
                    yield graph_codec.remote_message(answers[rid])

    def fetch_bodies(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> dict[str, bytes]:
        api = self._api()
        bodies: dict[str, bytes] = {}
        for rid in remote_ids:
            try:
                resp = api.request(
                    "GET", f"/me/messages/{quote(rid)}/$value", "messages.$value", not_found=FolderNotFound
                )
            except FolderNotFound:
                continue  # vanished meanwhile
            except ProtocolError as exc:
                exc.remote_id = rid  # this message: the engine quarantines it and keeps the others
                raise
            bodies[rid] = resp.content
        return bodies

    # ------------------------------------------------------------ writing
    def send(self, message: OutgoingMessage) -> SendResult:
        """sendMail with the MIME as it is (our Message-ID, In-Reply-To, References); Graph
        files the copy in Sent Items itself (a MIME sendMail always does). A 5xx, a read
        timeout or a connection lost after the request was written is :class:`SendUncertain`."""
        api = self._api()
        try:
            api.request("POST", "/me/sendMail", "sendMail", **_mime(message.raw))
        except ProtocolError as exc:
            raise SendError(f"Graph {self._settings.email} refused the message: {exc}") from exc
        return SendResult(message_id=message.message_id, sent_copy_stored=True)

    def find_sent(self, message_id: str) -> str | None:
        """The Sent Items message whose ``internetMessageId`` is ``message_id`` (an OData
        ``$filter`` on that folder; quotes in the id doubled, the filter percent-encoded)."""
        literal = message_id.replace("'", "''")
        query = "$filter=" + quote(f"internetMessageId eq '{literal}'", safe="") + "&$select=id&$top=1"
        answer = self._api().json("GET", f"/me/mailFolders/sentitems/messages?{query}", "messages.list")
        found = answer.get("value") or []
        return str(found[0]["id"]) if found else None

    def send_without_copy(self, message: OutgoingMessage) -> SendResult:
        """Send the MIME as it is without a copy in Sent Items: a draft created from the MIME,
        marked PidTagDeleteAfterSubmit, then sent (saveToSentItems=false exists only for
        JSON messages, which cannot carry our MIME structure).

        With ``smtp_submission``: one SMTP transaction to exactly ``message.recipients``, then
        the copy Exchange Online filed in Sent Items (found by Message-ID) is deleted; a copy
        that cannot be found or deleted is logged, never raised, and the result says it stays."""
        if self._smtp is not None:
            result = self._smtp.submit(message)
            sent_items = RemoteFolder("sentitems", FolderRole.SENT)
            removed = self._smtp.remove_filed_copy(
                message.message_id, self.find_sent, lambda rid: self.delete(sent_items, [rid])
            )
            return dataclasses.replace(result, sent_copy_stored=not removed)
        api = self._api()
        try:
            draft = api.json("POST", "/me/messages", "messages.create", **_mime(message.raw))
            draft_id = quote(str(draft["id"]))
            delete_after_submit = {"singleValueExtendedProperties": [{"id": "Boolean 0x0E01", "value": "true"}]}
            api.json("PATCH", f"/me/messages/{draft_id}", "messages.update", json=delete_after_submit)
            api.request("POST", f"/me/messages/{draft_id}/send", "messages.send", idempotent=False)
        except ProtocolError as exc:
            raise SendError(f"Graph {self._settings.email} refused the message: {exc}") from exc
        return SendResult(message_id=message.message_id, provider_id=None, sent_copy_stored=False)

    def _smtp_token(self, fresh: bool) -> str:
        """An access token for Exchange Online's SMTP (``SMTP.Send``) from the account's refresh token."""
        try:
            return self._api().token_for(SMTP_SCOPES, fresh=fresh)
        except AuthError as exc:
            if "AADSTS65001" not in str(exc):  # a revoked or expired grant: as for any Graph call
                raise
            raise AuthError(
                f"Graph {self._settings.email}: the grant does not include SMTP sending (AADSTS65001); {SMTP_HINT}."
            ) from exc

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        """Create one non-draft copy of ``raw`` in Sent Items; returns its Graph id.

        A message created from MIME is always a draft, and a draft's state can only be
        chosen when it is created, so the copy is created from JSON with PidTagMessageFlags
        set (read, not unsent); Message-ID, In-Reply-To, References and the send date
        travel as ``internetMessageId`` and MAPI properties, attachments as file attachments.
        """
        created = self._api().json(
            "POST",
            "/me/mailFolders/sentitems/messages",
            "messages.create",
            idempotent=False,
            json=sent_copy_json(raw, flags),
        )
        return str(created["id"]) if created.get("id") else None

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        """message: move (a new id in the target folder); vanished ids are skipped. The target is a
        folder id or a well-known name (what list_folders and ensure_folder name folders)."""
        body = {"destinationId": target.name}
        parts = {rid: {"method": "POST", "url": f"/me/messages/{quote(rid)}/move", "body": body} for rid in remote_ids}
        self._api().batch(parts, "messages.move")

    def delete(self, folder: RemoteFolder, remote_ids: Sequence[str], *, for_good: bool = False) -> None:
        """message: delete (into Deleted Items), or permanentDelete for good; vanished ids are skipped."""
        if for_good:
            parts = {rid: {"method": "POST", "url": f"/me/messages/{quote(rid)}/permanentDelete"} for rid in remote_ids}
            self._api().batch(parts, "messages.permanentDelete")
            return
        parts = {rid: {"method": "DELETE", "url": f"/me/messages/{quote(rid)}"} for rid in remote_ids}
        self._api().batch(parts, "messages.delete")


def _mime(raw: bytes) -> dict[str, Any]:
    """The request arguments that hand Graph a MIME message: base64 text, not safe to repeat."""
    return {"idempotent": False, "data": base64.b64encode(raw), "headers": {"Content-Type": "text/plain"}}


def _recipients(msg: EmailMessage, header: str) -> list[dict[str, Any]]:
    values = [str(v) for v in msg.get_all(header, [])]
    return [{"emailAddress": {"name": n or a, "address": a}} for n, a in getaddresses(values) if a]


def sent_copy_json(raw: bytes, flags: frozenset[str]) -> dict[str, Any]:
    """Graph's JSON message for a non-draft copy of ``raw``."""
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body_part = msg.get_body(preferencelist=("html", "plain"))
    content = body_part.get_content() if body_part is not None else ""
    is_html = body_part is not None and body_part.get_content_subtype() == "html"
    props = [{"id": "Integer 0x0E07", "value": "1" if SEEN in flags else "0"}]  # MSGFLAG_READ, not MSGFLAG_UNSENT
    for prop, header in (("String 0x1042", "In-Reply-To"), ("String 0x1039", "References")):
        if msg.get(header):
            props.append({"id": prop, "value": " ".join(str(msg[header]).split())})
    try:
        sent = parsedate_to_datetime(str(msg["Date"])) if msg.get("Date") else None
    except (TypeError, ValueError):
        sent = None
    if sent is not None and sent.tzinfo is not None:
        when = sent.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        props += [{"id": "SystemTime 0x0039", "value": when}, {"id": "SystemTime 0x0E06", "value": when}]
    out: dict[str, Any] = {
        "subject": str(msg.get("Subject", "")),
        "body": {"contentType": "html" if is_html else "text", "content": content},
        "toRecipients": _recipients(msg, "To"),
        "ccRecipients": _recipients(msg, "Cc"),
        "bccRecipients": _recipients(msg, "Bcc"),
        "replyTo": _recipients(msg, "Reply-To"),
        "singleValueExtendedProperties": props,
    }
    senders = _recipients(msg, "From")
    if senders:
        out["from"] = senders[0]
    if msg.get("Message-ID"):
        out["internetMessageId"] = str(msg["Message-ID"]).strip()
    if FLAGGED in flags:
        out["flag"] = {"flagStatus": "flagged"}
    attachments = [
        {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": part.get_filename() or "attachment",
            "contentType": part.get_content_type(),
            "contentBytes": base64.b64encode(_payload(part)).decode("ascii"),
        }
        for part in msg.iter_attachments()
    ]
    if attachments:
        out["attachments"] = attachments
    return out


def _payload(part: EmailMessage) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
