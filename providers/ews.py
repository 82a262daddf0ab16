"""Exchange Web Services backend (on-premises Exchange, allow-listed tenants) on exchangelib.

Options (``ProviderSettings.options``)::

    ews_url        the EWS endpoint, e.g. "https://mail.contoso.com/EWS/Exchange.asmx" (required
                   unless autodiscover is true)
    auth           "ntlm" (default), "basic" or "oauth2" (bearer tokens; see "OAuth2" below)
    version        the Exchange build to speak, "15.1.2507.6" by default (pinned: no version probe)
    ca_file        a PEM file to trust for this endpoint instead of the system store
    autodiscover   true to find the endpoint by autodiscover instead of ews_url (off by default)
    page_size      SyncFolderItems MaxChangesReturned (default and maximum 512)
    backoff_cap    the longest BackOffMilliseconds honoured, in seconds (default 900)

OAuth2 (Exchange Online, allow-listed tenants). Credentials: a ``refresh_token`` (and
optionally a stored ``access_token`` with its ``token_expiry``, used while valid), with
options ``client_id``, ``client_secret``, ``authority`` (default
"https://login.microsoftonline.com/organizations"), ``instance_discovery`` and
``ca_bundle`` (a PEM file to trust for the authority; ``ca_file`` is the EWS endpoint's
only). Tokens come from msal (:mod:`providers.microsoft_tokens`) for the delegated scope
``https://outlook.office365.com/EWS.AccessAsUser.All``; rotated refresh tokens and new
access tokens go to ``settings.on_refresh_token_rotated`` / ``on_token_refresh``.
exchangelib only sends the bearer: it is given no client id, secret or expiry, so it never
tries its own refresh against its hard-coded ``login.microsoftonline.com/common`` token URL.
The provider refreshes before a call when the token expires within five minutes, and on a
401 (a token revoked or expired early) it refreshes once and resends the request; a second
401, or ``invalid_grant`` from the identity platform, is :class:`~providers.errors.AuthError`.
An access token alone (no refresh token) is used until it is refused.

Request counts: ``list_folders`` is two requests (GetFolder for the distinguished folders
that give roles, SyncFolderHierarchy for the tree); a no-change ``fetch_changes`` is one
SyncFolderItems; a change pass is one per 512 changes, plus one GetItem when only read
states moved (to learn the items' other flags); ``fetch_headers`` one GetItem per 100
items; ``fetch_bodies`` one per 10; ``send``/``send_without_copy``/``store_sent_copy``
one CreateItem each. Nothing is sent when the provider is opened.

Throttling. exchangelib shares one ``Protocol`` -- its connection pool and its retry
policy -- between every Account with the same endpoint and credentials (a service
account opening many mailboxes), and its fault-tolerant policy honours
``ErrorServerBusy`` by *sleeping inside that shared Protocol*: every account behind it
would stall, and a worker thread would be pinned for up to BackOffMilliseconds.
So each account is configured with ``FailFast``: a busy server surfaces at once as
:class:`~providers.errors.TransientError` with ``retry_after`` = BackOffMilliseconds
(capped at ``backoff_cap``), and the sync scheduler backs off that one account while
the others carry on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any

import requests
from exchangelib import (
    BASIC,
    DELEGATE,
    NTLM,
    OAUTH2,
    UTC,
    Account,
    Build,
    Configuration,
    Credentials,
    FailFast,
    Message,
    Version,
)
from exchangelib import errors as ews_errors
from exchangelib.folders import DeletedItems, Drafts, Inbox, JunkEmail, MsgFolderRoot, Outbox, Root, SentItems
from exchangelib.properties import FolderId, ItemId
from exchangelib.protocol import Protocol
from exchangelib.services import (
    CreateItem,
    DeleteItem,
    GetFolder,
    GetItem,
    MoveItem,
    SyncFolderHierarchy,
    SyncFolderItems,
)

from providers import ews_codec
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
from providers.errors import ConfigurationError, ProtocolError, SendError, SendUncertain
from providers.ews_folders import Folders
from providers.ews_oauth import EWS_SCOPES, BearerCredentials, RefreshOn401
from providers.ews_transport import TRANSIENT, EndpointTrustAdapter, may_have_sent, translate
from providers.microsoft_tokens import MicrosoftBackend, MicrosoftTokens

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/organizations"
DEFAULT_BUILD = "15.1.2507.6"  # Exchange 2016 CU: SyncFolderItems, MIME sends in one CreateItem
AUTH_TYPES = {"ntlm": NTLM, "basic": BASIC, "oauth2": OAUTH2}
ROLE_FOLDERS = {
    Inbox: FolderRole.INBOX,
    SentItems: FolderRole.SENT,
    DeletedItems: FolderRole.TRASH,
    Drafts: FolderRole.DRAFTS,
    JunkEmail: FolderRole.JUNK,
}
MAX_PAGE = 512
HEADER_BATCH, BODY_BATCH = 100, 10
FOLDER_FIELDS = ("name", "parent_folder_id", "folder_class")


class EwsProvider(MicrosoftBackend):
    """A :class:`providers.base.MailProvider` for one Exchange mailbox, over EWS with exchangelib.

    Folders are named by their EWS folder id; the role says what they are (a processing mailbox
    may name them by path too: :mod:`providers.ews_folders`)::

        >>> provider.list_folders()                                    # doctest: +SKIP
        [RemoteFolder(name='AAMkADAx...AAA=', role=<FolderRole.INBOX: 'inbox'>, ...), ...]
        >>> provider.fetch_changes(inbox, None)                        # doctest: +SKIP
        ChangeSet(new=('AAMkADAx...', ...), present=frozenset({...}),
                  cursor='{"folder": "AAMkADAx...", "syncState": "H4sIAAAA...", "v": 1}')
        >>> next(provider.fetch_headers(inbox, ["AAMkADAx..."]))       # doctest: +SKIP
        RemoteMessage(remote_id='AAMkADAx...', headers=b'Message-ID: <a@b>\\r\\nFrom: ...',
                      flags=frozenset({'\\\\Seen'}), size=5120, thread_hint='AAQkADAx...', ...)
    """

    supports_inbound = True

    def __init__(self, settings: ProviderSettings) -> None:
        opts, creds = settings.options, settings.credentials
        auth = str(opts.get("auth") or "ntlm").lower()
        if auth not in AUTH_TYPES:
            raise ConfigurationError(f"EWS setting auth must be one of {', '.join(AUTH_TYPES)}, not {auth!r}.")
        if auth == "oauth2":
            check_oauth(
                settings,
                no_grant="An EWS account with auth oauth2 needs a refresh token (or an access token).",
                no_client="EWS oauth2 settings need client_id and client_secret for the Entra ID app.",
            )
        elif creds.password is None:
            raise ConfigurationError(f"An EWS account with auth {auth} needs a password.")
        self._url = str(opts.get("ews_url") or "")
        self._autodiscover = bool(opts.get("autodiscover", False))
        if not self._url and not self._autodiscover:
            raise ConfigurationError("EWS settings need ews_url (or autodiscover = true).")
        try:
            self._build = Build(*(int(p) for p in str(opts.get("version") or DEFAULT_BUILD).split(".")))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"EWS setting version must look like 15.1.2507.6: {exc}") from exc
        super().__init__(settings)
        self._auth = auth
        self._page_size = min(int(opts.get("page_size", MAX_PAGE)), MAX_PAGE)
        self._backoff_cap = float(opts.get("backoff_cap", 900.0))
        if opts.get("ca_file") and self._url:
            EndpointTrustAdapter.trust(self._url, str(opts["ca_file"]))
        EndpointTrustAdapter.install()
        ews_codec.register_properties()
        self._account: Account | None = None
        self._folders: Folders | None = None
        self._tokens: MicrosoftTokens | None = None
        self._token_session: requests.Session | None = None
        if auth == "oauth2":
            authority = str(opts.get("authority") or DEFAULT_AUTHORITY).rstrip("/")
            if not authority.startswith("https://"):
                raise ConfigurationError(f"EWS setting authority must be an https URL, not {authority!r}.")
            self._token_session = requests.Session()
            self._tokens = MicrosoftTokens(
                settings,
                self._token_session,
                authority=authority,
                scopes=opts.get("scopes") or EWS_SCOPES,
                verify=opts.get("ca_bundle"),
                where=f"EWS {settings.email}",
            )

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.SERVER_THREAD_IDS, Capability.MOVE, Capability.SEND, Capability.STORE_SENT_COPY})

    def _acc(self) -> Account:
        if self._tokens is not None:
            self._bearer()
        if self._account is None:
            creds = self._settings.credentials
            credentials: Any
            policy: FailFast
            if self._tokens is not None:
                credentials = BearerCredentials(self._tokens.token())
                policy = RefreshOn401(credentials, self._tokens)
            else:
                credentials = Credentials(creds.username, creds.password)
                policy = FailFast()  # never sleep in the Protocol shared by accounts (module docstring)
            config = Configuration(
                service_endpoint=self._url or None,
                credentials=credentials,
                auth_type=AUTH_TYPES[self._auth],
                version=Version(build=self._build),
                retry_policy=policy,
                max_connections=1,
            )
            with self._translate("connect"):
                account = Account(
                    self._settings.email,
                    config=config,
                    autodiscover=self._autodiscover,
                    access_type=DELEGATE,
                    default_timezone=UTC,
                    locale="en_US",
                )
            account.protocol.TIMEOUT = self._settings.timeout
            self._account = account
        return self._account

    def _bearer(self) -> None:
        """Before a call: a token that expires within five minutes is refreshed, and the
        connection (which carries the old one) replaced."""
        assert self._tokens is not None
        account, before = self._account, self._tokens.access_token
        token = self._tokens.token()
        if account is not None and token != before:
            credentials = account.protocol.credentials
            assert isinstance(credentials, BearerCredentials)
            credentials.use(token)
            account.protocol.close()  # the next request opens a session with the new token

    def close(self) -> None:
        """Drop idle connections. Safe to call twice; the next call reconnects."""
        account, self._account, self._folders = self._account, None, None
        if account is not None:
            account.protocol.close()
            if isinstance(account.protocol.credentials, BearerCredentials):
                # one Protocol per provider (see BearerCredentials): forget it with the provider
                with suppress(KeyError):
                    del Protocol[account.protocol.config]
        if self._token_session is not None:
            self._token_session.close()

    def _translate(self, what: str) -> AbstractContextManager[None]:
        """exchangelib and requests errors -> :mod:`providers.errors` (:func:`providers.ews_transport.translate`)."""
        return translate(f"EWS {self._settings.email} {what}", self._backoff_cap)

    # ------------------------------------------------------------ folders
    def list_folders(self) -> list[RemoteFolder]:
        """Mail folders under the message root, with roles from the distinguished folder ids."""
        acc = self._acc()
        root = Root(account=acc)
        wanted = [*ROLE_FOLDERS, Outbox, MsgFolderRoot]
        with self._translate("GetFolder"):
            found = list(
                GetFolder(account=acc).call(
                    folders=[c(root=root) for c in wanted], additional_fields=set(), shape="IdOnly"
                )
            )
        ids = {cls: f.id for cls, f in zip(wanted, found, strict=True) if not isinstance(f, Exception)}
        roles = {ids[cls]: role for cls, role in ROLE_FOLDERS.items() if cls in ids}
        with self._translate("SyncFolderHierarchy"):
            svc = SyncFolderHierarchy(account=acc)
            paths = {ews_codec.FieldPath(field=root.get_field_by_fieldname(n)) for n in FOLDER_FIELDS}
            tree = [f for kind, f in svc.call(folder=root, shape="IdOnly", additional_fields=paths, sync_state=None)]
        parents = {f.id: getattr(f.parent_folder_id, "id", None) for f in tree}
        top = ids.get(MsgFolderRoot)
        folders = []
        for f in tree:
            if f.id in (ids.get(Outbox), top) or not _under(f.id, top, parents):
                continue
            if f.folder_class and not f.folder_class.startswith("IPF.Note"):
                continue  # calendars, contacts, tasks
            role = roles.get(f.id)
            if role is None and f.name == "Archive" and parents.get(f.id) == top:
                role = FolderRole.ARCHIVE
            folders.append(RemoteFolder(f.id, role))
        return folders

    # ------------------------------------------------------------ processing mailbox
    def _paths(self) -> Folders:
        if self._folders is None:
            self._folders = Folders(self._acc, self._translate, f"EWS {self._settings.email}")
        return self._folders

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """The folder's (by id, distinguished name or path) item ids; the validity is a constant."""
        return self._paths().list_ids(folder)

    def ensure_folder(self, name: str) -> RemoteFolder:
        """The folder at path ``name`` under the message root, created (CreateFolder) where missing."""
        return self._paths().ensure(name)

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """FindItem in the folder restricted to ``message:InternetMessageId``."""
        return self._paths().find_message(folder, message_id)

    # ------------------------------------------------------------ sync
    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        """SyncFolderItems from the folder's SyncState until IncludesLastItemInRange."""
        acc = self._acc()
        state = None if cursor is None else ews_codec.Cursor.load(cursor, folder.name).sync_state
        new: dict[str, frozenset[str]] = {}
        changed: dict[str, frozenset[str]] = {}
        removed: dict[str, None] = {}
        reread: dict[str, None] = {}
        fields = ews_codec.field_paths(ews_codec.SYNC_FIELD_NAMES)
        svc = SyncFolderItems(account=acc)
        with self._translate("SyncFolderItems"):
            while True:
                page = svc.call(
                    folder=FolderId(id=folder.name),
                    shape="IdOnly",
                    additional_fields=fields,
                    sync_state=state,
                    ignore=None,
                    max_changes_returned=self._page_size,
                    sync_scope=None,
                )
                for kind, obj in page:
                    if isinstance(obj, Exception):
                        raise obj
                    if kind == svc.CREATE:
                        removed.pop(obj.id, None)
                        new[obj.id] = ews_codec.flags_of(obj)
                    elif kind == svc.UPDATE:
                        (new if obj.id in new else changed)[obj.id] = ews_codec.flags_of(obj)
                        reread.pop(obj.id, None)
                    elif kind == svc.DELETE:
                        for seen in (new, changed, reread):
                            seen.pop(obj.id, None)
                        removed[obj.id] = None
                    elif kind == svc.READ_FLAG_CHANGE and obj[0].id not in new:
                        reread[obj[0].id] = None
                done = svc.includes_last_item_in_range or svc.sync_state == state
                state = svc.sync_state
                if done:
                    break
        for item in self._get(list(reread), ews_codec.SYNC_FIELD_NAMES, HEADER_BATCH):
            changed[item.id] = ews_codec.flags_of(item)
        next_cursor = ews_codec.Cursor(folder.name, str(state)).dump()
        ids = tuple(new)
        if cursor is None:
            return ChangeSet(new=ids, present=frozenset(ids), cursor=next_cursor)
        updates = tuple(FlagUpdate(rid, flags) for rid, flags in changed.items())
        return ChangeSet(new=ids, changed=updates, removed=tuple(removed), cursor=next_cursor)

    def _get(self, ids: Sequence[str], names: Sequence[str], batch: int) -> Iterator[Any]:
        """GetItem for these ids with only ``names``; vanished ids are skipped."""
        if not ids:
            return
        acc = self._acc()
        fields = ews_codec.field_paths(names)
        with self._translate("GetItem"):
            svc = GetItem(account=acc, chunk_size=batch)
            answers = svc.call(items=[ItemId(id=i) for i in ids], additional_fields=fields, shape="IdOnly")
            for rid, item in zip(ids, answers, strict=False):  # answers come in the order asked
                if isinstance(item, ews_errors.ErrorItemNotFound):
                    continue
                if isinstance(item, Exception) and not isinstance(item, TRANSIENT):
                    who = f"EWS {self._settings.email} GetItem"
                    raise ProtocolError(f"{who}: {item.__class__.__name__}: {item}", remote_id=rid) from item
                if isinstance(item, Exception):
                    raise item
                yield item

    # ------------------------------------------------------------ messages
    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        for item in self._get(list(dict.fromkeys(remote_ids)), ews_codec.HEADER_FIELD_NAMES, HEADER_BATCH):
            yield ews_codec.remote_message(item)

    def fetch_bodies(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> dict[str, bytes]:
        items = self._get(list(dict.fromkeys(remote_ids)), ews_codec.BODY_FIELD_NAMES, BODY_BATCH)
        return {str(item.id): bytes(item.mime_content) for item in items if item.mime_content is not None}

    # ------------------------------------------------------------ writing
    def _create(self, message: Message, disposition: str, folder: str | None) -> list[Any]:
        acc = self._acc()
        target = SentItems(root=Root(account=acc)) if folder == "sentitems" else None
        with self._translate(f"CreateItem {disposition}"):
            try:
                results = list(
                    CreateItem(account=acc).call(
                        items=[message],
                        folder=target,
                        message_disposition=disposition,
                        send_meeting_invitations="SendToNone",
                    )
                )
            except (ews_errors.ErrorInvalidRecipients, ews_errors.ErrorMessageSizeExceeded) as exc:
                raise SendError(f"EWS {self._settings.email} refused the message: {exc}") from exc
            except Exception as exc:
                if disposition != "SaveOnly" and may_have_sent(exc):
                    text = f"EWS {self._settings.email} CreateItem {disposition}: no clear answer after the request"
                    raise SendUncertain(f"{text} was sent: {exc.__class__.__name__}: {exc}") from exc
                raise
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results

    def send(self, message: OutgoingMessage) -> SendResult:
        """CreateItem SendAndSaveCopy with our MIME as it is (Message-ID, In-Reply-To, References
        kept); Exchange files the copy in Sent Items itself. A server error, a read timeout or a
        connection lost once the request was written is :class:`SendUncertain`."""
        self._create(Message(account=self._acc(), mime_content=message.raw), "SendAndSaveCopy", "sentitems")
        return SendResult(message_id=message.message_id, sent_copy_stored=True)

    def find_sent(self, message_id: str) -> str | None:
        """FindItem in Sent Items restricted to ``message:InternetMessageId`` = ``message_id``."""
        return self._paths().find_message(RemoteFolder("sentitems"), message_id)

    def send_without_copy(self, message: OutgoingMessage) -> SendResult:
        """CreateItem SendOnly: delivered, with no copy in Sent Items (see :meth:`store_sent_copy`)."""
        self._create(Message(account=self._acc(), mime_content=message.raw), "SendOnly", None)
        return SendResult(message_id=message.message_id, sent_copy_stored=False)

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        """Save one copy of ``raw`` into Sent Items as a sent message, not a draft; returns its item id.

        An item created from MIME is a draft (MSGFLAG_UNSENT) unless PidTagMessageFlags is
        given when it is created, so the CreateItem SaveOnly carries it without that bit.
        """
        seen = SEEN in flags
        message = Message(
            account=self._acc(),
            mime_content=raw,
            is_read=seen,
            postroom_message_flags=ews_codec.MSGFLAG_READ if seen else 0,
        )
        if FLAGGED in flags:
            message.postroom_flag_status = ews_codec.FLAG_STATUS_FLAGGED  # type: ignore[attr-defined]
        results = self._create(message, "SaveOnly", "sentitems")
        return str(results[0].id) if results and getattr(results[0], "id", None) else None

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        """MoveItem (the moved item gets a new id in the target); vanished ids are skipped."""
        if not remote_ids:
            return
        with self._translate("MoveItem"):
            svc = MoveItem(account=self._acc())
            for result in svc.call(items=[ItemId(id=i) for i in remote_ids], to_folder=FolderId(id=target.name)):
                if isinstance(result, Exception) and not isinstance(result, ews_errors.ErrorItemNotFound):
                    raise result

    def delete(self, folder: RemoteFolder, remote_ids: Sequence[str], *, for_good: bool = False) -> None:
        """DeleteItem into Deleted Items, or HardDelete for good; vanished ids are skipped."""
        if not remote_ids:
            return
        with self._translate("DeleteItem"):
            results = DeleteItem(account=self._acc()).call(
                items=[ItemId(id=i) for i in remote_ids],
                delete_type="HardDelete" if for_good else "MoveToDeletedItems",
                send_meeting_cancellations="SendToNone",
                affected_task_occurrences="AllOccurrences",
                suppress_read_receipts=True,
            )
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, ews_errors.ErrorItemNotFound):
                    raise result


def _under(folder_id: str, top: str | None, parents: dict[str, str | None]) -> bool:
    seen: set[str] = set()
    current: str | None = folder_id
    while current is not None and current not in seen:
        if current == top:
            return True
        seen.add(current)
        current = parents.get(current)
    return False
