"""A local SMTP submission server with OAuth (AUTH XOAUTH2), on aiosmtpd: the companion of the
Gmail and Graph stand-ins that stands in for ``smtp.gmail.com`` and ``smtp.office365.com``.

The owning stand-in supplies two callbacks, so the server knows nothing about mailboxes:

* ``authorize(user, token)`` checks the bearer token of ``AUTH XOAUTH2`` (the SASL initial
  response ``user=<address>\\x01auth=Bearer <token>\\x01\\x01``, base64) and returns the address
  the client may send as, or a :class:`Refusal`: the RFC 7628 error (a ``334`` with a JSON
  status, which the client answers with an empty line) and the final reply, as each service
  words it (Gmail: ``535 5.7.8 Username and Password not accepted``, after a 334 naming the
  scope it wants; Exchange Online: ``535 5.7.3 Authentication unsuccessful`` at once).
* ``deliver(sender, recipients, raw)`` is called on ``DATA``, before the ``250``: the owner files
  the message in the sender's Sent folder (Gmail and Microsoft 365 do that for everything
  submitted over SMTP, synchronously here) and delivers it to exactly the envelope
  recipients, never to addresses only named in the headers.

Only ``XOAUTH2`` is offered. With an ``ssl_context`` the server speaks STARTTLS and refuses
``AUTH`` before it (``538``), as the services do; without one it is plain text, which the
providers accept for this machine only. ``MAIL FROM`` needs a successful ``AUTH`` (``530``)
and must be the signed-in address (``553``)::

    >>> server = SmtpSubmissionServer(gmail.smtp_authorize, gmail.smtp_deliver)   # doctest: +SKIP
    >>> with server:                                                               # doctest: +SKIP
    ...     smtp = smtplib.SMTP(server.host, server.port)
    ...     smtp.ehlo(); smtp.auth("XOAUTH2", lambda challenge=None: "user=...\\x01auth=Bearer ya29...\\x01\\x01")
    >>> server.submissions[-1]                                                     # doctest: +SKIP
    Submission(sender='rita@example.test', recipients=('ann@example.test',), raw=b'...')
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


@dataclass(frozen=True)
class Refusal:
    """Why a token was refused: ``challenge`` (None: no 334 step) and the final ``reply``."""

    reply: str
    challenge: dict[str, str] | None = None


@dataclass(frozen=True)
class Submission:
    """One accepted message: who sent it, to whom (the envelope) and what."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes


Authorize = Callable[[str, str], "str | Refusal"]  # (user, bearer token) -> address it may send as
Deliver = Callable[[str, list[str], bytes], None]  # (sender, envelope recipients, raw message)


def parse_xoauth2(blob: bytes) -> tuple[str, str]:
    """``(user, token)`` of an XOAUTH2 initial response (empty strings where missing).

    >>> parse_xoauth2(b"user=rita@example.test\\x01auth=Bearer ya29.abc\\x01\\x01")
    ('rita@example.test', 'ya29.abc')
    """
    fields = dict(p.split("=", 1) for p in blob.decode("utf-8", "replace").split("\x01") if "=" in p)
    auth = fields.get("auth", "")
    token = auth[len("Bearer ") :] if auth[: len("Bearer ")].lower() == "bearer " else ""
    return fields.get("user", ""), token.strip()


class _Handler:
    """aiosmtpd's hooks: AUTH XOAUTH2, MAIL, RCPT and DATA."""

    def __init__(self, owner: SmtpSubmissionServer) -> None:
        self.owner = owner

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode the response")
        else:
            answer = await server.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)  # aborted; aiosmtpd answered
            blob = answer
        user, token = parse_xoauth2(blob)
        verdict = self.owner.authorize(user, token)
        if isinstance(verdict, str):
            return AuthResult(success=True, auth_data=verdict)
        self.owner.record_refusal(user, verdict.reply)
        if verdict.challenge is not None:  # RFC 7628: the error, then the client's empty line
            await server.challenge_auth(json.dumps(verdict.challenge, separators=(",", ":")))
        return AuthResult(success=False, handled=False, message=verdict.reply)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication Required"
        if address.lower() != str(session.auth_data).lower():
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by the signed-in user"
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if "@" not in address:
            return f"553 5.1.3 <{address}>: The recipient address is not a valid RFC 5321 address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        sender = str(session.auth_data)
        self.owner.accept(Submission(sender, tuple(envelope.rcpt_tos), raw))
        return f"250 2.0.0 OK {next(self.owner.ids)} - stand-in"


class _Controller(Controller):
    """aiosmtpd's controller on a socket bound before it starts (port 0: no race for a port)."""

    def __init__(self, handler: _Handler, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SmtpSubmissionServer:
    """A running submission server on 127.0.0.1: ``host``, ``port``, what it accepted
    (``submissions``) and refused (``refusals``: ``(user, reply)``); ``close()``, context manager."""

    def __init__(
        self,
        authorize: Authorize,
        deliver: Deliver,
        *,
        ssl_context: ssl.SSLContext | None = None,
        hostname: str = "smtp.standin.test",
    ) -> None:
        self.authorize, self._deliver = authorize, deliver
        self.submissions: list[Submission] = []
        self.refusals: list[tuple[str, str]] = []
        self.ids = itertools.count(1)
        self._lock = threading.Lock()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", int(sock.getsockname()[1])
        self._controller = _Controller(
            _Handler(self),
            sock,
            server_hostname=hostname,
            tls_context=ssl_context,
            require_starttls=ssl_context is not None,
            auth_require_tls=ssl_context is not None,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            enable_SMTPUTF8=True,
        )
        self._controller.start()

    def accept(self, submission: Submission) -> None:
        """DATA arrived: the owner files and delivers it, then it is on record."""
        self._deliver(submission.sender, list(submission.recipients), submission.raw)
        with self._lock:
            self.submissions.append(submission)

    def record_refusal(self, user: str, reply: str) -> None:
        with self._lock:
            self.refusals.append((user, reply))

    def close(self) -> None:
        """Stop serving. Safe to call twice."""
        if self._controller.loop.is_running():
            self._controller.stop()

    def __enter__(self) -> SmtpSubmissionServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_message_id(raw: bytes, domain: str) -> bytes:
    """``raw`` with a Message-ID added when it has none (the services add one to what they file).

    >>> with_message_id(b"Message-ID: <a@b>\\r\\n\\r\\nhi", "x").startswith(b"Message-ID: <a@b>")
    True
    """
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if any(line.lower().startswith(b"message-id:") for line in head.splitlines()):
        return raw
    return f"Message-ID: {make_msgid(domain=domain)}\r\n".encode() + raw
