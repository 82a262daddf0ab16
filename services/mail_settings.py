"""Guess the IMAP and SMTP settings of an email address, for the user to confirm in the connect form.

The sources, most trustworthy first; the first one whose servers answer gives the guess:

1. **known provider**: the built-in table (:mod:`services.mail_providers`) by the address's
   domain (gmail.com, outlook.com, icloud.com, ...). Nothing further down knows better, so its
   settings are the answer even when they do not answer the probe (this network may block them;
   Proton needs its Bridge), and its ``hint`` says what else the user must do (Connect Google...).
2. **MX records**: a custom domain whose mail a big provider hosts (Google Workspace, Microsoft
   365, Fastmail, Zoho, GoDaddy, ...), recognised by its MX host names. Final for the same reason.
3. **autoconfig**: the domain's own Thunderbird autoconfig document, which ISPs, hosting panels
   and self-hosted servers publish. Fetched over https only (a forged document would send the
   user's password elsewhere), at most 256 KiB, DTDs and entities refused.
4. **common host names**: imap./mail./the bare domain on 993 and 143, smtp./mail. on 587 and 465.
5. **none**: nothing answered; the user fills in the form.

Every candidate is *probed* (:class:`SocketProber`): a TCP connection and the greeting
(``* OK`` for IMAP, ``220`` for SMTP), over TLS with the certificate checked on the "ssl" ports,
so a guess marked reachable is one that will connect. To stay within ``deadline`` whatever the
network does, the MX lookup, the autoconfig fetch and the probes of the common host names all
start at once in a small thread pool; the sources are then read in order, each wait ending at
the deadline, and whatever has not answered by then counts as failed. The answer is the one
the sequential order gives; the speculative probes only make it quicker.

This runs for whoever uses the connect form, from Postroom's own network, so by default it
contacts public addresses only: a guess must not become a way to probe the internal network.
Network failures never raise; a malformed address raises :class:`MailSettingsError`.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import dns.exception
import dns.resolver
import requests

from postroom.errors import UserError
from services.mail_providers import ProviderServers, ServerGuess, is_host_name, parse_autoconfig, provider_table

__all__ = [
    "Candidate", "DnsResolver", "MailSettingsError", "Prober", "Resolver", "ServerGuess", "SettingsGuess",
    "SocketProber", "Source", "default_autoconfig_urls", "guess_settings",
]  # fmt: skip

MAX_DOCUMENT = 256 * 1024  # an autoconfig document is a few KiB
_GREETINGS = {"imap": (b"* OK", b"* PREAUTH"), "smtp": (b"220",)}
_LOCAL_RE = re.compile(r"[^\s\x00-\x1f\x7f\"(),:;<>@\[\\\]]{1,64}")
_T = TypeVar("_T")


class MailSettingsError(UserError):
    """Raised by :func:`guess_settings` when the address is not an email address (field ``email``)."""


class Source(enum.StrEnum):
    """Where a guess came from, in the order the sources are tried."""

    KNOWN_PROVIDER = "known provider"
    MX = "MX records"
    AUTOCONFIG = "autoconfig"
    COMMON_NAMES = "common host names"
    NONE = "none"


@dataclass(frozen=True)
class Candidate:
    """One server a source suggested, and whether it answered the probe."""

    protocol: str  # "imap" | "smtp"
    server: ServerGuess
    source: Source
    reachable: bool


@dataclass(frozen=True)
class SettingsGuess:
    """The guess, for the form: the first answering server of each protocol from one source, or
    the source's first server when none answered; ``candidates`` lists every server probed, in
    order, with its source, so the form can show where the guess came from."""

    imap: ServerGuess | None
    smtp: ServerGuess | None
    username: str  # usually the full address
    source: Source
    provider: str | None  # "Google", "Microsoft 365", "Fastmail", ...
    hint: str | None  # one sentence, e.g. "Google accounts connect best with Connect Google; ..."
    imap_reachable: bool
    smtp_reachable: bool
    candidates: tuple[Candidate, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "imap": _server_json(self.imap) if self.imap else None,
            "smtp": _server_json(self.smtp) if self.smtp else None,
            "username": self.username,
            "source": str(self.source),
            "provider": self.provider,
            "hint": self.hint,
            "imap_reachable": self.imap_reachable,
            "smtp_reachable": self.smtp_reachable,
            "candidates": [
                {"protocol": c.protocol, **_server_json(c.server), "source": str(c.source), "reachable": c.reachable}
                for c in self.candidates
            ],
        }


def _server_json(server: ServerGuess) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "security": server.security}


class Resolver(Protocol):
    def mx(self, domain: str) -> list[str]:
        """The domain's MX hosts, most preferred first (``["aspmx.l.google.com", ...]``); ``[]``
        when it has none or the lookup failed. Never raises."""
        ...


class Prober(Protocol):
    def probe(self, protocol: str, server: ServerGuess) -> bool:
        """True when ``server`` greets like an IMAP (``protocol="imap"``) or SMTP server. Never raises."""
        ...


class DnsResolver:
    """:class:`Resolver` on dnspython: the system's resolver, or the given nameservers and port
    (``DnsResolver(nameservers=["127.0.0.1"], port=5353)``)."""

    def __init__(self, nameservers: Sequence[str] | None = None, port: int = 53, timeout: float = 3.0) -> None:
        self.nameservers, self.port, self.timeout = nameservers, port, timeout

    def mx(self, domain: str) -> list[str]:
        try:
            resolver = dns.resolver.Resolver(configure=self.nameservers is None)
            if self.nameservers is not None:
                resolver.nameservers = list(self.nameservers)
            resolver.port, resolver.lifetime = self.port, self.timeout
            answer = resolver.resolve(domain, "MX", search=False)
        except dns.exception.DNSException:  # no such domain, no MX, no answer in time, no resolv.conf
            return []
        records = sorted(answer, key=lambda record: record.preference)
        hosts = (record.exchange.to_text(omit_final_dot=True).lower() for record in records)
        return [host for host in hosts if host not in ("", ".")]  # "." is a null MX (RFC 7505)


class SocketProber:
    """:class:`Prober` over sockets: connect, TLS for "ssl" (certificate checked against the host
    name, by ``ssl_context`` or the system's trust store), read the greeting, all within ``timeout``.

    Host names must resolve to public addresses only, unless ``allow_private``. ``connect_to``
    sends a (host, port) elsewhere, as curl's ``--connect-to`` does: TLS still checks the
    certificate against the original host name, and the target is taken as given
    (``{("imap.example.test", 993): ("127.0.0.1", 10993)}``)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 3.0,
        connect_to: Mapping[tuple[str, int], tuple[str, int]] | None = None,
        allow_private: bool = False,
    ) -> None:
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.timeout = timeout
        self.connect_to = {(host.lower(), port): target for (host, port), target in (connect_to or {}).items()}
        self.allow_private = allow_private

    def probe(self, protocol: str, server: ServerGuess) -> bool:
        deadline = time.monotonic() + self.timeout
        try:
            targets = self._targets(server)
        except (OSError, UnicodeError):  # the name does not resolve
            return False
        for family, address in targets:
            try:
                return self._greeting(family, address, server, deadline).startswith(_GREETINGS[protocol])
            except (OSError, ValueError):  # refused, timed out, TLS failed: try the next address
                continue
        return False

    def _targets(self, server: ServerGuess) -> list[tuple[int, Any]]:
        mapped = self.connect_to.get((server.host.lower(), server.port))
        if mapped is not None:
            return [(socket.AF_INET6 if ":" in mapped[0] else socket.AF_INET, mapped)]
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        return [(info[0], info[4]) for info in infos if self.allow_private or _is_public(str(info[4][0]))]

    def _greeting(self, family: int, address: Any, server: ServerGuess, deadline: float) -> bytes:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(_left(deadline))
            raw.connect(address)
            if server.security != "ssl":
                return _first_line(raw, deadline)
            raw.settimeout(_left(deadline))
            with self.ssl_context.wrap_socket(raw, server_hostname=server.host) as tls:
                return _first_line(tls, deadline)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("probe timed out")
    return left


