"""Serve a WSGI app on 127.0.0.1, on a free port, in a daemon thread.

>>> with ServerThread(app) as server:          # doctest: +SKIP
...     httplib2.Http().request(server.url + "/healthz")

Two servers are available:

* ``keep_alive=True`` (default): a threaded ``wsgiref`` server whose handler loops
  over HTTP/1.1 requests on one connection, so a client such as httplib2 reuses one
  socket, as it does against the real service. Each request body is read in full
  before the app runs, so the next request line is never mistaken for body data.
  An app it serves can end a request with no answer at all (a server that acted on the
  request, then lost the connection): :func:`drop_connection`.
* ``keep_alive=False``: werkzeug's threaded development server
  (``make_server(..., threaded=True)``). It answers every request with
  ``Connection: close`` and drains the socket after each response, which is why it
  cannot keep connections alive.
"""

from __future__ import annotations

import io
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any, NoReturn
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from werkzeug.serving import make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0  # accepted TCP connections: shows whether clients keep them alive

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()


class _Connection:
    """Handed to the app as ``environ["standin.connection"]``."""

    dropped = False


def drop_connection(environ: dict[str, Any]) -> NoReturn:
    """From inside an app served with keep-alive: close the connection without writing any
    answer, as a server that went away after acting on the request would."""
    environ["standin.connection"].dropped = True
    raise ConnectionAbortedError("the stand-in dropped the connection on purpose")


class _KeepAliveHandler(WSGIRequestHandler):
    """wsgiref's handler, looping over requests while the client keeps the connection."""

    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes; with Nagle on, the second waits for
    # the client's delayed ACK (up to 40 ms a response), as real front ends do not
    disable_nagle_algorithm = True

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():  # sets close_connection from the request's version/header
            return
        out: Any = self.wfile
        environ = self.get_environ()
        connection = environ["standin.connection"] = _Connection()
        handler = ServerHandler(self.rfile, out, self.get_stderr(), environ, multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.http_version = "1.1"
        handler.run(self.server.get_app())  # type: ignore[attr-defined]
        if connection.dropped:  # nothing was written; closing the socket is the whole answer
            self.close_connection = True
            return
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # tests need no access log
        pass


def _buffered(app: WSGIApp) -> WSGIApp:
    """Read the whole request body before the app runs (stand-in requests are small)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return list(app(environ, start_response))

    return wrapped


class ServerThread:
    """A running server: ``url`` (no trailing slash), ``close()``, context manager."""

    def __init__(self, app: WSGIApp, *, keep_alive: bool = True) -> None:
        self._server: Any
        if keep_alive:
            self._server = _ThreadingWSGIServer(("127.0.0.1", 0), _KeepAliveHandler)
            self._server.set_app(_buffered(app))
        else:
            self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port: int = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"standin:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def connections(self) -> int | None:
        """TCP connections accepted so far (None for the werkzeug server)."""
        return getattr(self._server, "connections", None)

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
