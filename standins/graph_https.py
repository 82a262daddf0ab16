"""Serve a WSGI app over HTTPS on 127.0.0.1, for the Microsoft stand-ins (msal refuses http).

The same keep-alive threaded server as :class:`standins.httpserver.ServerThread`,
with every accepted connection wrapped in TLS. The handshake runs lazily in the
connection's own thread, so a client that connects and stalls never blocks the
accept loop::

    >>> ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)   # doctest: +SKIP
    >>> ca.issue_cert("127.0.0.1").configure_cert(ctx)             # e.g. with trustme
    >>> with HttpsServerThread(app, ctx) as server:                 # doctest: +SKIP
    ...     requests.get(server.url + "/v1.0/me", verify=ca_pem_path)
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from standins.httpserver import ServerThread, WSGIApp, _buffered, _KeepAliveHandler, _ThreadingWSGIServer


class _TlsWSGIServer(_ThreadingWSGIServer):
    ssl_context: ssl.SSLContext

    def get_request(self) -> Any:
        sock, addr = super().get_request()
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class HttpsServerThread(ServerThread):
    """A running HTTPS server: ``url`` is ``https://127.0.0.1:PORT``; ``close()``; context manager."""

    def __init__(self, app: WSGIApp, ssl_context: ssl.SSLContext) -> None:
        server = _TlsWSGIServer(("127.0.0.1", 0), _KeepAliveHandler)
        server.ssl_context = ssl_context
        server.set_app(_buffered(_https_environ(app)))
        self._server = server
        self.port = server.server_port
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"standin-tls:{self.port}", daemon=True
        )
        self._thread.start()


def _https_environ(app: WSGIApp) -> WSGIApp:
    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.url_scheme"] = "https"
        environ["HTTPS"] = "on"
        return app(environ, start_response)

    return wrapped
