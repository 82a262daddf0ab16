"""Helpers for the provider benchmarks that drive Postroom's engine against a cloud stand-in.

Used by ``bench/microsoft_bench.py``; ``bench/gmail_bench.py`` carries its own copies of
the same procedures (applicant choice, stand-in child process, provider timers, SQL
counters) and can switch to these without changing its numbers:

* :func:`pick_applicants` -- the applicant choice of ``bench/sync_bench.py`` (greedy,
  seed 7), so every benchmark bodies-fetches the same ~10 % of the corpus;
* :class:`StandInProcess` -- a stand-in forked into a child process before any thread
  exists, driven over a pipe, so its CPU (``time.process_time()`` in the child) is kept
  apart from Postroom's;
* :class:`CountingApp` -- a WSGI wrapper counting requests and body bytes each way;
* :class:`ProviderTimers` -- wall and thread-CPU time spent inside provider methods;
* :class:`SqlCounter` -- SQL statements and commits on an engine.
"""

from __future__ import annotations

import email
import email.utils
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import event


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def med(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return statistics.median(xs) if xs else None


def spread(xs: Iterable[float]) -> list[float]:
    xs = sorted(xs)
    return [round(xs[0], 4), round(xs[-1], 4)] if xs else []


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(packages: Iterable[str] = ()) -> dict[str, Any]:
    """Python, CPU, SQLite and the versions of the named client packages."""
    import sqlite3

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
    }
    for pkg in packages:
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        pass
    return info


# ------------------------------------------------------------------ corpus and applicants
def addresses(raw: bytes) -> set[str]:
    """Lower-cased From/To/Cc addresses of a raw message."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    msg = email.message_from_string(head + "\r\n\r\n")
    fields = msg.get_all("From", []) + msg.get_all("To", []) + msg.get_all("Cc", [])
    return {a.lower() for _, a in email.utils.getaddresses(fields) if "@" in a}


def sender(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return email.utils.parseaddr(email.message_from_bytes(head + b"\r\n\r\n").get("From", ""))[1].lower()


def pick_applicants(per_msg: list[set[str]], owner: str, share: float) -> tuple[list[str], int]:
    """Corpus participants whose messages cover ~share of all messages (greedy, deterministic);
    every sync benchmark (IMAP, Gmail, Microsoft) picks its applicants this way."""
    by_addr: dict[str, set[int]] = {}
    for i, addrs in enumerate(per_msg):
        for a in addrs - {owner}:
            by_addr.setdefault(a, set()).add(i)
    target = share * len(per_msg)
    chosen: list[str] = []
    covered: set[int] = set()
    rng = random.Random(7)
    pool = sorted(by_addr)
    rng.shuffle(pool)
    while len(covered) < target and pool:
        best = min(pool, key=lambda a: abs(len(covered | by_addr[a]) - target))
        if abs(len(covered | by_addr[best]) - target) >= abs(len(covered) - target):
            break
        chosen.append(best)
        covered |= by_addr[best]
        pool.remove(best)
    return chosen, len(covered)


# ------------------------------------------------------------------ the stand-in process
class CountingApp:
    """A WSGI app, counting HTTP requests and body bytes each way."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app, self.requests, self.bytes_in, self.bytes_out = app, 0, 0, 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.requests += 1
        self.bytes_in += int(environ.get("CONTENT_LENGTH") or 0)
        out = list(self.app(environ, start_response))
        self.bytes_out += sum(len(b) for b in out)
        return out

    def reset(self) -> None:
        self.requests = self.bytes_in = self.bytes_out = 0

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "request_bytes": self.bytes_in, "response_bytes": self.bytes_out}


def serve_commands(conn: Connection, info: dict[str, Any], commands: dict[str, Callable[[Any], Any]]) -> None:
    """The child's loop: send ``info``, then answer ``(name, arg)`` until ``stop``.
    ``cpu`` (the child's process_time) is always available; an exception is sent back."""
    conn.send(info)
    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            return
        try:
            conn.send(time.process_time() if cmd == "cpu" else commands[cmd](arg))
        except Exception as exc:  # the parent raises it
            conn.send(exc)


class StandInProcess:
    """``target(conn, *args)`` in a forked child; it must call :func:`serve_commands`."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = mp.get_context("fork")  # call before this process starts any thread
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        self.info: dict[str, Any] = self.conn.recv()
        if isinstance(self.info, Exception):
            raise self.info

    def ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        out = self.conn.recv()
        if isinstance(out, Exception):
            raise out
        return out

    def stop(self) -> None:
        try:
            self.conn.send(("stop", None))
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


# ------------------------------------------------------------------ Postroom-side counters
@dataclass
class Timer:
    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0


class ProviderTimers:
    """Wall and thread-CPU time inside wrapped provider methods (generators timed per item)."""

    def __init__(self) -> None:
        self.timers: dict[str, Timer] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = self.timers.setdefault(name, Timer())
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                t.wall += time.perf_counter() - w0
                t.cpu += time.thread_time() - c0
                t.calls += 1

        return wrapper

    def wrap_gen(self, name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            t = self.timers.setdefault(name, Timer())
            t.calls += 1
            while True:
                w0, c0 = time.perf_counter(), time.thread_time()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    t.wall += time.perf_counter() - w0
                    t.cpu += time.thread_time() - c0
                yield item

        return wrapper

    def snapshot(self) -> dict[str, tuple[float, float, int]]:
        return {k: (t.wall, t.cpu, t.calls) for k, t in self.timers.items()}

    def since(self, before: dict[str, tuple[float, float, int]]) -> dict[str, dict[str, float]]:
        out = {}
        for k, t in self.timers.items():
            w, c, n = before.get(k, (0.0, 0.0, 0))
            if t.calls - n:
                out[k] = {"wall_s": round(t.wall - w, 4), "cpu_s": round(t.cpu - c, 4), "calls": t.calls - n}
        return out


class SqlCounter:
    """SQL statements and commits on one engine."""

    def __init__(self, engine: Any) -> None:
        self.statements = 0
        self.commits = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1
