"""IMAP + SMTP backend built on the standard library's imaplib and smtplib.

One provider holds one IMAP connection, opened on first use. Not thread-safe:
use one provider per worker thread.

Options (``ProviderSettings.options``)::

    imap_host, imap_port (993 / 143), imap_security: "ssl" | "starttls" | "none"
    smtp_host, smtp_port (465 / 587 / 25), smtp_security, smtp_auth (default True)
    ca_file            extra CA bundle for self-signed or private servers
    allow_plaintext    permit security "none" to a non-loopback host
    proxy              "http://host:port": HTTP CONNECT proxy for the IMAP connection
    batch_size         UIDs per FETCH command (default 500)
    disable_extensions e.g. ["CONDSTORE", "QRESYNC", "MOVE", "LIST-STATUS", "SASL-IR"]: behave as if
                       not advertised
    disable_move       shorthand for disabling MOVE (copy + delete + expunge instead)

Folder sync (``fetch_changes``, the cursor format, the CONDSTORE/QRESYNC and
listing paths) lives in :mod:`providers.imap_changes`.
"""

from __future__ import annotations

import base64
import imaplib
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from providers import imap_changes
from providers import imap_protocol as proto
from providers.base import (
    Capability,
    ChangeSet,
    FolderRole,
    OutgoingMessage,
    ProviderSettings,
    RemoteFolder,
    RemoteMessage,
    SendResult,
)
from providers.errors import (
    AuthError,
    FolderNotFound,
    ProtocolError,
    ProviderError,
    TransientError,
)
from providers.imap_connection import ImapFactory, close_quietly, connect_imap
from providers.smtp import SmtpFactory, connect_smtp, send_message, xoauth2_bytes
from providers.transport import ConfigurationError, Endpoint, check_endpoint

HEADER_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES FROM TO CC BCC REPLY-TO SENDER SUBJECT DATE"
DEFAULT_BATCH = 500
LISTED_STATUS_MAX_AGE = 10.0  # seconds a LIST-STATUS answer may stand in for a STATUS command


@dataclass
class _Selected:
    name: str
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None


def _last_int(responses: dict[str, list[Any]], key: str) -> int | None:
    values = [v for v in responses.get(key, []) if isinstance(v, bytes) and v.strip()]
    if not values:
        return None
    try:
        return int(values[-1].split()[0])
    except ValueError:
        return None


