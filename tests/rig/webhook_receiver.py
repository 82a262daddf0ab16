"""A real HTTP receiver of webhooks on 127.0.0.1 for the tests: it checks every delivery's
Standard Webhooks signature with the secrets it is given and answers as scripted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from postroom.webhook_signing import WebhookVerificationError, verify


class Receiver:
    """An HTTP server that checks every delivery's signature and answers as scripted."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.answers: list[int] = []  # popped per request; 200 once empty
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.bad_signatures: list[str] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                heads = {k.lower(): v for k, v in self.headers.items()}
                time.sleep(receiver.delay)
                with receiver.lock:
                    try:
                        verify(receiver.secrets, heads, body, now=time.time())
                    except WebhookVerificationError as exc:
                        receiver.bad_signatures.append(str(exc))
                    receiver.received.append((heads, body))
                    code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ids(self) -> list[str]:
        return [h["webhook-id"] for h, _ in self.received]

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(type, data) of every delivery received, in order."""
        return [(doc["type"], doc["data"]) for doc in (json.loads(body) for _, body in self.received)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()
