"""One IMAP connection and the commands sent on it, for :mod:`providers.imap` and
:mod:`providers.imap_changes`.

An :class:`ImapSession` logs in on first use (XOAUTH2/OAUTHBEARER, AUTHENTICATE PLAIN with
SASL-IR, or LOGIN), learns the server's capabilities from the greeting or the login reply,
sends one command at a time and translates what goes wrong into :mod:`providers.errors`:
a dropped connection is a :class:`TransientError` (the next command reconnects), a NO or
BAD is a :class:`ProtocolError` (``[NONEXISTENT]``: :class:`FolderNotFound`;
``[UNAVAILABLE]``, ``[INUSE]``, ``[LIMIT]``, ``[SERVERBUG]``: :class:`TransientError`).
It keeps what the connection's state implies: the selected folder (with its message count
kept current from untagged EXISTS/EXPUNGE/VANISHED), ENABLE sent or not, the folders'
wire names and their STATUS from the last LIST (LIST-STATUS, RFC 5819).
"""

from __future__ import annotations

import base64
import imaplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from providers import imap_protocol as proto
from providers.base import Credentials, RemoteFolder
from providers.errors import AuthError, FolderNotFound, ProtocolError, ProviderError, TransientError
from providers.imap_connection import ImapFactory, close_quietly
from providers.smtp import xoauth2_bytes
from providers.transport import Endpoint

LISTED_STATUS_MAX_AGE = 10.0  # seconds a LIST-STATUS answer may stand in for a STATUS command

Responses = dict[str, list[Any]]


@dataclass
class Selected:
    """The selected folder as the server last described it."""

    name: str
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None


def _last_int(responses: Responses, key: str) -> int | None:
    values = [v for v in responses.get(key, []) if isinstance(v, bytes) and v.strip()]
    if not values:
        return None
    try:
        return int(values[-1].split()[0])
    except ValueError:
        return None