def _first_line(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < 1024:
        sock.settimeout(_left(deadline))
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


def _public_host(host: str | None) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM) if host else []
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(_is_public(str(info[4][0])) for info in infos)


def default_autoconfig_urls(domain: str, address: str) -> list[str]:
    """Where a domain publishes its own autoconfig document (Thunderbird's places, https only)."""
    return [
        f"https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={quote(address, safe='@')}",
        f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
    ]


def _fetch(http: requests.Session, url: str, timeout: float, end: float, allow_private: bool) -> bytes | None:
    """The body of ``url`` (following up to 3 redirects, never from https to http), or None."""
    for _ in range(4):
        if not allow_private and not _public_host(urlsplit(url).hostname):  # (requests resolves it again:
            return None  # a name re-pointed in between, DNS rebinding, is not caught; the probes are immune)
        wait = min(timeout, max(end - time.monotonic(), 0.01))
        try:
            headers = {"Accept-Encoding": "identity"}  # the size cap counts the bytes as they come
            with http.get(url, headers=headers, timeout=wait, allow_redirects=False, stream=True) as response:
                if response.is_redirect:
                    target = urljoin(url, response.headers["location"])
                    if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
                        return None
                    url = target
                    continue
                if response.status_code != 200:
                    return None
                body = bytearray()
                for chunk in response.iter_content(16384):
                    body += chunk
                    if len(body) > MAX_DOCUMENT or time.monotonic() > end:
                        return None
                return bytes(body)
        except (requests.RequestException, OSError, ValueError):
            return None
    return None


