"""A real HTTP server on 127.0.0.1 that counts what reaches it: the "remote" origin of the XSS
corpus's images, stylesheets, forms and beacons (``/leak/<n>``), and of the images a message
shows after "show images".

Every request is recorded with its path, method and User-Agent, so a test can tell a request
made by the browser itself (Chromium's User-Agent) from one made by Postroom's image proxy.
Images answer as a 1×1 GIF so an ``<img>`` that does load renders; everything else gets a small
text body.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    user_agent: str


class LeakServer:
    """``with LeakServer() as leak: leak.origin, leak.hits(), leak.reset()``."""

    def __init__(self) -> None:
        self._hits: list[Hit] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                with owner._lock:
                    owner._hits.append(Hit(self.command, self.path, self.headers.get("User-Agent", "")))
                is_image = self.path.split("?")[0].endswith((".gif", ".png", ".jpg")) or "/img" in self.path
                body, kind = (GIF, "image/gif") if is_image else (b"leaked", "text/plain")
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="leak-server", daemon=True)

    def __enter__(self) -> LeakServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def hits(self) -> list[Hit]:
        with self._lock:
            return list(self._hits)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
