"""The provider contract: what the sync engine may ask of any mail backend.

Backends (IMAP/SMTP, Gmail, EWS, Graph) satisfy :class:`MailProvider`
structurally; they do not inherit from it. They take and return the small
frozen dataclasses below and know nothing about the database. Every backend
must pass the shared contract suite in ``tests/providers/contract.py``.

A sync pass over one folder looks like this::

    changes = provider.fetch_changes(folder, cursor)      # cheap: ids + flags
    for batch in chunks(changes.new, 500):
        for msg in provider.fetch_headers(folder, batch):  # header blocks
            ...index it...
    bodies = provider.fetch_bodies(folder, wanted_ids)    # raw MIME, batched
    cursor = changes.cursor                               # commit last
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from postroom.config import Config


class FolderRole(enum.StrEnum):
    """What a folder is for, independent of its (possibly localised) name."""

    INBOX = "inbox"
    SENT = "sent"
    DRAFTS = "drafts"
    TRASH = "trash"
    JUNK = "junk"
    ARCHIVE = "archive"
    ALL = "all"  # Gmail's All Mail: every message once
    FLAGGED = "flagged"
    IMPORTANT = "important"


class Capability(enum.StrEnum):
    """Features a backend declares; the engine branches on these, never on names.

    ``SMTP_ENVELOPE``: :meth:`MailProvider.send_without_copy` (what a tracked send uses) delivers
    to exactly ``OutgoingMessage.recipients`` as the SMTP envelope, whatever the headers say, so
    a tracked send can give every recipient a copy with the same To and Cc (one transaction per
    recipient). IMAP always has it (it submits over SMTP, :meth:`MailProvider.send` too); Gmail
    and Graph have it when the account has ``smtp_submission`` on (their SMTP submission with
    OAuth, :mod:`providers.smtp_oauth`; their untracked ``send`` stays on the API, where the
    headers name every recipient anyway); EWS never (Exchange takes the recipients from the
    message). Without it the recipients come from the To, Cc and Bcc headers::

        >>> Capability.SMTP_ENVELOPE in provider.capabilities    # doctest: +SKIP
        True
    """

    CONDSTORE = "condstore"  # cheap "what changed since modseq N" queries
    QRESYNC = "qresync"  # expunges reported without listing the folder
    MOVE = "move"  # atomic server-side move
    SERVER_THREAD_IDS = "server-thread-ids"  # RemoteMessage.thread_hint is meaningful
    LABELS = "labels"  # one message can sit in several folders (Gmail)
    PUSH = "push"  # IDLE / watch notifications
    SEND = "send"  # can submit mail
    STORE_SENT_COPY = "store-sent-copy"  # can place a message into Sent
    SMTP_ENVELOPE = "smtp-envelope"  # sends go to OutgoingMessage.recipients, not to the headers


@dataclass(frozen=True)
class RemoteFolder:
    """A folder as the server names it.

    >>> RemoteFolder(name="Sent Items", role=FolderRole.SENT)
    RemoteFolder(name='Sent Items', role=<FolderRole.SENT: 'sent'>, delimiter='/', selectable=True)
    """

    name: str  # the server's full path or id, used in every later call
    role: FolderRole | None = None
    delimiter: str = "/"
    selectable: bool = True


@dataclass(frozen=True)
class FlagUpdate:
    """A message whose flags (or labels) changed since the cursor."""

    remote_id: str
    flags: frozenset[str]


@dataclass(frozen=True)
class ChangeSet:
    """What changed in one folder since ``cursor`` was issued.

    ``new`` lists remote ids in ascending server order; their headers come from
    :meth:`MailProvider.fetch_headers`. When ``present`` is not None the backend
    had to enumerate the folder, and it is the complete set of remote ids in it:
    anything the engine knows in this folder that is not in ``present`` is gone.
    ``cursor`` is opaque text the engine stores verbatim once the changes are
    applied.

    >>> ChangeSet(new=("101", "102"), changed=(FlagUpdate("7", frozenset({"\\\\Seen"})),),
    ...           removed=("5",), cursor='{"uidvalidity": 1, "uidnext": 103}')  # doctest: +SKIP
    """

    new: tuple[str, ...] = ()
    changed: tuple[FlagUpdate, ...] = ()
    removed: tuple[str, ...] = ()
    present: frozenset[str] | None = None
    cursor: str = ""

    @property
    def empty(self) -> bool:
        return not (self.new or self.changed or self.removed) and self.present is None


@dataclass(frozen=True)
class RemoteMessage:
    """One message's index data: its raw header block plus server metadata.

    ``headers`` holds at least Message-ID, In-Reply-To, References, From, To,
    Cc, Reply-To, Subject and Date as the server stores them (raw bytes; the
    core parses them).
    """

    remote_id: str
    headers: bytes
    flags: frozenset[str] = frozenset()
    size: int | None = None
    internal_date: datetime | None = None
    thread_hint: str | None = None  # X-GM-THRID, Gmail threadId, ConversationId
    provider_message_id: str | None = None  # X-GM-MSGID, Gmail id, EWS ItemId
    labels: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FolderListing:
    """Every message id in one folder at one moment, ascending, with the folder's validity:
    ids are only comparable while ``validity`` stays the same (IMAP UIDVALIDITY).

    >>> FolderListing(validity=1733350000, ids=("101", "102", "107"))
    FolderListing(validity=1733350000, ids=('101', '102', '107'))
    """

    validity: int
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutgoingMessage:
    """A composed message ready to submit: raw RFC 5322 bytes plus envelope."""

    raw: bytes
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    thread_hint: str | None = None  # reply into this provider thread where supported


@dataclass(frozen=True)
class SendResult:
    """What the provider did with an :class:`OutgoingMessage`."""

    message_id: str
    provider_id: str | None = None  # e.g. Gmail message id, or the Sent copy's UID
    sent_copy_stored: bool = False  # the provider placed the copy in Sent itself
    refused: Mapping[str, str] = field(default_factory=dict)  # partial refusals


@dataclass(frozen=True)
class Credentials:
    """How to log in: a ``password``, or OAuth 2.0 tokens.

    With OAuth, ``access_token`` is used as it is (IMAP/SMTP SASL), or, for REST
    backends, ``refresh_token`` obtains fresh access tokens; ``token_expiry`` (UTC)
    says when the stored ``access_token`` runs out, if known.
    """

    username: str
    password: str | None = None
    access_token: str | None = None
    oauth_mechanism: str = "XOAUTH2"  # or "OAUTHBEARER"
    refresh_token: str | None = None
    token_expiry: datetime | None = None

    def __repr__(self) -> str:  # never print secrets into logs
        kind = "password" if self.password is not None else "oauth2"
        return f"Credentials(username={self.username!r}, {kind}=***)"


@runtime_checkable
class MailProvider(Protocol):
    """The contract every backend satisfies. Calls may raise only the classes
    in :mod:`providers.errors`."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        """Declared features, valid after the first call that talks to the server."""
        ...

    def list_folders(self) -> list[RemoteFolder]:
        """Every selectable folder with its role where one is known, e.g.
        ``[RemoteFolder("INBOX", FolderRole.INBOX), RemoteFolder("Gesendet", FolderRole.SENT)]``."""
        ...

    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        """Changes since ``cursor`` (None: the whole folder, every id in ``new``).
        Raises :class:`CursorInvalidError` when the cursor no longer applies."""
        ...

    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        """Header data for these ids, batched on the wire. Ids that vanished
        meanwhile are skipped silently."""
        ...

    def fetch_bodies(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> dict[str, bytes]:
        """Raw MIME for these ids, e.g. ``{"101": b"Message-ID: <a@b>\\r\\n..."}``;
        ids that vanished meanwhile are missing from the result."""
        ...

    def send(self, message: OutgoingMessage) -> SendResult:
        """Submit the message to its recipients. Raises :class:`SendError` when the server
        refused it for good, :class:`SendUncertain` when the failure came after the server
        may have accepted it (never resend those without :meth:`find_sent` first), and
        :class:`TransientError` when it is safe to try again."""
        ...

    def send_without_copy(self, message: OutgoingMessage) -> SendResult:
        """Submit the message as :meth:`send` does (and raise as it does) but leave no copy of
        it in Sent: the per-recipient copies of a tracked send go out this way, then one clean
        copy is stored with :meth:`store_sent_copy`. ``sent_copy_stored`` is true when a copy
        may stay anyway: Gmail keeps a message to the sender's own address (it is the inbox copy
        too), and over IMAP a server that files submitted mail itself (Gmail, many hosts) may
        file one a moment later — the caller finds it with :meth:`find_sent` and removes it with
        :meth:`delete`."""
        ...

    def find_sent(self, message_id: str) -> str | None:
        """The remote id of a message with this exact Message-ID in the folder where the
        provider files sent mail (IMAP: the Sent folder; Gmail: label SENT; Graph and EWS:
        Sent Items), or None if there is none, e.g. ``provider.find_sent("<3f2b@mail.example.com>")``
        -> ``"4711"``. Used to settle a send that ended :class:`SendUncertain`; not finding
        the message is no proof that it was not sent."""
        ...

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        """Place one copy of ``raw`` into the Sent folder; returns its remote id if known."""
        ...

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        """Move messages between folders (falls back to copy + delete; IMAP: ``UID MOVE``, or
        ``UID COPY`` + ``UID STORE +FLAGS (\\Deleted)`` + ``UID EXPUNGE`` where MOVE is not
        announced or the ``disable_move`` option is set). Ids that vanished are skipped."""
        ...

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """Every message id in ``folder`` now (IMAP: ``UID SEARCH ALL`` after a fresh SELECT,
        never sequence numbers), e.g. ``FolderListing(validity=1733350000, ids=("101", "102"))``.
        What the processing mailbox takes its work from. Backends that cannot raise
        :class:`~providers.errors.NotSupported`."""
        ...

    def ensure_folder(self, name: str) -> RemoteFolder:
        """The folder called ``name`` (a full path, e.g. ``"processed"`` or ``"INBOX/failed"``),
        created when missing (IMAP ``CREATE``, an ``[ALREADYEXISTS]`` answer taken as success,
        then ``SUBSCRIBE`` so mail clients show it), e.g. ``RemoteFolder("processed")``."""
        ...

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """The remote id of the newest message in ``folder`` with this exact Message-ID, or None,
        e.g. ``provider.find_message(RemoteFolder("failed"), "<a1@mail.example.org>")`` -> ``"12"``
        (IMAP: ``UID SEARCH HEADER Message-ID`` after a fresh SELECT)."""
        ...

    def delete(self, folder: RemoteFolder, remote_ids: Sequence[str], *, for_good: bool = False) -> None:
        """Delete messages from ``folder`` into the trash (IMAP: the Trash folder; Gmail: label
        TRASH; Graph and EWS: Deleted Items), or for good with ``for_good`` (IMAP also when the
        folder is the Trash or there is none). Ids that vanished meanwhile are skipped."""
        ...

    def close(self) -> None:
        """Log out and release connections. Safe to call twice."""
        ...


@dataclass(frozen=True)
class ProviderSettings:
    """Everything a backend needs to connect, without any database types.

    ``options`` holds backend-specific settings, e.g. for IMAP
    ``{"imap_host": "mail.example.com", "imap_port": 993, "imap_security": "ssl",
    "smtp_host": ..., "smtp_port": 587, "smtp_security": "starttls",
    "ca_file": None, "allow_plaintext": False, "proxy": "http://proxy:3128"}``.
    """

    email: str
    credentials: Credentials
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0
    # called as on_token_refresh(access_token, expiry) after an OAuth refresh, so the
    # caller can persist the new token; expiry is an aware UTC datetime or None
    on_token_refresh: Callable[[str, datetime | None], None] | None = field(default=None, compare=False, repr=False)
    # called as on_refresh_token_rotated(refresh_token) when the identity provider issued a new
    # refresh token (Microsoft does on every refresh), before on_token_refresh; persist it,
    # since later refreshes must use it
    on_refresh_token_rotated: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@runtime_checkable
class ProviderFactory(Protocol):
    """What the registry (:mod:`providers.registry`) loads for a backend name: usually the
    backend class itself (:class:`providers.common.backend.Backend` gives the defaults).

    Opening an account is ``factory.open(settings)`` with
    ``settings.options == factory.options_with_config(stored_options, credentials, config)``:
    the backend says what it takes from the Postroom config, so the caller needs no
    ``if provider == ...`` for it.
    """

    def open(self, settings: ProviderSettings) -> MailProvider:
        """A provider for one account, e.g. ``ImapProvider.open(settings)``. Checks the settings
        (:class:`~providers.errors.ConfigurationError`) and sends nothing: the connection
        is made on first use."""
        ...

    def options_with_config(
        self, options: Mapping[str, Any], credentials: Credentials, config: Config
    ) -> dict[str, Any]:
        """The account's stored ``options`` plus what this backend takes from ``config``, e.g.
        for Gmail with a refresh token ``{..., "client_id": "123.apps.googleusercontent.com",
        "client_secret": "..."}`` from ``[google]``: secrets that belong to the deployment,
        never stored with an account."""
        ...
