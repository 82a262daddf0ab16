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
listing paths) lives in :mod:`providers.imap_changes`; the connection, login and the
commands sent on it in :mod:`providers.imap_session`, which both use.
"""

from __future__ import annotations

import dataclasses
import imaplib
from collections.abc import Iterator, Sequence
from typing import Any

from providers import imap_changes
from providers import imap_protocol as proto
from providers.base import (
    Capability,
    ChangeSet,
    FolderListing,
    FolderRole,
    OutgoingMessage,
    ProviderSettings,
    RemoteFolder,
    RemoteMessage,
    SendResult,
)
from providers.common.backend import Backend
from providers.errors import ConfigurationError, FolderNotFound, ProtocolError
from providers.imap_connection import ImapFactory, connect_imap
from providers.imap_session import ImapSession
from providers.smtp import SmtpFactory, connect_smtp, send_message
from providers.transport import Endpoint, check_endpoint

HEADER_FIELDS = "MESSAGE-ID IN-REPLY-TO REFERENCES FROM TO CC BCC REPLY-TO SENDER SUBJECT DATE"
# replies to Postroom's own messages: the reply token, and the auto-reply markers (RFC 3834 and kin)
HEADER_FIELDS += " DELIVERED-TO AUTO-SUBMITTED X-AUTOREPLY X-AUTORESPOND PRECEDENCE"
DEFAULT_BATCH = 500


class ImapProvider(Backend):
    """A :class:`providers.base.MailProvider` for any IMAP server plus SMTP submission."""

    supports_inbound = True

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
        imap_endpoint = Endpoint(
            host=str(opts["imap_host"]),
            port=int(opts.get("imap_port") or (993 if security == "ssl" else 143)),
            security=security,
            ca_file=opts.get("ca_file"),
            proxy=opts.get("proxy"),
        )
        allow_plaintext = bool(opts.get("allow_plaintext", False))
        check_endpoint(imap_endpoint, allow_plaintext, "IMAP")
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
        super().__init__(settings)
        self._session = ImapSession(
            imap_endpoint, settings.credentials, settings.timeout, imap_factory, frozenset(disabled)
        )
        self._smtp_factory = smtp_factory
        self._folders: list[RemoteFolder] | None = None

    @property
    def command_count(self) -> int:
        """IMAP commands sent, for tests and metrics."""
        return self._session.command_count

    @property
    def capabilities(self) -> frozenset[Capability]:
        has = self._session.has
        caps = {Capability.STORE_SENT_COPY}
        if self._smtp_endpoint is not None:  # SMTP: the envelope decides who receives a message
            caps.update({Capability.SEND, Capability.SMTP_ENVELOPE})
        if has("CONDSTORE"):
            caps.add(Capability.CONDSTORE)
        if has("QRESYNC"):
            caps.add(Capability.QRESYNC)
        if has("MOVE"):
            caps.add(Capability.MOVE)
        if has("IDLE"):
            caps.add(Capability.PUSH)
        if has("X-GM-EXT-1"):
            caps.update({Capability.SERVER_THREAD_IDS, Capability.LABELS})
        return frozenset(caps)

    def close(self) -> None:
        """Log out and release the connection. Safe to call twice."""
        self._session.close()

    # ------------------------------------------------------------ folders
    def list_folders(self) -> list[RemoteFolder]:
        """Every selectable folder with its role. Where the server has LIST-STATUS
        (RFC 5819) the same command also returns each folder's STATUS, which the
        following :meth:`fetch_changes` of that folder uses instead of asking again:
        a no-change pass then costs one command for the whole account."""
        session = self._session
        session.connection()
        returns = []
        if session.has("SPECIAL-USE") and session.has("LIST-EXTENDED"):
            returns.append("SPECIAL-USE")
        if session.has("LIST-STATUS"):
            returns.append(f"STATUS ({session.status_items()})")
        if returns:
            _, responses = session.command("LIST", '""', '"*"', "RETURN", f"({' '.join(returns)})")
        else:
            _, responses = session.command("LIST", '""', '"*"')
        try:
            entries = [e for e in proto.parse_list(responses.get("LIST", [])) if e.selectable]
            statuses = proto.parse_status_all(responses.get("STATUS", []))
        except proto.ParseError as exc:
            raise ProtocolError(f"{session.where}: unreadable LIST response: {exc}") from exc
        session.listed(
            {e.name: e.raw_name for e in entries},
            {e.name: statuses[e.raw_name] for e in entries if e.raw_name in statuses},
        )
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
        self._folders = [RemoteFolder(e.name, roles[e.name], e.delimiter or "/", True) for e in entries]
        return list(self._folders)

    def _folder_with_role(self, role: FolderRole) -> RemoteFolder:
        folders = self._folders if self._folders is not None else self.list_folders()
        for folder in folders:
            if folder.role == role:
                return folder
        raise FolderNotFound(f"{self._session.where}: no folder with role {role.value}")

    # ------------------------------------------------------------ sync
    def fetch_changes(self, folder: RemoteFolder, cursor: str | None) -> ChangeSet:
        return imap_changes.fetch_changes(self._session, folder, cursor)

    # ------------------------------------------------------------ messages
    @staticmethod
    def _uids(remote_ids: Sequence[str]) -> list[int]:
        return [int(r) for r in remote_ids if str(r).isdigit()]

    def _fetch(self, folder: RemoteFolder, remote_ids: Sequence[str], items: str) -> Iterator[dict[str, Any]]:
        wanted = self._uids(remote_ids)
        if not wanted:
            return
        session = self._session
        session.ensure_selected(folder)
        for chunk, uid_set in proto.uid_chunks(wanted, self._batch_size):
            _, responses = session.command("UID", "FETCH", uid_set, items)
            parsed = session.parse(proto.parse_fetch, responses.get("FETCH", []))
            by_uid = {i["UID"]: i for i in parsed if "UID" in i and proto.fetch_body(i) is not None}
            for uid in chunk:
                if uid in by_uid:
                    yield by_uid[uid]

    def fetch_headers(self, folder: RemoteFolder, remote_ids: Sequence[str]) -> Iterator[RemoteMessage]:
        self._session.connection()
        gmail = self._session.has("X-GM-EXT-1")
        items = "UID FLAGS RFC822.SIZE INTERNALDATE"
        if self._session.has("CONDSTORE"):
            items += " MODSEQ"
        if gmail:
            items += " X-GM-MSGID X-GM-THRID X-GM-LABELS"
        items = f"({items} BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])"
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

    def send_without_copy(self, message: OutgoingMessage) -> SendResult:
        """SMTP submission, which stores nothing in Sent (:meth:`send` does not either; the
        outbox appends the copy). But a server that files submitted mail itself (Gmail, many
        hosts) still does, maybe a moment later: ``sent_copy_stored`` is therefore true — a copy
        may be there — and the caller finds it with :meth:`find_sent` and removes it with
        :meth:`delete`."""
        return dataclasses.replace(self.send(message), sent_copy_stored=True)

    def find_sent(self, message_id: str) -> str | None:
        """``UID SEARCH HEADER Message-ID`` in the Sent folder; the newest matching UID."""
        self._session.connection()
        return self.find_message(self._folder_with_role(FolderRole.SENT), message_id)

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """``UID SEARCH HEADER Message-ID`` in ``folder`` (selected afresh); the newest matching UID."""
        session = self._session
        session.connection()
        session.select(folder)  # afresh: a selected view may not show new mail yet
        _, responses = session.command("UID", "SEARCH", "HEADER", "Message-ID", proto.quote(message_id))
        uids = session.parse(proto.parse_search, responses.get("SEARCH", []))
        return str(max(uids)) if uids else None

    # ------------------------------------------------------------ processing mailbox
    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """``SELECT`` (afresh, for the UIDVALIDITY and a current view) then ``UID SEARCH ALL``."""
        session = self._session
        session.connection()
        session.select(folder)
        assert session.selected is not None
        validity = session.selected.uidvalidity
        if session.selected.exists == 0:
            return FolderListing(validity, ())
        _, responses = session.command("UID", "SEARCH", "ALL")
        uids = session.parse(proto.parse_search, responses.get("SEARCH", []))
        return FolderListing(validity, tuple(str(u) for u in sorted(set(uids))))

    def ensure_folder(self, name: str) -> RemoteFolder:
        """``CREATE`` (``[ALREADYEXISTS]`` is success), then ``SUBSCRIBE`` so mail clients list it."""
        session = self._session
        session.connection()
        try:
            session.command("CREATE", session.wire(name))
        except ProtocolError as exc:
            text = str(exc)
            if "[ALREADYEXISTS]" not in text and "already exists" not in text.lower():
                raise
        try:
            session.command("SUBSCRIBE", session.wire(name))
        except ProtocolError:
            pass  # a folder a client does not list is still a folder
        self._folders = None  # listed again when a role is next needed
        return RemoteFolder(name)

    def store_sent_copy(self, raw: bytes, flags: frozenset[str] = frozenset({"\\Seen"})) -> str | None:
        self._session.connection()
        sent = self._folder_with_role(FolderRole.SENT)
        flag_list = f"({' '.join(sorted(flags))})" if flags else None
        mailbox = self._session.wire(sent)

        def append(conn: imaplib.IMAP4) -> tuple[str, list[Any]]:
            return conn.append(mailbox, flag_list, None, raw)  # type: ignore[arg-type]

        text, _ = self._session.call(append, "APPEND")
        code = proto.response_code(text, "APPENDUID")
        return code[1] if code and len(code) >= 2 else None

    def move(self, folder: RemoteFolder, remote_ids: Sequence[str], target: RemoteFolder) -> None:
        """UID MOVE, or COPY + STORE ``\\Deleted`` + EXPUNGE where the server has no MOVE."""
        uids = self._uids(remote_ids)
        if not uids:
            return
        session = self._session
        session.connection()
        session.ensure_selected(folder)
        for _, uid_set in proto.uid_chunks(uids, self._batch_size):
            if session.has("MOVE"):
                session.command("UID", "MOVE", uid_set, session.wire(target))
                continue
            session.command("UID", "COPY", uid_set, session.wire(target))
            self._expunge(uid_set)

    def delete(self, folder: RemoteFolder, remote_ids: Sequence[str], *, for_good: bool = False) -> None:
        """Into the Trash folder (a move); for good (STORE ``\\Deleted`` + EXPUNGE) when asked, when
        the folder is the Trash or when the account has none. Vanished UIDs are skipped."""
        trash = None if for_good else self._trash()
        if trash is not None and trash.name != folder.name:
            self.move(folder, remote_ids, trash)
            return
        uids = self._uids(remote_ids)
        if not uids:
            return
        self._session.connection()
        self._session.ensure_selected(folder)
        for _, uid_set in proto.uid_chunks(uids, self._batch_size):
            self._expunge(uid_set)

    def _trash(self) -> RemoteFolder | None:
        try:
            return self._folder_with_role(FolderRole.TRASH)
        except FolderNotFound:
            return None

    def _expunge(self, uid_set: str) -> None:
        """Remove these UIDs from the selected folder."""
        session = self._session
        session.command("UID", "STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if session.has("UIDPLUS"):
            session.command("UID", "EXPUNGE", uid_set)
        else:  # also removes other \Deleted messages: the best a plain server allows
            session.command("EXPUNGE")


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
