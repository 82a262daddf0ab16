"""Gmail REST API backend, on google-api-python-client and google-auth.

Options (``ProviderSettings.options``)::

    client_id, client_secret   the OAuth client the refresh token was issued to (required; from
                               ``[google]``, see :meth:`GmailProvider.options_with_config`)
    api_root                   default "https://gmail.googleapis.com/"
    token_uri                  default "https://oauth2.googleapis.com/token"
    retry_budget               seconds of backoff one call may spend on 429/403/5xx (default 60)
    max_retries                retries per call (default 5)
    retry_base                 first backoff in seconds, doubling, capped at 32 (default 1.0)
    smtp_submission            True: send_without_copy submits over Gmail's SMTP with XOAUTH2 (the grant
                               needs https://mail.google.com/), so tracked sends have an SMTP envelope
                               (Capability.SMTP_ENVELOPE); smtp_host, smtp_port, smtp_security (default
                               smtp.gmail.com, 587, starttls; from [google]), smtp_copy_wait, and
                               ca_file (a PEM to trust for its TLS): :mod:`providers.smtp_oauth`

Credentials: ``refresh_token`` (plus, optionally, a stored ``access_token`` and its
``token_expiry``). After every refresh ``settings.on_token_refresh(access_token,
expiry)`` is called so the caller can persist the new token.

The service is built from the discovery document bundled with the client library
with its ``rootUrl`` set to ``api_root``, so requests, batches and uploads all go
to the configured root (``api_endpoint`` alone would leave batches on Google's
host). One ``httplib2.Http`` per provider instance: a provider is used by one
thread at a time, and httplib2 is not thread-safe. Folder sync (cursors, the
shared history window, the virtual ALL folder, the per-pass metadata cache) is
in :mod:`providers.gmail_history`.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials as GoogleCredentials

from providers import gmail_history, gmail_labels
from providers.base import (
    Capability,
    ChangeSet,
    Credentials,
    FolderListing,
    FolderRole,
    OutgoingMessage,
    ProviderSettings,
    RemoteFolder,
    RemoteMessage,
    SendResult,
)
from providers.common.backend import Backend, check_oauth
from providers.common.messages import FLAGGED, SEEN, header_lines
from providers.common.retry import RetryPolicy
from providers.errors import CursorInvalidError, FolderNotFound, ProtocolError, ProviderError, SendError
from providers.gmail_calls import MAX_BACKOFF, GmailCalls, SendOnceHttp, build_service
from providers.smtp import SmtpFactory, connect_smtp
from providers.smtp_oauth import OAuthSubmission

if TYPE_CHECKING:
    from postroom.config import Config

log = logging.getLogger(__name__)

DEFAULT_API_ROOT = "https://gmail.googleapis.com/"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
HEADER_NAMES = ["Message-ID", "In-Reply-To", "References", "From", "To", "Cc", "Bcc", "Reply-To", "Sender"]
HEADER_NAMES += ["Subject", "Date", "Delivered-To", "Auto-Submitted", "X-Autoreply", "X-Autorespond", "Precedence"]
HEADER_BATCH = 50  # messages.get calls per batch (Gmail allows 100; 50 avoids per-user 429s)
BODY_BATCH = 20  # raw bodies can be large
ROLES = {
    "INBOX": FolderRole.INBOX,
    "SENT": FolderRole.SENT,
    "TRASH": FolderRole.TRASH,
    "SPAM": FolderRole.JUNK,
    "DRAFT": FolderRole.DRAFTS,
}
HttpFactory = Callable[[], httplib2.Http]
SMTP_HINT = (
    "reconnect the account through Google sign-in with google.smtp_send on, so that it grants the broader "
    "https://mail.google.com/ scope Gmail's SMTP server needs (or turn the account's smtp_submission off)"
)


class _ReportingCredentials(GoogleCredentials):  # type: ignore[misc]
    """google-auth user credentials that report each refresh to a callback."""

    on_refresh: Callable[[str, datetime | None], None] | None = None

    def refresh(self, request: Any) -> None:
        super().refresh(request)
        if self.on_refresh is not None:
            expiry = self.expiry.replace(tzinfo=UTC) if self.expiry is not None else None
            self.on_refresh(self.token, expiry)


class GmailProvider(Backend):
    """A :class:`providers.base.MailProvider` for one Gmail mailbox, over the REST API.

    Folders are labels, named by label id, plus ``ALL`` (All Mail: every message
    not in TRASH or SPAM, so archived mail is synced too)::

        >>> provider.list_folders()                              # doctest: +SKIP
        [RemoteFolder(name='INBOX', role=<FolderRole.INBOX: 'inbox'>, ...),
         RemoteFolder(name='SENT', role=<FolderRole.SENT: 'sent'>, ...),
         RemoteFolder(name='Label_7', role=None, ...),
         RemoteFolder(name='ALL', role=<FolderRole.ALL: 'all'>, ...)]
        >>> provider.fetch_changes(inbox, None)                  # doctest: +SKIP
        ChangeSet(new=('18c1f0a2b3c4d5e6', ...), present=frozenset({...}), cursor='{"historyId": "4242", "v": 1}')
        >>> next(provider.fetch_headers(inbox, ["18c1f0a2b3c4d5e6"]))    # doctest: +SKIP
        RemoteMessage(remote_id='18c1f0a2b3c4d5e6', headers=b'Message-ID: <a@b>\\r\\nSubject: Hi\\r\\n...',
                      flags=frozenset({'\\\\Seen'}), size=5120, thread_hint='18c1f0a2b3c4d5e6',
                      provider_message_id='18c1f0a2b3c4d5e6', labels=frozenset({'INBOX'}), ...)
        >>> provider.send(outgoing)                              # doctest: +SKIP
        SendResult(message_id='<x@y>', provider_id='18c1f0a2b3c4d5f0', sent_copy_stored=True, refused={})

    As a processing mailbox (:mod:`providers.gmail_labels`), folders may be named as a person
    names labels: ``ensure_folder("processed")`` -> ``RemoteFolder("Label_12")``, and
    ``list_ids(RemoteFolder("processed"))`` lists that label.
    """

    supports_inbound = True

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        http_factory: HttpFactory | None = None,
        sleep: Callable[[float], None] = time.sleep,
        smtp_factory: SmtpFactory = connect_smtp,
    ) -> None:
        check_oauth(
            settings,
            no_grant="A Gmail account needs a refresh token; reconnect it through Google sign-in.",
            no_client="Gmail settings need client_id and client_secret for the Google OAuth client.",
        )
        super().__init__(settings)
        opts = settings.options
        self._api_root = str(opts.get("api_root") or DEFAULT_API_ROOT).rstrip("/") + "/"
        self._token_uri = str(opts.get("token_uri") or DEFAULT_TOKEN_URI)
        self._http_factory = http_factory or (lambda: SendOnceHttp(timeout=settings.timeout))
        self._retry = RetryPolicy(
            base=float(opts.get("retry_base", 1.0)),
            cap=MAX_BACKOFF,
            budget=float(opts.get("retry_budget", 60.0)),
            max_retries=int(opts.get("max_retries", 5)),
        )
        self._sleep = sleep
        self._smtp = OAuthSubmission.for_account(
            opts,
            default_host="smtp.gmail.com",
            ca_file=opts.get("ca_file"),
            what="Gmail SMTP",
            address=settings.email,
            where=f"Gmail {settings.email}",
            token=self._smtp_token,
            hint=SMTP_HINT,
            timeout=settings.timeout,
            factory=smtp_factory,
            sleep=sleep,
        )
        self._credentials: _ReportingCredentials | None = None
        self._http: google_auth_httplib2.AuthorizedHttp | None = None
        self._calls: GmailCalls | None = None
        self._names: gmail_labels.Labels | None = None
        self._labels: dict[str, RemoteFolder] | None = None
        self._window: gmail_history.HistoryWindow | None = None
        self._metadata = gmail_history.MetadataCache()

    @classmethod
    def options_with_config(
        cls, options: Mapping[str, Any], credentials: Credentials, config: Config
    ) -> dict[str, Any]:
        """With a refresh token, the Google OAuth client from ``[google]``: its id unless the
        account names the client its grant came from, and always its secret, which is never
        stored with the account."""
        options = dict(options)
        if credentials.refresh_token:
            options.setdefault("client_id", config.google.client_id)
            options["client_secret"] = config.google.client_secret
        if options.get("smtp_submission"):  # Gmail's SMTP submission, from [google] unless the account says
            for key in ("smtp_host", "smtp_port", "smtp_security"):
                options.setdefault(key, getattr(config.google, key))
        return options

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = {Capability.LABELS, Capability.SERVER_THREAD_IDS, Capability.MOVE, Capability.SEND}
        caps.add(Capability.STORE_SENT_COPY)
        if self._smtp is not None:
            caps.add(Capability.SMTP_ENVELOPE)
        return frozenset(caps)

    # ------------------------------------------------------------ connection
    def _api(self) -> GmailCalls:
        if self._calls is None:
            creds = self._settings.credentials
            expiry = creds.token_expiry
            if expiry is not None and expiry.tzinfo is not None:  # google-auth wants naive UTC
                expiry = expiry.astimezone(UTC).replace(tzinfo=None)
            opts = self._settings.options
            self._credentials = _ReportingCredentials(
                token=creds.access_token,
                refresh_token=creds.refresh_token,
                token_uri=self._token_uri,
                client_id=opts.get("client_id"),
                client_secret=opts.get("client_secret"),
                expiry=expiry,
            )
            self._credentials.on_refresh = self._settings.on_token_refresh
            self._http = google_auth_httplib2.AuthorizedHttp(self._credentials, http=self._http_factory())
            service = build_service(self._api_root, self._http)
            self._calls = GmailCalls(
                service, self._http, f"Gmail {self._settings.email}", policy=self._retry, sleep=self._sleep
            )
        return self._calls

    def close(self) -> None:
        """Drop the HTTP connections. Safe to call twice; the next call reconnects."""
        http, self._http, self._calls, self._names = self._http, None, None, None
        if http is not None:
            for conn in list(getattr(http.http, "connections", {}).values()):
                conn.close()

    # ------------------------------------------------------------ folders
    def list_folders(self) -> list[RemoteFolder]:
        """Labels that hold mail as folders, then ALL (All Mail); UNREAD, STARRED,
        IMPORTANT and categories are flags."""
        api = self._api()
        self._window = None  # a new sync pass: history and metadata are fetched afresh
        answer = api.execute(api.labels.list(userId="me"), "labels.list")
        folders: dict[str, RemoteFolder] = {}
        for label in answer.get("labels", []):
            label_id = label["id"]
            if label_id in ROLES:
                folders[label_id] = RemoteFolder(label_id, ROLES[label_id])
            elif label.get("type") == "user":
                folders[label_id] = RemoteFolder(label_id, None)
        folders[gmail_history.ALL_MAIL] = RemoteFolder(gmail_history.ALL_MAIL, FolderRole.ALL)
        self._labels = folders
        self._metadata.clear(folders)
        return list(folders.values())

    # ------------------------------------------------------------ processing mailbox
    def _label_names(self) -> gmail_labels.Labels:
        if self._names is None:
            self._names = gmail_labels.Labels(self._api(), f"Gmail {self._settings.email}")
        return self._names

    def _label_id(self, folder: RemoteFolder) -> str:
        """A label id as it is (what list_folders names); a label's name resolved to its id."""
        if folder.name in gmail_labels.SYSTEM or gmail_labels.is_user_label_id(folder.name):
            return folder.name
        return self._label_names().id_of(folder)

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """messages.list on the label (by id or name), oldest first; the validity is a constant."""
        return gmail_labels.list_ids(self._api(), self._label_id(folder))

    def ensure_folder(self, name: str) -> RemoteFolder:
        """The label called ``name`` (found by name, else labels.create), named by its id."""
        return self._label_names().ensure(name)

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """messages.list on the label with ``q=rfc822msgid:<id>``; the newest match."""
        return gmail_labels.find_message(self._api(), self._label_id(folder), message_id)

    # ------------------------------------------------------------ sync
    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        if cursor is None:
            return self._listing(folder)
        start = gmail_history.Cursor.load(cursor).history_id
        window = self._window
        if window is None or not window.covers(folder.name, start):
            window = self._window = self._history(start)
        window.served.add(folder.name)
        return gmail_history.folder_changes(folder.name, window.records, start, window.end)

    def _listing(self, folder: RemoteFolder) -> ChangeSet:
        api = self._api()
        profile = api.execute(api.users.getProfile(userId="me"), "getProfile")
        history_id = int(profile["historyId"])
        ids: list[str] = []
        # ALL: no labelIds, and (includeSpamTrash false) Gmail leaves out TRASH and SPAM
        labels = {} if folder.name == gmail_history.ALL_MAIL else {"labelIds": [folder.name]}
        request = api.messages.list(
            userId="me", **labels, includeSpamTrash=folder.name in gmail_history.HIDDEN, maxResults=500
        )
        while request is not None:
            try:
                page = api.execute(request, "messages.list")
            except ProtocolError as exc:
                if "Invalid label" in str(exc):
                    raise FolderNotFound(f"Gmail {self._settings.email}: label {folder.name} is gone") from exc
                raise
            ids.extend(m["id"] for m in page.get("messages", []))
            request = api.messages.list_next(request, page)
        ordered = list(dict.fromkeys(reversed(ids)))  # Gmail lists newest first
        return ChangeSet(new=tuple(ordered), present=frozenset(ordered), cursor=gmail_history.Cursor(history_id).dump())

    def _history(self, start: int) -> gmail_history.HistoryWindow:
        api = self._api()
        records: list[Mapping[str, Any]] = []
        end = start
        request = api.history.list(userId="me", startHistoryId=str(start), maxResults=500)
        while request is not None:
            try:
                page = api.execute(request, "history.list", not_found=CursorInvalidError)
            except CursorInvalidError as exc:
                raise CursorInvalidError(
                    f"Gmail {self._settings.email}: history since {start} is no longer available"
                ) from exc
            history = page.get("history", [])
            records.extend(history)
            # the last page's historyId is where the next pass starts (Gmail's guidance)
            end = max([end, int(page["historyId"]), *(int(r["id"]) for r in history)])
            request = api.history.list_next(request, page)
        return gmail_history.HistoryWindow(start, end, records)

    # ------------------------------------------------------------ messages
    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        """messages.get(format=metadata), batched; a message already fetched this pass for
        another folder (INBOX, then ALL) comes from the pass's cache."""
        api = self._api()
        for chunk in _chunks(list(remote_ids), HEADER_BATCH):
            found = {rid: m for rid in chunk if (m := self._metadata.take(folder.name, rid)) is not None}
            requests = {
                rid: api.messages.get(userId="me", id=rid, format="metadata", metadataHeaders=HEADER_NAMES)
                for rid in chunk
                if rid not in found
            }
            for rid, answer in (api.batch(requests, "messages.get") if requests else {}).items():
                found[rid] = message = message_from_metadata(answer)
                self._metadata.put(folder.name, message)
            yield from (found[rid] for rid in chunk if rid in found)

    def fetch_bodies(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> dict[str, bytes]:
        api = self._api()
        bodies: dict[str, bytes] = {}
        for chunk in _chunks(list(remote_ids), BODY_BATCH):
            requests = {rid: api.messages.get(userId="me", id=rid, format="raw") for rid in chunk}
            for rid, answer in api.batch(requests, "messages.get").items():
                bodies[rid] = _unb64url(answer.get("raw", ""))
        return bodies

    # ------------------------------------------------------------ writing
    def send(self, message: OutgoingMessage) -> SendResult:
        """messages.send; Gmail files its own copy in SENT. A reply names its thread. A 5xx
        or a connection lost after the request was written is :class:`SendUncertain`."""
        return self._submit(message)[0]

    def send_without_copy(self, message: OutgoingMessage) -> SendResult:
        """messages.send, then the copy Gmail filed in SENT goes to the trash. A message that came
        back into the sender's own inbox is that same message: it stays, and the result says so.
        A failure to trash is logged, never raised: the message went out and must not be resent.

        With ``smtp_submission``: Gmail's SMTP submission to exactly ``message.recipients``
        (:meth:`_send_over_smtp`)."""
        if self._smtp is not None:
            return self._send_over_smtp(self._smtp, message)
        sent, labels = self._submit(message)
        if sent.provider_id is None or "INBOX" in labels:
            return sent
        try:
            self._trash([sent.provider_id])
        except ProviderError as exc:
            log.warning("Gmail %s: the Sent copy %s stays: %s", self._settings.email, sent.provider_id, exc)
            return sent
        return dataclasses.replace(sent, sent_copy_stored=False)

    def _submit(self, message: OutgoingMessage) -> tuple[SendResult, list[str]]:
        api = self._api()
        body: dict[str, Any] = {"raw": _b64url(message.raw)}
        if message.thread_hint:
            body["threadId"] = message.thread_hint
        try:
            answer = api.execute(api.messages.send(userId="me", body=body), "messages.send", idempotent=False)
        except ProtocolError as exc:
            raise SendError(f"Gmail {self._settings.email} refused the message: {exc}") from exc
        result = SendResult(message_id=message.message_id, provider_id=answer.get("id"), sent_copy_stored=True)
        return result, list(answer.get("labelIds") or [])

    def _send_over_smtp(self, smtp: OAuthSubmission, message: OutgoingMessage) -> SendResult:
        """One SMTP transaction with XOAUTH2 (a fresh access token, refreshed and persisted as the
        API calls do), then the copy Gmail filed in SENT goes to the trash: found by Message-ID,
        the newest one not already in the trash. A message to the sender's own address is also
        their inbox copy (one message, SENT and INBOX): it stays, and the result says so."""
        result = smtp.submit(message)
        if self._settings.email.lower() in {r.lower() for r in message.recipients}:
            return dataclasses.replace(result, sent_copy_stored=True)
        removed = smtp.remove_filed_copy(
            message.message_id, lambda mid: self._in_sent(mid, include_trash=False), lambda rid: self._trash([rid])
        )
        return dataclasses.replace(result, sent_copy_stored=not removed)

    def _smtp_token(self, fresh: bool) -> str:
        """The access token for Gmail's SMTP server: the credentials the API calls use, refreshed
        when they are no longer valid (or ``fresh``); a refresh is reported through
        ``on_token_refresh`` as any other."""
        api = self._api()
        assert self._credentials is not None and self._http is not None
        if fresh or not self._credentials.valid:
            try:
                self._credentials.refresh(google_auth_httplib2.Request(self._http.http))
            except (google.auth.exceptions.GoogleAuthError, OSError, httplib2.HttpLib2Error) as exc:
                raise api.translate(exc, "token refresh") from exc
        return str(self._credentials.token)

    def find_sent(self, message_id: str) -> str | None:
        """messages.list on label SENT with ``q=rfc822msgid:<id>`` (trash and spam included:
        a sent copy the user has since deleted still shows that it went out)."""
        return self._in_sent(message_id, include_trash=True)

    def _in_sent(self, message_id: str, *, include_trash: bool) -> str | None:
        """The newest message in SENT with this Message-ID (Gmail lists newest first)."""
        api = self._api()
        request = api.messages.list(
            userId="me",
            labelIds=["SENT"],
            q=f"rfc822msgid:{message_id}",
            includeSpamTrash=include_trash,
            maxResults=10,
        )
        found = api.execute(request, "messages.list").get("messages") or []
        return str(found[0]["id"]) if found else None

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        """messages.insert into SENT (dated by its Date header); returns the Gmail id."""
        api = self._api()
        labels = ["SENT"]
        if SEEN not in flags:
            labels.append("UNREAD")
        if FLAGGED in flags:
            labels.append("STARRED")
        request = api.messages.insert(
            userId="me", body={"raw": _b64url(raw), "labelIds": labels}, internalDateSource="dateHeader"
        )
        answer = api.execute(request, "messages.insert", idempotent=False)
        return str(answer["id"]) if answer.get("id") else None

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        """Relabel: messages.trash into TRASH, else messages.modify (add target, remove source).
        ALL is no label: moving out of it only adds the target, into it archives (removes the source).
        Labels named by name (a processing mailbox's ``"processed"``) are resolved to their ids."""
        if target.name == "TRASH":
            self._trash(remote_ids)
            return
        add = [] if target.name == gmail_history.ALL_MAIL else [self._label_id(target)]
        remove = [] if folder.name == gmail_history.ALL_MAIL else [self._label_id(folder)]
        if not (add or remove):
            return
        api = self._api()
        body = {"addLabelIds": add, "removeLabelIds": remove}
        for chunk in _chunks(list(remote_ids), HEADER_BATCH):
            requests = {rid: api.messages.modify(userId="me", id=rid, body=body) for rid in chunk}
            api.batch(requests, "messages.modify")

    def delete(self, folder: RemoteFolder, remote_ids: Sequence[str], *, for_good: bool = False) -> None:
        """messages.trash (label TRASH; Gmail empties it after 30 days), or messages.delete for
        good (that needs the https://mail.google.com/ scope). Vanished ids are skipped."""
        if not for_good:
            self._trash(remote_ids)
            return
        api = self._api()
        for chunk in _chunks(list(remote_ids), HEADER_BATCH):
            api.batch({rid: api.messages.delete(userId="me", id=rid) for rid in chunk}, "messages.delete")

    def _trash(self, remote_ids: Sequence[str]) -> None:
        api = self._api()
        for chunk in _chunks(list(remote_ids), HEADER_BATCH):
            api.batch({rid: api.messages.trash(userId="me", id=rid) for rid in chunk}, "messages.trash")


def message_from_metadata(answer: dict[str, Any]) -> RemoteMessage:
    """A :class:`RemoteMessage` from a messages.get(format=metadata) answer."""
    headers = answer.get("payload", {}).get("headers", [])
    block = header_lines((h["name"], h["value"]) for h in headers)
    labels = frozenset(answer.get("labelIds", []))
    internal = answer.get("internalDate")
    return RemoteMessage(
        remote_id=answer["id"],
        headers=block,
        flags=gmail_history.flags_from_labels(labels),
        size=int(answer["sizeEstimate"]) if "sizeEstimate" in answer else None,
        internal_date=datetime.fromtimestamp(int(internal) / 1000, UTC) if internal else None,
        thread_hint=answer.get("threadId"),
        provider_message_id=answer["id"],
        labels=labels,
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
