"""Opening IMAP connections for :mod:`providers.imap`: plain, STARTTLS or implicit TLS,
through an optional HTTP CONNECT proxy, with the capabilities read from the greeting."""

from __future__ import annotations

import imaplib
from collections.abc import Callable
from typing import Any

from providers import imap_protocol as proto
from providers.transport import Endpoint, open_socket

ImapFactory = Callable[[Endpoint, float], imaplib.IMAP4]


class _GreetingCapabilities(imaplib.IMAP4):
    """imaplib asks CAPABILITY right after the greeting; most servers (Dovecot, Cyrus,
    Exchange) already list them in it (``* OK [CAPABILITY ...]``), which saves a round
    trip. After STARTTLS the capabilities are asked for again, as RFC 3501 requires."""

    _greeted = False

    def _get_capabilities(self) -> None:
        if not self._greeted:
            self._greeted = True
            caps = proto.response_code(self.welcome, "CAPABILITY")
            if caps:
                self.capabilities = tuple(c.upper() for c in caps)
                return
        super()._get_capabilities()  # type: ignore[misc]


class _IMAP4(_GreetingCapabilities):
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self._endpoint = endpoint
        super().__init__(endpoint.host, endpoint.port, timeout)

    def _create_socket(self, timeout: float | None) -> Any:
        return open_socket(self.host, self.port, timeout, self._endpoint.proxy)


class _IMAP4_SSL(_GreetingCapabilities, imaplib.IMAP4_SSL):
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self._endpoint = endpoint
        imaplib.IMAP4_SSL.__init__(
            self, endpoint.host, endpoint.port, ssl_context=endpoint.ssl_context(), timeout=timeout
        )

    def _create_socket(self, timeout: float | None) -> Any:
        sock = open_socket(self.host, self.port, timeout, self._endpoint.proxy)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def connect_imap(endpoint: Endpoint, timeout: float) -> imaplib.IMAP4:
    """The default factory: a greeted connection, upgraded to TLS when configured."""
    if endpoint.security == "ssl":
        return _IMAP4_SSL(endpoint, timeout)
    conn = _IMAP4(endpoint, timeout)
    if endpoint.security == "starttls":
        conn.starttls(endpoint.ssl_context())
    return conn


def close_quietly(conn: imaplib.IMAP4) -> None:
    try:
        conn.shutdown()
    except (OSError, AttributeError):
        pass
