"""A fault-injecting TCP proxy for tests: put it between Postroom and a real server.

Listens on 127.0.0.1 only and forwards to a loopback upstream (Dovecot, PostgreSQL).
One thread accepts; each connection is served by one thread; at most
``max_connections`` are open at once (more are refused), so a test cannot leak
threads or sockets without bound. Modes, switchable at any time::

    proxy.pass_through()   forward everything (the initial mode)
    proxy.cut_after(n)     close a connection once the server has sent it n bytes
                           (the client gets exactly n bytes, then EOF)
    proxy.refuse()         new connections are accepted and reset at once
    proxy.drop_all()       close every open connection now (the mode is unchanged)
    proxy.rewrite(fn)      pass what the server sends through ``fn(bytes) -> bytes`` first
                           (a server that garbles something; None stops it; any mode)
    proxy.delay(s, when)   on connections opened from now on, hold each answer of the server
                           (or each one for which ``when(bytes)`` is true) ``s`` seconds before
                           passing it on: a slow server; ``delay(0)`` for connections after that

``connections`` counts connections forwarded, ``refused`` those turned away, ``cuts``
those closed by ``cut_after``; ``server_bytes`` totals the bytes the server sent.

    with ChaosProxy(rig.ports["imap"]) as proxy:
        settings = {..., "imap_port": proxy.port}
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

CHUNK = 65536


class _Link:
    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        delay: tuple[float, Callable[[bytes], bool] | None] = (0.0, None),
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.delay = delay
        self.server_bytes = 0
        self.dead = threading.Event()

    def kill(self) -> None:
        self.dead.set()
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ChaosProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, max_connections: int = 64) -> None:
        if not ipaddress.ip_address(upstream_host).is_loopback:
            raise ValueError(f"ChaosProxy only forwards to loopback hosts, not {upstream_host}")
        self.upstream = (upstream_host, upstream_port)
        self.max_connections = max_connections
        self.mode = "pass"
        self.cut_bytes: int | None = None
        self.connections = 0
        self.refused = 0
        self.cuts = 0
        self.server_bytes = 0
        self._rewrite: Callable[[bytes], bytes] | None = None
        self._delay: tuple[float, Callable[[bytes], bool] | None] = (0.0, None)
        self._links: dict[_Link, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"chaos-{self.port}", daemon=True)
        self._acceptor.start()

    # ------------------------------------------------------------ modes
    def pass_through(self) -> None:
        with self._lock:
            self.mode, self.cut_bytes = "pass", None

    def cut_after(self, n: int) -> None:
        """Every connection (open or new) is closed once the server has sent it ``n`` bytes."""
        with self._lock:
            self.mode, self.cut_bytes = "cut", n

    def rewrite(self, fn: Callable[[bytes], bytes] | None) -> None:
        with self._lock:
            self._rewrite = fn

    def delay(self, seconds: float, when: Callable[[bytes], bool] | None = None) -> None:
        with self._lock:
            self._delay = (seconds, when)

    def refuse(self) -> None:
        with self._lock:
            self.mode, self.cut_bytes = "refuse", None

    def drop_all(self) -> None:
        """Close every open connection now and wait until their threads are gone."""
        with self._lock:
            links = list(self._links.items())
        for link, _ in links:
            link.kill()
        for _, thread in links:
            thread.join(timeout=5)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        self.drop_all()

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                turn_away = self.mode == "refuse" or len(self._links) >= self.max_connections
                if turn_away:
                    self.refused += 1
            if turn_away:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                with self._lock:
                    self.refused += 1
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                delay = self._delay
            link = _Link(client, upstream, delay)
            thread = threading.Thread(target=self._serve, args=(link,), name=f"chaos-{self.port}-link", daemon=True)
            with self._lock:
                self.connections += 1
                self._links[link] = thread
            thread.start()

    def _serve(self, link: _Link) -> None:
        try:
            self._pump(link)
        except OSError:
            pass
        finally:
            for sock in (link.client, link.upstream):
                try:
                    sock.close()
                except OSError:
                    pass
            with self._lock:
                self._links.pop(link, None)

    def _pump(self, link: _Link) -> None:
        client, upstream = link.client, link.upstream
        while not link.dead.is_set() and not self._stop.is_set():
            if self._over_budget(link, 0):
                return
            readable, _, _ = select.select([client, upstream], [], [], 0.05)
            for sock in readable:
                data = sock.recv(CHUNK)
                if not data:
                    return
                if sock is client:
                    upstream.sendall(data)
                    continue
                with self._lock:
                    limit = self.cut_bytes if self.mode == "cut" else None
                    rewrite = self._rewrite
                seconds, when = link.delay
                if seconds and (when is None or when(data)):
                    time.sleep(seconds)
                if rewrite is not None:
                    data = rewrite(data)
                if limit is not None and link.server_bytes + len(data) >= limit:
                    data = data[: max(0, limit - link.server_bytes)]
                    self._forward(link, data)
                    with self._lock:
                        self.cuts += 1
                    return
                self._forward(link, data)

    def _forward(self, link: _Link, data: bytes) -> None:
        if data:
            link.client.sendall(data)
        link.server_bytes += len(data)
        with self._lock:
            self.server_bytes += len(data)

    def _over_budget(self, link: _Link, extra: int) -> bool:
        with self._lock:
            over = self.mode == "cut" and self.cut_bytes is not None and link.server_bytes + extra >= self.cut_bytes
            if over:
                self.cuts += 1
        return over


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): what a client sees when a port refuses it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
