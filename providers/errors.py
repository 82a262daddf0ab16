"""The one error hierarchy every provider backend raises.

Backends translate their library's exceptions (imaplib.IMAP4.error, smtplib
errors, socket errors, HTTP errors) into these at the provider boundary, so the
sync engine's retry policy can key on the class alone.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Root of every error a provider raises on purpose."""


class BackendNotFound(ProviderError):
    """Raised by the registry for an unknown backend name or a backend whose
    package is not installed; the message names the known backends."""


class NotSupported(ProviderError):
    """The backend cannot do what was asked (e.g. serve as a processing mailbox: list a
    folder's ids, create folders, find a message by Message-ID); the message names the
    backend. Retrying will not help."""


class AuthError(ProviderError):
    """The server rejected the credentials (wrong password, revoked or expired
    grant). The account needs the user to reconnect; retrying will not help."""


class ConfigurationError(ProviderError, ValueError):
    """The account's settings cannot be used as given: an unknown security mode, plaintext
    to a non-loopback host without ``allow_plaintext``, a bad proxy URL, no ``smtp_host``
    for sending, a missing OAuth client id or secret, an endpoint that is not https. Raised
    when the provider is opened (or, for sending, when it is asked to send); retrying will
    not help, so the engine stops the account as it does for :class:`AuthError`, and the
    message says which setting to fix."""


class TransientError(ProviderError):
    """A temporary failure: connection refused or dropped, timeout, throttling,
    server busy. Retry later; ``retry_after`` carries the server's hint in
    seconds when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CursorInvalidError(ProviderError):
    """The stored sync cursor for a folder is no longer valid (IMAP UIDVALIDITY
    changed, Gmail history too old, Graph 410, EWS invalid sync state). The
    engine resyncs that folder from scratch without duplicating anything."""


class FolderNotFound(ProviderError):
    """The folder named in a request no longer exists on the server."""


class SendError(ProviderError):
    """The server refused a message for good (every recipient rejected, message
    too large, policy). ``rejected`` maps refused recipients to the reason."""

    def __init__(self, message: str, rejected: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.rejected = dict(rejected or {})


class SendUncertain(ProviderError):
    """A send failed after the server may already have accepted the message: the
    connection dropped or timed out once the whole message had been handed over (SMTP
    after the DATA body; a REST send whose request was written but whose answer was a
    5xx, a read timeout or a closed connection). The message may have gone out, so it
    must not be sent again automatically: look for its Message-ID in Sent first
    (:meth:`providers.base.MailProvider.find_sent`). Failures before the server could
    have taken the message are :class:`TransientError` and are safe to retry."""


class ProtocolError(ProviderError):
    """The server answered something the backend could not understand, for one
    request or one message. The engine narrows a failed batch down to the message(s)
    concerned, quarantines them and carries on with the rest of the folder
    (sync.isolation). ``remote_id`` names the message when the backend knows it
    (one failed part of a Gmail or Graph batch)."""

    def __init__(self, message: str, remote_id: str | None = None) -> None:
        super().__init__(message)
        self.remote_id = remote_id