class ImapProvider:
    """A :class:`providers.base.MailProvider` for any IMAP server plus SMTP submission."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        imap_factory: ImapFactory = connect_imap,
        smtp_factory: SmtpFactory = connect_smtp,
    ) -> None:
        opts = settings.options
        if not opts.get("imap_host"):
            raise ConfigurationError("IMAP settings need imap_host")
        security = str(opts.get("imap_security", "ssl")).lower()
        self._imap_endpoint = Endpoint(
            host=str(opts["imap_host"]),
            port=int(opts.get("imap_port") or (993 if security == "ssl" else 143)),
            security=security,
            ca_file=opts.get("ca_file"),
            proxy=opts.get("proxy"),
        )
        allow_plaintext = bool(opts.get("allow_plaintext", False))
        check_endpoint(self._imap_endpoint, allow_plaintext, "IMAP")
        self._smtp_endpoint: Endpoint | None = None
        if opts.get("smtp_host"):
            smtp_security = str(opts.get("smtp_security", "starttls")).lower()
            default_port = {"ssl": 465, "starttls": 587}.get(smtp_security, 25)
            self._smtp_endpoint = Endpoint(
                host=str(opts["smtp_host"]),
                port=int(opts.get("smtp_port") or default_port),
                security=smtp_security,
                ca_file=opts.get("ca_file"),
            )
            check_endpoint(self._smtp_endpoint, allow_plaintext, "SMTP")
        self._smtp_auth = bool(opts.get("smtp_auth", True))
        self._batch_size = max(1, int(opts.get("batch_size", DEFAULT_BATCH)))
        disabled = {str(x).upper() for x in opts.get("disable_extensions", ())}
        if opts.get("disable_move"):
            disabled.add("MOVE")
        if "CONDSTORE" in disabled:
            disabled.add("QRESYNC")  # QRESYNC builds on CONDSTORE
        self._disabled = frozenset(disabled)
        self._settings = settings
        self._imap_factory = imap_factory
        self._smtp_factory = smtp_factory
        self._conn: imaplib.IMAP4 | None = None
        self._server_caps: frozenset[str] = frozenset()
        self._selected: _Selected | None = None
        self._wire_names: dict[str, str] = {}
        self._folders: list[RemoteFolder] | None = None
        self._enabled = False
        # STATUS of each folder as of the last LIST (LIST-STATUS, RFC 5819), by folder name
        self._listed_status: dict[str, tuple[float, dict[str, int]]] = {}
        self.command_count = 0  # IMAP commands sent, for tests and metrics

    @classmethod
    def open(cls, settings: ProviderSettings) -> ImapProvider:
        """Validate the settings; the connection is made on first use."""
        return cls(settings)

    def __enter__(self) -> ImapProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ capabilities
    def _has(self, name: str) -> bool:
        return name in self._server_caps and name not in self._disabled

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = {Capability.STORE_SENT_COPY}
        if self._smtp_endpoint is not None:
            caps.add(Capability.SEND)
        if self._has("CONDSTORE"):
            caps.add(Capability.CONDSTORE)
        if self._has("QRESYNC"):
            caps.add(Capability.QRESYNC)
        if self._has("MOVE"):
            caps.add(Capability.MOVE)
        if self._has("IDLE"):
            caps.add(Capability.PUSH)
        if self._has("X-GM-EXT-1"):
            caps.update({Capability.SERVER_THREAD_IDS, Capability.LABELS})
        return frozenset(caps)

    # ------------------------------------------------------------ connection
    def _where(self) -> str:
        return f"IMAP {self._imap_endpoint.host}:{self._imap_endpoint.port}"

    def _connection(self) -> imaplib.IMAP4:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> imaplib.IMAP4:
        endpoint, creds = self._imap_endpoint, self._settings.credentials
        try:
            conn = self._imap_factory(endpoint, self._settings.timeout)
        except ProviderError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise TransientError(f"{self._where()}: certificate not trusted ({exc.verify_message})") from exc
        except (OSError, imaplib.IMAP4.error, EOFError) as exc:
            raise TransientError(f"{self._where()}: cannot connect: {exc}") from exc
        self.command_count += 1
        try:
            if creds.access_token is not None:
                mechanism = creds.oauth_mechanism.upper()
                _, said = self._authenticate(conn, mechanism, xoauth2_bytes(creds, endpoint.host, endpoint.port))
            elif "AUTH=PLAIN" in conn.capabilities and "LOGINDISABLED" not in conn.capabilities:
                said = self._authenticate_plain(conn, creds.username, creds.password or "")
            else:
                _, said = conn.login(creds.username, creds.password or "")
            self.command_count += 1
        except imaplib.IMAP4.abort as exc:
            raise TransientError(f"{self._where()}: connection lost while logging in: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            text = str(exc)
            close_quietly(conn)
            if "[UNAVAILABLE]" in text or "[INUSE]" in text:
                raise TransientError(f"{self._where()}: login temporarily refused: {text}") from exc
            raise AuthError(f"{self._where()} refused the credentials for {creds.username}: {text}") from exc
        except OSError as exc:
            raise TransientError(f"{self._where()}: connection lost while logging in: {exc}") from exc
        self._conn = conn
        self._selected = None
        self._enabled = False
        self._listed_status = {}
        # imaplib keeps the pre-login list; servers often advertise more afterwards,
        # usually in the login reply itself ("a OK [CAPABILITY ...] Logged in")
        caps = proto.response_code(b" ".join(d for d in said if isinstance(d, bytes)), "CAPABILITY")
        if caps is None:
            _, responses = self._command("CAPABILITY")
            self._server_caps = proto.parse_capabilities(responses.get("CAPABILITY", []))
        else:
            self._server_caps = frozenset(c.upper() for c in caps)
        conn.capabilities = tuple(sorted(self._server_caps))
        return conn

    def _authenticate_plain(self, conn: imaplib.IMAP4, username: str, password: str) -> list[Any]:
        """AUTHENTICATE PLAIN, in one round trip where the server takes an initial response (RFC 4959)."""
        payload = f"\0{username}\0{password}".encode()
        if "SASL-IR" not in conn.capabilities or "SASL-IR" in self._disabled:
            return self._authenticate(conn, "PLAIN", payload)[1]
        typ, said = conn._simple_command("AUTHENTICATE", "PLAIN", base64.b64encode(payload).decode())  # type: ignore[attr-defined]
        if typ != "OK":
            raise conn.error(b" ".join(d for d in said if isinstance(d, bytes)).decode("utf-8", "replace"))
        conn.state = "AUTH"
        return said  # type: ignore[no-any-return]

    def _enable(self) -> None:
        """ENABLE QRESYNC (or CONDSTORE) once per connection, before the first SELECT needs it."""
        if self._enabled:
            return
        self._enabled = True
        if self._has("ENABLE") and (self._has("QRESYNC") or self._has("CONDSTORE")):
            self._command("ENABLE", "QRESYNC" if self._has("QRESYNC") else "CONDSTORE")

    @staticmethod
    def _authenticate(conn: imaplib.IMAP4, mechanism: str, payload: bytes) -> tuple[str, list[Any]]:
        answered = False

        def respond(_challenge: bytes) -> bytes:
            # a second challenge is the server's error report (RFC 7628): answer empty
            nonlocal answered
            if answered:
                return b""
            answered = True
            return payload

        return conn.authenticate(mechanism, respond)  # type: ignore[return-value]

    def _drop(self) -> None:
        conn, self._conn, self._selected = self._conn, None, None
        if conn is not None:
            close_quietly(conn)

    def close(self) -> None:
        """Log out and release the connection. Safe to call twice."""
        conn, self._conn, self._selected = self._conn, None, None
        if conn is not None:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error, EOFError):
                close_quietly(conn)

    def _command(self, name: str, *args: str) -> tuple[str, dict[str, list[Any]]]:
        """Send one command; returns the tagged text and the untagged responses."""
        return self._call(lambda conn: conn._simple_command(name, *args), name)  # type: ignore[attr-defined]

    def _call(
        self, send: Callable[[imaplib.IMAP4], tuple[str, list[Any]]], name: str
    ) -> tuple[str, dict[str, list[Any]]]:
        conn = self._connection()
        conn.untagged_responses = {}
        self.command_count += 1
        try:
            typ, data = send(conn)
        except imaplib.IMAP4.abort as exc:
            self._drop()
            raise TransientError(f"{self._where()}: connection lost during {name}: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            raise ProtocolError(f"{self._where()}: {name} rejected: {exc}") from exc
        except (OSError, EOFError) as exc:
            self._drop()
            raise TransientError(f"{self._where()}: {name} failed: {exc!r}") from exc
        responses, conn.untagged_responses = conn.untagged_responses, {}
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        if typ != "OK":
            if "[NONEXISTENT]" in text or (name in ("SELECT", "STATUS") and "exist" in text.lower()):
                raise FolderNotFound(f"{self._where()}: {name}: {text}")
            if any(code in text for code in ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]")):
                raise TransientError(f"{self._where()}: {name}: {text}")
            raise ProtocolError(f"{self._where()}: {name} failed: {text}")
        self._track(responses)
        return text, responses

    def _track(self, responses: dict[str, list[Any]]) -> None:
        """Keep the selected folder's message count current from unsolicited responses."""
        if self._selected is None:
            return
        exists = _last_int(responses, "EXISTS")
        if exists is not None:
            self._selected.exists = exists
        else:
            gone = len(responses.get("EXPUNGE", []))
            gone += len(proto.parse_vanished([v for v in responses.get("VANISHED", []) if b"EARLIER" not in v]))
            self._selected.exists -= gone

    # ------------------------------------------------------------ folders
    def _wire(self, folder: RemoteFolder | str) -> str:
        name = folder.name if isinstance(folder, RemoteFolder) else folder
        return proto.quote(self._wire_names.get(name) or proto.encode_mailbox_name(name))

    def list_folders(self) -> list[RemoteFolder]:
        """Every selectable folder with its role. Where the server has LIST-STATUS
        (RFC 5819) the same command also returns each folder's STATUS, which the
        following :meth:`fetch_changes` of that folder uses instead of asking again:
        a no-change pass then costs one command for the whole account."""
        self._connection()
        returns = []
        if self._has("SPECIAL-USE") and self._has("LIST-EXTENDED"):
            returns.append("SPECIAL-USE")
        if self._has("LIST-STATUS"):
            returns.append(f"STATUS ({imap_changes.status_items(self)})")
        if returns:
            _, responses = self._command("LIST", '""', '"*"', "RETURN", f"({' '.join(returns)})")
        else:
            _, responses = self._command("LIST", '""', '"*"')
        try:
            entries = [e for e in proto.parse_list(responses.get("LIST", [])) if e.selectable]
            statuses = proto.parse_status_all(responses.get("STATUS", []))
        except proto.ParseError as exc:
            raise ProtocolError(f"{self._where()}: unreadable LIST response: {exc}") from exc
        listed_at = time.monotonic()
        self._listed_status = {e.name: (listed_at, statuses[e.raw_name]) for e in entries if e.raw_name in statuses}
        roles: dict[str, FolderRole | None] = {}
        for e in entries:
            roles[e.name] = FolderRole.INBOX if e.name.upper() == "INBOX" else proto.role_from_attributes(e.attributes)
        taken = {r for r in roles.values() if r is not None}
        for e in entries:
            if roles[e.name] is None:
                guess = proto.role_from_name(e.name, e.delimiter)
                if guess is not None and guess not in taken:
                    roles[e.name] = guess
                    taken.add(guess)
        self._wire_names = {e.name: e.raw_name for e in entries}
        self._folders = [RemoteFolder(e.name, roles[e.name], e.delimiter or "/", True) for e in entries]
        return list(self._folders)

    def _folder_with_role(self, role: FolderRole) -> RemoteFolder:
        folders = self._folders if self._folders is not None else self.list_folders()
        for folder in folders:
            if folder.role == role:
                return folder
        raise FolderNotFound(f"{self._where()}: no folder with role {role.value}")

    def _select(self, folder: RemoteFolder, qresync: imap_changes.Cursor | None = None) -> dict[str, list[Any]]:
        args = [self._wire(folder)]
        if qresync is not None and qresync.highestmodseq is not None:
            args.append(f"(QRESYNC ({qresync.uidvalidity} {qresync.highestmodseq}))")
        self._connection()
        self._enable()
        self._selected = None
        _, responses = self._command("SELECT", *args)
        conn = self._connection()
        conn.state = "SELECTED"
        uidvalidity = _last_int(responses, "UIDVALIDITY")
        exists = _last_int(responses, "EXISTS")
        if uidvalidity is None or exists is None:
            raise ProtocolError(f"{self._where()}: SELECT {folder.name} gave no UIDVALIDITY/EXISTS")
        modseq = None if "NOMODSEQ" in responses else _last_int(responses, "HIGHESTMODSEQ")
        self._selected = _Selected(folder.name, uidvalidity, _last_int(responses, "UIDNEXT") or 0, exists, modseq)
        return responses

    def _ensure_selected(self, folder: RemoteFolder) -> _Selected:
        if self._conn is None or self._selected is None or self._selected.name != folder.name:
            self._select(folder)
        assert self._selected is not None
        return self._selected

    def listed_status(self, folder: RemoteFolder) -> dict[str, int] | None:
        """The folder's STATUS from the last LIST, once, if taken in the last few seconds."""
        listed = self._listed_status.pop(folder.name, None)
        if listed is None or time.monotonic() - listed[0] > LISTED_STATUS_MAX_AGE:
            return None
        return listed[1]

    # ------------------------------------------------------------ sync
    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        return imap_changes.fetch_changes(self, folder, cursor)

    def _parse(self, parser: Callable[[Any], Any], data: Any) -> Any:
        try:
            return parser(data)
        except (proto.ParseError, ValueError) as exc:
            raise ProtocolError(f"{self._where()}: unreadable response: {exc}") from exc

    # ------------------------------------------------------------ messages
    @staticmethod
    def _uids(remote_ids: Sequence[str]) -> list[int]:
        return [int(r) for r in remote_ids if str(r).isdigit()]

    def _fetch(self, folder: RemoteFolder, remote_ids: Sequence[str], items: str) -> Iterator[dict[str, Any]]:
        wanted = self._uids(remote_ids)
        if not wanted:
            return
        self._ensure_selected(folder)
        for chunk, uid_set in proto.uid_chunks(wanted, self._batch_size):
            _, responses = self._command("UID", "FETCH", uid_set, items)
            parsed = self._parse(proto.parse_fetch, responses.get("FETCH", []))
            by_uid = {i["UID"]: i for i in parsed if "UID" in i and proto.fetch_body(i) is not None}
            for uid in chunk:
                if uid in by_uid:
                    yield by_uid[uid]

    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        gmail = self._has("X-GM-EXT-1")
        items = "UID FLAGS RFC822.SIZE INTERNALDATE"
        if self._has("CONDSTORE"):
            items += " MODSEQ"
        if gmail:
            items += " X-GM-MSGID X-GM-THRID X-GM-LABELS"
        items = f"({items} BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
        self._connection()
        for item in self._fetch(folder, remote_ids, items):
            yield message_from_fetch(item, gmail)

    def fetch_bodies(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> dict[str, bytes]:
        result: dict[str, bytes] = {}
        for item in self._fetch(folder, remote_ids, "(UID BODY.PEEK[])"):
            body = proto.fetch_body(item)
            assert body is not None
            result[str(item["UID"])] = body
        return result

    # ------------------------------------------------------------ writing
    def send(self, message: OutgoingMessage) -> SendResult:
        if self._smtp_endpoint is None:
            raise ConfigurationError("this account has no smtp_host configured")
        return send_message(
            self._smtp_endpoint,
            self._settings.credentials,
            message,
            self._settings.timeout,
            factory=self._smtp_factory,
            authenticate=self._smtp_auth,
        )

    def find_sent(self, message_id: str) -> str | None:
        """``UID SEARCH HEADER Message-ID`` in the Sent folder; the newest matching UID."""
        self._connection()
        self._select(self._folder_with_role(FolderRole.SENT))  # afresh: a selected view may not show new mail yet
        _, responses = self._command("UID", "SEARCH", "HEADER", "Message-ID", proto.quote(message_id))
        uids = self._parse(proto.parse_search, responses.get("SEARCH", []))
        return str(max(uids)) if uids else None

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        self._connection()
        sent = self._folder_with_role(FolderRole.SENT)
        flag_list = f"({' '.join(sorted(flags))})" if flags else None
        mailbox = self._wire(sent)
        text, _ = self._call(lambda conn: conn.append(mailbox, flag_list, None, raw), "APPEND")  # type: ignore[arg-type]
        code = proto.response_code(text, "APPENDUID")
        return code[1] if code and len(code) >= 2 else None

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        uids = self._uids(remote_ids)
        if not uids:
            return
        self._connection()
        self._ensure_selected(folder)
        for _, uid_set in proto.uid_chunks(uids, self._batch_size):
            if self._has("MOVE"):
                self._command("UID", "MOVE", uid_set, self._wire(target))
                continue
            self._command("UID", "COPY", uid_set, self._wire(target))
            self._command("UID", "STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
            if self._has("UIDPLUS"):
                self._command("UID", "EXPUNGE", uid_set)
            else:  # also removes other \Deleted messages: the best a plain server allows
                self._command("EXPUNGE")


def message_from_fetch(item: dict[str, Any], gmail: bool = False) -> RemoteMessage:
    """Build a :class:`RemoteMessage` from one parsed header FETCH item."""
    headers = proto.fetch_body(item) or b""
    date = item.get("INTERNALDATE")
    return RemoteMessage(
        remote_id=str(item["UID"]),
        headers=headers,
        flags=imap_changes.message_flags(item.get("FLAGS", ())),
        size=item.get("RFC822.SIZE"),
        internal_date=proto.parse_internaldate(date) if date else None,
        thread_hint=item.get("X-GM-THRID") if gmail else None,
        provider_message_id=item.get("X-GM-MSGID") if gmail else None,
        labels=frozenset(item.get("X-GM-LABELS", ())) if gmail else frozenset(),
    )
