"""Submitting mail over SMTP (smtplib) for the IMAP backend.

Errors are translated here: a server that refuses every recipient (5xx) or the
message itself raises :class:`SendError`; 4xx replies, and timeouts or dropped
connections before the message body was handed over, raise :class:`TransientError`
(nothing was accepted: safe to try again); a timeout or dropped connection after the
whole body, its final ``.`` included, was written raises :class:`SendUncertain` (the
server may have queued it and only its answer was lost); refused credentials raise
:class:`AuthError`. Recipients refused while others were accepted come back in
:attr:`SendResult.refused`.

The transaction is smtplib's ``sendmail`` taken apart (MAIL, RCPT, DATA, body,
reply, with the documented low-level methods) so that the moment the body has been
written is known.
"""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Callable

from providers.base import Credentials, OutgoingMessage, SendResult
from providers.errors import AuthError, ProviderError, SendError, SendUncertain, TransientError
from providers.transport import Endpoint, open_socket

SmtpFactory = Callable[[Endpoint, float], smtplib.SMTP]


class _SMTP(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return open_socket(host, port, timeout)


class _SMTP_SSL(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = open_socket(host, port, timeout)
        assert self.context is not None
        return self.context.wrap_socket(sock, server_hostname=host)


def connect_smtp(endpoint: Endpoint, timeout: float) -> smtplib.SMTP:
    """The default factory: connected, EHLO done, upgraded to TLS when configured."""
    if endpoint.security == "ssl":
        smtp: smtplib.SMTP = _SMTP_SSL(endpoint.host, endpoint.port, timeout=timeout, context=endpoint.ssl_context())
    else:
        smtp = _SMTP(endpoint.host, endpoint.port, timeout=timeout)
    smtp.ehlo()
    if endpoint.security == "starttls":
        if not smtp.has_extn("starttls"):
            smtp.close()
            raise TransientError(f"{endpoint.host}:{endpoint.port} does not offer STARTTLS")
        smtp.starttls(context=endpoint.ssl_context())
        smtp.ehlo()
    return smtp


def oauth_payload(credentials: Credentials, host: str, port: int) -> str:
    """The SASL initial response for XOAUTH2 or OAUTHBEARER (RFC 7628)."""
    token = credentials.access_token
    if credentials.oauth_mechanism.upper() == "OAUTHBEARER":
        return f"n,a={credentials.username},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return f"user={credentials.username}\x01auth=Bearer {token}\x01\x01"


def _login(smtp: smtplib.SMTP, credentials: Credentials, endpoint: Endpoint) -> None:
    if credentials.access_token is not None:
        mechanism = credentials.oauth_mechanism.upper()
        payload = oauth_payload(credentials, endpoint.host, endpoint.port)

        def respond(challenge: bytes | None = None) -> str:
            # first call: initial response; a later 334 carries the JSON error,
            # which RFC 7628 says to answer with an empty line
            return payload if challenge is None else ""

        smtp.auth(mechanism, respond)
    else:
        smtp.login(credentials.username, credentials.password or "")


def _reply_text(code: int, msg: bytes | str) -> str:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
    return f"{code} {text}"


class _BodyWritten(Exception):
    """The DATA body was written; ``cause`` is what went wrong while waiting for the reply."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _abandon(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal: 421 means the server is closing the connection; anything else
    resets the transaction (quietly, as ``sendmail`` does)."""
    if code == 421:
        smtp.close()
        return
    try:
        smtp.rset()
    except smtplib.SMTPServerDisconnected:
        pass


def _transaction(smtp: smtplib.SMTP, sender: str, recipients: list[str], raw: bytes) -> dict[str, tuple[int, bytes]]:
    """MAIL, RCPT, DATA and the body, as ``smtplib.SMTP.sendmail`` does; returns the
    recipients refused while others were accepted. Raises the same exceptions as
    ``sendmail`` while nothing was accepted, and :class:`_BodyWritten` for a failure
    after the whole body (with its final dot) was written."""
    smtp.ehlo_or_helo_if_needed()
    options = [f"size={len(raw)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
    code, resp = smtp.mail(sender, options)
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in recipients:
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, resp)
        if code == 421:
            smtp.close()
            raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _abandon(smtp, 0)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, resp = smtp.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, resp)
    body = _LEADING_DOT.sub(b"..", raw)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    smtp.send(body + b".\r\n")  # raises before the final dot is out: nothing was accepted
    try:
        code, resp = smtp.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise _BodyWritten(exc) from exc
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPDataError(code, resp)
    return refused


def send_message(
    endpoint: Endpoint,
    credentials: Credentials,
    message: OutgoingMessage,
    timeout: float,
    factory: SmtpFactory = connect_smtp,
    authenticate: bool = True,
) -> SendResult:
    """Submit ``message`` and report partial refusals; see the module docstring for errors."""
    where = f"SMTP {endpoint.host}:{endpoint.port}"
    try:
        smtp = factory(endpoint, timeout)
    except ProviderError:
        raise
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientError(f"{where}: cannot connect: {exc}") from exc
    try:
        if authenticate:
            _login(smtp, credentials, endpoint)
        refused = _transaction(smtp, message.sender, list(message.recipients), message.raw)
    except _BodyWritten as exc:
        cause = f"{type(exc.cause).__name__}: {exc.cause}".rstrip(": ")
        raise SendUncertain(f"{where}: no answer after the message was handed over ({cause})") from exc.cause
    except smtplib.SMTPAuthenticationError as exc:
        raise AuthError(f"{where} refused the credentials: {_reply_text(exc.smtp_code, exc.smtp_error)}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise AuthError(f"{where}: authentication mechanism not offered: {exc}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        rejected = {rcpt: _reply_text(code, msg) for rcpt, (code, msg) in exc.recipients.items()}
        if any(400 <= code < 500 for code, _ in exc.recipients.values()):
            raise TransientError(f"{where} deferred every recipient: {rejected}") from exc
        raise SendError(f"{where} refused every recipient", rejected) from exc
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        text = _reply_text(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            raise TransientError(f"{where} deferred the message: {text}") from exc
        raise SendError(f"{where} refused the message: {text}") from exc
    except smtplib.SMTPResponseException as exc:
        text = _reply_text(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            raise TransientError(f"{where}: {text}") from exc
        raise SendError(f"{where}: {text}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientError(f"{where}: connection problem: {exc}") from exc
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return SendResult(
        message_id=message.message_id,
        refused={rcpt: _reply_text(code, msg) for rcpt, (code, msg) in refused.items()},
    )


def xoauth2_bytes(credentials: Credentials, host: str, port: int) -> bytes:
    """The same SASL payload as bytes, for imaplib's authenticate()."""
    return oauth_payload(credentials, host, port).encode("utf-8")