def _fetch_first(http: requests.Session, urls: Sequence[str], timeout: float, run: _Run, allow_private: bool) -> bytes:
    for url in urls:
        if run.done.is_set():  # the guess was settled without it
            break
        body = _fetch(http, url, timeout, run.end, allow_private)
        if body:
            return body
    return b""


def _common_names(domain: str) -> ProviderServers:
    imap = [("imap.", 993, "ssl"), ("mail.", 993, "ssl"), ("", 993, "ssl"), ("imap.", 143, "starttls"),
            ("mail.", 143, "starttls")]  # fmt: skip
    smtp = [("smtp.", 587, "starttls"), ("smtp.", 465, "ssl"), ("mail.", 587, "starttls"), ("mail.", 465, "ssl"),
            ("", 587, "starttls")]  # fmt: skip
    make = lambda names: tuple(ServerGuess(prefix + domain, port, sec) for prefix, port, sec in names)  # noqa: E731
    return ProviderServers(None, make(imap), make(smtp))


_Probes = list[tuple[str, ServerGuess, "cf.Future[bool]"]]


class _Run:
    """One guess's thread pool and deadline: every wait ends at the deadline at the latest."""

    def __init__(self, deadline: float, prober: Prober) -> None:
        self.end = time.monotonic() + deadline
        self.prober = prober
        self.pool = cf.ThreadPoolExecutor(max_workers=24, thread_name_prefix="mail-settings")
        self.done = threading.Event()

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.pool.shutdown(wait=False, cancel_futures=True)  # late answers are not waited for

    def submit(self, fn: Callable[..., _T], *args: Any) -> cf.Future[_T]:
        return self.pool.submit(fn, *args)

    def result(self, future: cf.Future[_T], default: _T) -> _T:
        try:
            return future.result(timeout=max(0.0, self.end - time.monotonic()))
        except TimeoutError:
            return default

    def probe(self, servers: ProviderServers) -> _Probes:
        both = [("imap", server) for server in servers.imap] + [("smtp", server) for server in servers.smtp]
        return [(protocol, server, self.submit(self.prober.probe, protocol, server)) for protocol, server in both]

    def settle(
        self, source: Source, servers: ProviderServers, address: str, probes: _Probes | None = None
    ) -> SettingsGuess:
        probes = self.probe(servers) if probes is None else probes
        found = [Candidate(protocol, server, source, self.result(f, False)) for protocol, server, f in probes]

        def pick(protocol: str) -> tuple[ServerGuess | None, bool]:
            mine = [c for c in found if c.protocol == protocol]
            best = next((c for c in mine if c.reachable), mine[0] if mine else None)
            return (best.server, best.reachable) if best else (None, False)

        (imap, imap_ok), (smtp, smtp_ok) = pick("imap"), pick("smtp")
        username = servers.username_for(address)
        return SettingsGuess(imap, smtp, username, source, servers.name, servers.hint, imap_ok, smtp_ok, tuple(found))


