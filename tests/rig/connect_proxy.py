"""An HTTP CONNECT proxy for tests of the IMAP ``proxy`` setting: it tunnels to any target and
records what it tunnelled to and how many tunnels are still open."""

from __future__ import annotations

import socket
import threading


class ConnectProxy:
    """A tiny HTTP CONNECT proxy on 127.0.0.1 that records its tunnels and how many are open."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.tunnels: list[str] = []  # every tunnel's target, in order
        self.open = 0  # tunnels whose client has not closed yet
        self.sent: list[bytearray] = []  # what each tunnel's client sent (plain IMAP is readable)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(1)
        target = head.split()[1].decode()
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        with self._lock:
            self.tunnels.append(target)
            self.open += 1
            sent = bytearray()
            self.sent.append(sent)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src: socket.socket, dst: socket.socket, record: bytearray | None = None) -> None:
            try:
                while data := src.recv(65536):
                    if record is not None:
                        record += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream, sent)
        with self._lock:
            self.open -= 1

    def close(self) -> None:
        self.server.close()
