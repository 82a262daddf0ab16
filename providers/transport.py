"""Sockets for the IMAP and SMTP backends: TLS contexts, HTTP CONNECT proxies,
TCP_NODELAY, and the plaintext policy. No protocol logic lives here."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from postroom.urls import is_loopback_host
from providers.errors import ConfigurationError, TransientError

SECURITY_MODES = ("ssl", "starttls", "none")
is_loopback = is_loopback_host  # the name services.accounts imports; the test itself is the core's


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: host, port, security mode and TLS trust."""

    host: str
    port: int
    security: str
    ca_file: str | None = None
    proxy: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def check_endpoint(endpoint: Endpoint, allow_plaintext: bool, what: str) -> None:
    """Refuse settings that would send credentials in the clear to a remote host."""
    if endpoint.security not in SECURITY_MODES:
        raise ConfigurationError(
            f"{what}: security must be one of {', '.join(SECURITY_MODES)}, not {endpoint.security!r}"
        )
    if endpoint.security == "none" and not allow_plaintext and not is_loopback_host(endpoint.host):
        raise ConfigurationError(
            f"{what}: refusing an unencrypted connection to {endpoint.host}; use 'ssl' or 'starttls', "
            "or set allow_plaintext"
        )
    if endpoint.proxy is not None:
        parts = urlsplit(endpoint.proxy)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ConfigurationError(f"{what}: proxy must look like http://host:port, not {endpoint.proxy!r}")


def open_socket(host: str, port: int, timeout: float | None, proxy: str | None = None) -> socket.socket:
    """A connected TCP socket with Nagle off, directly or through an HTTP CONNECT proxy.

    Raises :class:`TransientError` when the proxy refuses the tunnel; plain socket
    errors propagate for the caller to translate.
    """
    if proxy is None:
        sock = socket.create_connection((host, port), timeout=timeout)
    else:
        parts = urlsplit(proxy)
        assert parts.hostname is not None and parts.port is not None  # checked at open time
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        try:
            _connect_tunnel(sock, host, port)
        except BaseException:
            sock.close()
            raise
    # imaplib/smtplib write a command and its CRLF in separate send() calls; with
    # Nagle on, the second waits ~40 ms for the peer's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect_tunnel(sock: socket.socket, host: str, port: int) -> None:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"))
    reply = b""
    # one byte at a time: the server's greeting may follow the proxy's reply at once,
    # and those bytes belong to the protocol client, not to us
    while not reply.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise TransientError(f"proxy closed the connection while tunnelling to {target}")
        reply += chunk
        if len(reply) > 16384:
            raise TransientError("proxy sent an oversized CONNECT reply")
    status_line = reply.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(None, 2)
    if len(fields) < 2 or fields[1] != "200":
        raise TransientError(f"proxy refused CONNECT to {target}: {status_line}")