class ImapSession:
    """One account's IMAP connection, opened on first use (one thread at a time)."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: Credentials,
        timeout: float,
        factory: ImapFactory,
        disabled: frozenset[str] = frozenset(),
    ) -> None:
        self.endpoint, self._credentials, self._timeout, self._factory = endpoint, credentials, timeout, factory
        self._disabled = disabled  # extensions to behave as if not advertised
        self._conn: imaplib.IMAP4 | None = None
        self._server_caps: frozenset[str] = frozenset()
        self.selected: Selected | None = None
        self._enabled = False
        self._wire_names: dict[str, str] = {}
        # STATUS of each folder as of the last LIST (LIST-STATUS, RFC 5819), by folder name
        self._listed_status: dict[str, tuple[float, dict[str, int]]] = {}
        self.command_count = 0  # IMAP commands sent, for tests and metrics

    def has(self, name: str) -> bool:
        """Whether the server advertises extension ``name`` (and it is not disabled)."""
        return name in self._server_caps and name not in self._disabled

    @property
    def where(self) -> str:
        return f"IMAP {self.endpoint.host}:{self.endpoint.port}"

    def status_items(self) -> str:
        """The STATUS items a no-change check compares with the cursor."""
        return "MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ" if self.has("CONDSTORE") else "MESSAGES UIDNEXT UIDVALIDITY"

    # ------------------------------------------------------------ connection
    def connection(self) -> imaplib.IMAP4:
        """The logged-in connection, made now if there is none."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> imaplib.IMAP4:
        endpoint, creds = self.endpoint, self._credentials
        try:
            conn = self._factory(endpoint, self._timeout)
        except ProviderError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise TransientError(f"{self.where}: certificate not trusted ({exc.verify_message})") from exc
        except (OSError, imaplib.IMAP4.error, EOFError) as exc:
            raise TransientError(f"{self.where}: cannot connect: {exc}") from exc
        self.command_count += 1
        try:
            if creds.access_token is not None:
                mechanism = creds.oauth_mechanism.upper()
                _, said = _authenticate(conn, mechanism, xoauth2_bytes(creds, endpoint.host, endpoint.port))
            elif "AUTH=PLAIN" in conn.capabilities and "LOGINDISABLED" not in conn.capabilities:
                said = self._authenticate_plain(conn, creds.username, creds.password or "")
            else:
                _, said = conn.login(creds.username, creds.password or "")
            self.command_count += 1
        except imaplib.IMAP4.abort as exc:
            raise TransientError(f"{self.where}: connection lost while logging in: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            text = str(exc)
            close_quietly(conn)
            if "[UNAVAILABLE]" in text or "[INUSE]" in text:
                raise TransientError(f"{self.where}: login temporarily refused: {text}") from exc
            raise AuthError(f"{self.where} refused the credentials for {creds.username}: {text}") from exc
        except OSError as exc:
            raise TransientError(f"{self.where}: connection lost while logging in: {exc}") from exc
        self._conn = conn
        self.selected = None
        self._enabled = False
        self._listed_status = {}
        # imaplib keeps the pre-login list; servers often advertise more afterwards,
        # usually in the login reply itself ("a OK [CAPABILITY ...] Logged in")
        caps = proto.response_code(b" ".join(d for d in said if isinstance(d, bytes)), "CAPABILITY")
        if caps is None:
            _, responses = self.command("CAPABILITY")
            self._server_caps = proto.parse_capabilities(responses.get("CAPABILITY", []))
        else:
            self._server_caps = frozenset(c.upper() for c in caps)
        conn.capabilities = tuple(sorted(self._server_caps))
        return conn

    def _authenticate_plain(self, conn: imaplib.IMAP4, username: str, password: str) -> list[Any]:
        """AUTHENTICATE PLAIN, in one round trip where the server takes an initial response (RFC 4959)."""
        payload = f"\0{username}\0{password}".encode()
        if "SASL-IR" not in conn.capabilities or "SASL-IR" in self._disabled:
            return _authenticate(conn, "PLAIN", payload)[1]
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
        if self.has("ENABLE") and (self.has("QRESYNC") or self.has("CONDSTORE")):
            self.command("ENABLE", "QRESYNC" if self.has("QRESYNC") else "CONDSTORE")

    def _drop(self) -> None:
        conn, self._conn, self.selected = self._conn, None, None
        if conn is not None:
            close_quietly(conn)

    def close(self) -> None:
        """Log out and release the connection. Safe to call twice."""
        conn, self._conn, self.selected = self._conn, None, None
        if conn is not None:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error, EOFError):
                close_quietly(conn)

    # ------------------------------------------------------------ commands
    def command(self, name: str, *args: str) -> tuple[str, Responses]:
        """Send one command; returns the tagged text and the untagged responses."""
        return self.call(lambda conn: conn._simple_command(name, *args), name)  # type: ignore[attr-defined]

    def call(self, send: Callable[[imaplib.IMAP4], tuple[str, list[Any]]], name: str) -> tuple[str, Responses]:
        """Run ``send(connection)`` (one imaplib call) as command ``name``, with the errors translated."""
        conn = self.connection()
        conn.untagged_responses = {}
        self.command_count += 1
        try:
            typ, data = send(conn)
        except imaplib.IMAP4.abort as exc:
            self._drop()
            raise TransientError(f"{self.where}: connection lost during {name}: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            raise ProtocolError(f"{self.where}: {name} rejected: {exc}") from exc
        except (OSError, EOFError) as exc:
            self._drop()
            raise TransientError(f"{self.where}: {name} failed: {exc!r}") from exc
        responses, conn.untagged_responses = conn.untagged_responses, {}
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        if typ != "OK":
            if "[NONEXISTENT]" in text or (name in ("SELECT", "STATUS") and "exist" in text.lower()):
                raise FolderNotFound(f"{self.where}: {name}: {text}")
            if any(code in text for code in ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]")):
                raise TransientError(f"{self.where}: {name}: {text}")
            raise ProtocolError(f"{self.where}: {name} failed: {text}")
        self._track(responses)
        return text, responses

    def _track(self, responses: Responses) -> None:
        """Keep the selected folder's message count current from unsolicited responses."""
        if self.selected is None:
            return
        exists = _last_int(responses, "EXISTS")
        if exists is not None:
            self.selected.exists = exists
        else:
            gone = len(responses.get("EXPUNGE", []))
            gone += len(proto.parse_vanished([v for v in responses.get("VANISHED", []) if b"EARLIER" not in v]))
            self.selected.exists -= gone

    def parse(self, parser: Callable[[Any], Any], data: Any) -> Any:
        """``parser(data)``; an unreadable response is a :class:`ProtocolError`."""
        try:
            return parser(data)
        except (proto.ParseError, ValueError) as exc:
            raise ProtocolError(f"{self.where}: unreadable response: {exc}") from exc

    # ------------------------------------------------------------ folders
    def wire(self, folder: RemoteFolder | str) -> str:
        """The folder's name as commands carry it (quoted, modified UTF-7 unless LIST said otherwise)."""
        name = folder.name if isinstance(folder, RemoteFolder) else folder
        return proto.quote(self._wire_names.get(name) or proto.encode_mailbox_name(name))

    def listed(self, wire_names: Mapping[str, str], statuses: Mapping[str, dict[str, int]]) -> None:
        """Remember a LIST: each folder's name on the wire, and the STATUS it returned (by folder name)."""
        listed_at = time.monotonic()
        self._wire_names = dict(wire_names)
        self._listed_status = {name: (listed_at, status) for name, status in statuses.items()}

    def listed_status(self, folder: RemoteFolder) -> dict[str, int] | None:
        """The folder's STATUS from the last LIST, once, if taken in the last few seconds."""
        listed = self._listed_status.pop(folder.name, None)
        if listed is None or time.monotonic() - listed[0] > LISTED_STATUS_MAX_AGE:
            return None
        return listed[1]

    def select(self, folder: RemoteFolder, qresync: tuple[int, int] | None = None) -> Responses:
        """SELECT ``folder`` (with ``(QRESYNC (uidvalidity modseq))`` when given); the untagged responses."""
        args = [self.wire(folder)]
        if qresync is not None:
            args.append(f"(QRESYNC ({qresync[0]} {qresync[1]}))")
        self.connection()
        self._enable()
        self.selected = None
        _, responses = self.command("SELECT", *args)
        conn = self.connection()
        conn.state = "SELECTED"
        uidvalidity = _last_int(responses, "UIDVALIDITY")
        exists = _last_int(responses, "EXISTS")
        if uidvalidity is None or exists is None:
            raise ProtocolError(f"{self.where}: SELECT {folder.name} gave no UIDVALIDITY/EXISTS")
        modseq = None if "NOMODSEQ" in responses else _last_int(responses, "HIGHESTMODSEQ")
        self.selected = Selected(folder.name, uidvalidity, _last_int(responses, "UIDNEXT") or 0, exists, modseq)
        return responses

    def ensure_selected(self, folder: RemoteFolder) -> Selected:
        """``folder`` selected, by a SELECT only if another one (or none) is."""
        if self._conn is None or self.selected is None or self.selected.name != folder.name:
            self.select(folder)
        assert self.selected is not None
        return self.selected


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