def _split_address(address: str) -> tuple[str, str]:
    """``(address, domain)`` with the domain lower-case ASCII (IDNA), or MailSettingsError."""
    text = address.strip() if isinstance(address, str) else ""
    local, at, domain = text.rpartition("@")
    try:
        domain = domain.removesuffix(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        domain = ""
    dotted = "." in domain and not domain.rpartition(".")[2].isdigit()  # 192.0.2.1 is not a mail domain
    dots_ok = bool(local) and "." not in (local[0], local[-1]) and ".." not in local
    if not (at and _LOCAL_RE.fullmatch(local) and dots_ok and dotted and is_host_name(domain)):
        raise MailSettingsError("{email} must be an email address, like name@example.com.", field="email")
    return f"{local}@{domain}", domain


def guess_settings(
    address: str,
    *,
    resolver: Resolver | None = None,
    http: requests.Session | None = None,
    probe: Prober | None = None,
    timeout: float = 3.0,
    deadline: float = 10.0,
    autoconfig_urls: Callable[[str, str], list[str]] = default_autoconfig_urls,
    allow_private: bool = False,
) -> SettingsGuess:
    """Guess the IMAP and SMTP settings of ``address`` (see the module's docstring for the order).

    ``timeout`` bounds each lookup and probe, ``deadline`` the whole guess. ``allow_private`` lets
    the autoconfig fetch and the default prober reach loopback and private addresses (a
    self-hosted server on the local network; tests). ``autoconfig_urls(domain, address)`` gives
    the documents to try, :func:`default_autoconfig_urls` by default.
    """
    address, domain = _split_address(address)
    table = provider_table()
    prober = probe or SocketProber(timeout=timeout, allow_private=allow_private)
    session = http or requests.Session()
    try:
        with _Run(deadline, prober) as run:
            known = table.by_domain(domain)
            if known is not None:
                return run.settle(Source.KNOWN_PROVIDER, known, address)
            mx = run.submit((resolver or DnsResolver(timeout=timeout)).mx, domain)
            urls = autoconfig_urls(domain, address)
            document = run.submit(_fetch_first, session, urls, timeout, run, allow_private)
            common = _common_names(domain)
            common_probes = run.probe(common)  # started now, read last: see the module's docstring
            hosts: list[str] = run.result(mx, [])
            hosted = table.by_mx(hosts)
            if hosted is not None:
                return run.settle(Source.MX, hosted, address)
            tried: tuple[Candidate, ...] = ()
            autoconfig = parse_autoconfig(run.result(document, b""), address)
            if autoconfig is not None:
                guess = run.settle(Source.AUTOCONFIG, autoconfig, address)
                if guess.imap_reachable or guess.smtp_reachable:
                    return guess
                tried = guess.candidates
            guess = run.settle(Source.COMMON_NAMES, common, address, common_probes)
            if guess.imap_reachable or guess.smtp_reachable:
                return replace(guess, candidates=tried + guess.candidates)
            return SettingsGuess(None, None, address, Source.NONE, None, None, False, False, tried + guess.candidates)
    finally:
        if http is None:
            session.close()
