"""A tiny counting TCP proxy for IMAP, run in its own process (so it never competes
with the code under test for the GIL).

Per client connection it counts client commands (tagged lines, literal-aware),
bytes in each direction, and wall time per command (tagged line sent -> tagged
completion seen from the server). When the connection closes it puts one dict
on the result queue.

    proxy = CountingProxy("127.0.0.1", 1143).start()
    ... connect to 127.0.0.1:proxy.port ...
    stats = proxy.collect(expected=1)     # [{"commands": [...], "c2s_bytes": ..., ...}]
    proxy.stop()
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import re
import socket
import threading
import time
from typing import Any

_TAGGED = re.compile(rb"^([A-Za-z0-9.]+) ([A-Za-z]+)(?: (.*))?$", re.S)
TRANSCRIPT_BYTES = 8192
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")


def _summarise(line: bytes) -> str:
    """'UID FETCH <set> (items...)' -> a short, set-free label for grouping."""
    m = _TAGGED.match(line)
    if not m:
        return "?"
    verb = m.group(2).upper().decode()
    rest = (m.group(3) or b"").decode("latin-1")
    if verb == "UID":
        sub = rest.split(" ", 2)
        label = "UID " + sub[0].upper()
        if sub[0].upper() == "FETCH" and len(sub) > 2:
            items = sub[2]
            if "BODY.PEEK[]" in items.upper():
                label += " body"
            elif "HEADER.FIELDS" in items.upper():
                label += " headers"
            else:
                label += " " + items[:60]
        elif len(sub) > 1:
            label += " " + " ".join(sub[1:])[:60]
        return label
    if verb in ("LOGIN", "AUTHENTICATE"):
        return verb
    return verb


def _serve_conn(client: socket.socket, upstream: tuple[str, int], results: Any) -> None:
    server = socket.create_connection(upstream)
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lock = threading.Lock()
    pending: dict[bytes, tuple[str, float]] = {}
    commands: list[dict[str, Any]] = []
    counts = {"c2s_bytes": 0, "s2c_bytes": 0}
    heads: dict[str, bytearray] = {"c2s": bytearray(), "s2c": bytearray()}  # first bytes, for small transcripts
    t_open = time.perf_counter()

    def c2s() -> None:
        buf = b""
        skip = 0  # bytes of a client literal still to pass through
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                counts["c2s_bytes"] += len(data)
                if len(heads["c2s"]) < TRANSCRIPT_BYTES:
                    heads["c2s"] += data[: TRANSCRIPT_BYTES - len(heads["c2s"])]
                buf += data
                while buf:
                    if skip:
                        n = min(skip, len(buf))
                        skip -= n
                        buf = buf[n:]
                        continue
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    line, buf = buf[:i], buf[i + 2 :]
                    lit = _LITERAL.search(line)
                    if lit:
                        skip = int(lit.group(1))
                    m = _TAGGED.match(line)
                    if m:
                        with lock:
                            pending[m.group(1)] = (_summarise(line), time.perf_counter())
                server.sendall(data)  # after registering the tag, so its completion is never missed
        except OSError:
            pass
        finally:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def s2c() -> None:
        tail = b""
        try:
            while True:
                data = server.recv(262144)
                if not data:
                    break
                counts["s2c_bytes"] += len(data)
                if len(heads["s2c"]) < TRANSCRIPT_BYTES:
                    heads["s2c"] += data[: TRANSCRIPT_BYTES - len(heads["s2c"])]
                client.sendall(data)
                if not pending:
                    tail = (tail + data)[-256:]
                    continue
                hay = tail + data
                with lock:
                    for tag in list(pending):
                        j = hay.find(b"\r\n" + tag + b" ")
                        if j < 0 and hay.startswith(tag + b" "):
                            j = 0
                        if j >= 0:
                            label, t0 = pending.pop(tag)
                            commands.append({"cmd": label, "seconds": time.perf_counter() - t0})
                tail = hay[-256:]
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    a = threading.Thread(target=c2s, daemon=True)
    b = threading.Thread(target=s2c, daemon=True)
    a.start()
    b.start()
    a.join()
    b.join()
    client.close()
    server.close()
    results.put(
        {
            "commands": commands,
            "n_commands": len(commands) + len(pending),
            "c2s_bytes": counts["c2s_bytes"],
            "s2c_bytes": counts["s2c_bytes"],
            "seconds": time.perf_counter() - t_open,
            "transcript": {k: v.decode("latin-1") for k, v in heads.items()},
        }
    )


def _run(listener: socket.socket, upstream: tuple[str, int], results: Any) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve_conn, args=(client, upstream, results), daemon=True).start()


class CountingProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.results: Any = mp.get_context("fork").Queue()
        self._proc: Any = None

    def start(self) -> CountingProxy:
        self._proc = mp.get_context("fork").Process(
            target=_run, args=(self._listener, self.upstream, self.results), daemon=True
        )
        self._proc.start()
        return self

    def drain(self) -> None:
        while True:
            try:
                self.results.get_nowait()
            except queue.Empty:
                return

    def collect(self, expected: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Stats of connections closed since the last call (waits for ``expected`` of them)."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            try:
                out.append(self.results.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        time.sleep(0.05)
        while True:  # anything else that closed meanwhile
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                break
        return out

    def stop(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._listener.close()
