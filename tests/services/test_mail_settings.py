"""The IMAP/SMTP settings guess (services.mail_settings) against real servers on 127.0.0.1: a DNS
server (dnslib) answering MX, an https server serving autoconfig documents, Dovecot and Postfix
of the mail rig greeting the probes, aiosmtpd speaking SMTP over TLS, and sockets that never answer.

The guessed host names (imap.plain.test, smtp.gmail.com, ...) are sent to those servers with
``SocketProber(connect_to=...)``, which keeps checking TLS certificates against the guessed name.
Every name a test's guess may probe is mapped, so no test touches the network beyond this machine.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import trustme
from aiosmtpd.controller import Controller
from dnslib import MX, QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from services.mail_providers import ProviderTable, provider_table
from services.mail_settings import (
    DnsResolver,
    MailSettingsError,
    ServerGuess,
    SettingsGuess,
    SocketProber,
    Source,
    default_autoconfig_urls,
    guess_settings,
)
from tests.rig.mailrig import MailRig, free_port

ZONE = {  # MX records of the test domains: (preference, host)
    "workspace.test": [(20, "alt1.aspmx.l.google.com."), (10, "aspmx.l.google.com.")],
    "m365.test": [(0, "m365-test.mail.protection.outlook.com.")],
    "selfhosted.test": [(10, "mx.selfhosted.test.")],
    "nullmx.test": [(0, ".")],
}
COMMON = [("imap.", 993), ("mail.", 993), ("", 993), ("imap.", 143), ("mail.", 143),
          ("smtp.", 587), ("smtp.", 465), ("mail.", 587), ("mail.", 465), ("", 587)]  # fmt: skip
CA = trustme.CA()


# ---------------------------------------------------------------- servers
class Zone(BaseResolver):
    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in ZONE:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.MX:
            for preference, host in ZONE[name]:
                reply.add_answer(RR(request.q.qname, QTYPE.MX, rdata=MX(host, preference), ttl=60))
        return reply


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    server = DNSServer(Zone(), address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda _: None))
    server.start_thread()
    yield server.server.server_address[1]
    server.stop()
    server.server.server_close()


@pytest.fixture
def resolver(dns_port: int) -> DnsResolver:
    return DnsResolver(nameservers=["127.0.0.1"], port=dns_port, timeout=2.0)


@dataclass
class Web:
    """An https server on 127.0.0.1 (certificate from the test CA), and a plain http one beside
    it; ``routes`` maps a path to (status, headers, body) for both; ``requests`` lists the paths
    asked for, with their query."""

    port: int
    plain_port: int
    ca_file: str
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def urls(self, domain: str, address: str) -> list[str]:
        """Where these tests publish autoconfig, in the order default_autoconfig_urls gives."""
        base = f"https://127.0.0.1:{self.port}"
        return [f"{base}/{domain}/mail/config-v1.1.xml?emailaddress={address}", f"{base}/{domain}/.well-known"]

    def asked(self, domain: str) -> list[str]:
        """The paths asked for about ``domain`` (a guess that ended may still be finishing a request)."""
        return [path for path in self.requests if path.startswith(f"/{domain}/")]

    def session(self) -> requests.Session:
        session = requests.Session()
        session.verify, session.trust_env = self.ca_file, False
        return session


@pytest.fixture(scope="module")
def web_server() -> Iterator[Web]:
    ca_file = str(Path(tempfile.mkdtemp(prefix="mail-settings-ca-")) / "ca.pem")
    CA.cert_pem.write_to_path(ca_file)
    web = Web(port=0, plain_port=0, ca_file=ca_file)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            web.requests.append(self.path)
            status, headers, body = web.routes.get(self.path.split("?")[0], (404, {}, b"not here"))
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server, plain = (http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    web.port, web.plain_port = server.server_address[1], plain.server_address[1]
    for each in (server, plain):
        threading.Thread(target=each.serve_forever, daemon=True).start()
    yield web
    for each in (server, plain):
        each.shutdown()
        each.server_close()


@pytest.fixture
def web(web_server: Web) -> Web:
    web_server.routes.clear()
    web_server.requests.clear()
    return web_server


@pytest.fixture(scope="module")
def silent() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield listener.getsockname()[1]


@pytest.fixture(scope="module")
def smtps() -> Iterator[int]:
    """aiosmtpd speaking SMTP over TLS from the first byte (port 465 style) as smtp.tls.test."""

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert("smtp.tls.test").configure_cert(context)
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port(), ssl_context=context)
    controller.start()
    yield controller.port
    controller.stop()


def rig_context(rig: MailRig) -> ssl.SSLContext:
    """Trusts the rig's self-signed certificate (CN=localhost, SAN 127.0.0.1)."""
    return ssl.create_default_context(cafile=rig.tls_ca)


def trusting_test_ca() -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    return context


def common_names(domain: str, **answering: tuple[str, int]) -> dict[tuple[str, int], tuple[str, int]]:
    """connect_to for every common host name of ``domain``: a closed port, except ``answering``
    (``imap_143=("127.0.0.1", port)`` sends imap.<domain>:143 there; ``bare_993`` the bare domain)."""
    closed = ("127.0.0.1", free_port())
    mapping = {}
    for prefix, port in COMMON:
        key = f"{prefix.rstrip('.') or 'bare'}_{port}"
        mapping[(prefix + domain, port)] = answering.get(key, closed)
    return mapping


class NoDns:
    def mx(self, domain: str) -> list[str]:
        raise AssertionError(f"looked up the MX of {domain}")


def no_autoconfig(domain: str, address: str) -> list[str]:
    raise AssertionError(f"fetched autoconfig for {domain}")


def reachable(guess: SettingsGuess) -> list[tuple[str, str, int]]:
    return [(c.protocol, c.server.host, c.server.port) for c in guess.candidates if c.reachable]


# ---------------------------------------------------------------- known providers
def test_known_provider_needs_no_lookups_and_checks_certificates(mail_rig: MailRig) -> None:
    prober = SocketProber(
        ssl_context=rig_context(mail_rig),
        timeout=2,
        connect_to={
            ("imap.gmail.com", 993): ("127.0.0.1", mail_rig.ports["imaps"]),
            ("smtp.gmail.com", 587): ("127.0.0.1", mail_rig.ports["smtp_submission"]),
        },
    )
    guess = guess_settings(" Jane.Doe@GMail.com ", resolver=NoDns(), autoconfig_urls=no_autoconfig, probe=prober)
    assert (guess.source, guess.provider, guess.username) == (Source.KNOWN_PROVIDER, "Google", "Jane.Doe@gmail.com")
    assert guess.imap == ServerGuess("imap.gmail.com", 993, "ssl")
    assert guess.smtp == ServerGuess("smtp.gmail.com", 587, "starttls")
    assert guess.hint is not None and "Connect Google" in guess.hint
    assert guess.smtp_reachable  # Postfix greeted
    # Dovecot answers TLS there, but with a certificate for localhost, not imap.gmail.com
    assert not guess.imap_reachable


@dataclass
class Unreachable:
    """A prober for the table's own entries: it answers no and notes what it was asked."""

    asked: list[tuple[str, ServerGuess]] = field(default_factory=list)

    def probe(self, protocol: str, server: ServerGuess) -> bool:
        self.asked.append((protocol, server))
        return False


@pytest.mark.parametrize(
    ("address", "provider", "imap", "smtp", "username", "hint"),
    [
        ("a@hotmail.com", "Outlook.com", ("outlook.office365.com", 993, "ssl"),
         ("smtp.office365.com", 587, "starttls"), "a@hotmail.com", "Connect Microsoft"),
        ("a@me.com", "iCloud Mail", ("imap.mail.me.com", 993, "ssl"), ("smtp.mail.me.com", 587, "starttls"),
         "a@me.com", "app-specific password"),
        ("a@free.fr", "Free", ("imap.free.fr", 993, "ssl"), ("smtp.free.fr", 465, "ssl"), "a", None),
        ("a@proton.me", "Proton Mail", ("127.0.0.1", 1143, "starttls"), ("127.0.0.1", 1025, "starttls"),
         "a@proton.me", "Proton Mail Bridge"),
        ("a@tutanota.com", "Tuta Mail", None, None, "a@tutanota.com", "no IMAP"),
    ],
)  # fmt: skip
def test_known_providers(address, provider, imap, smtp, username, hint) -> None:  # type: ignore[no-untyped-def]
    prober = Unreachable()
    guess = guess_settings(address, resolver=NoDns(), autoconfig_urls=no_autoconfig, probe=prober)
    assert (guess.source, guess.provider, guess.username) == ("known provider", provider, username)
    assert guess.imap == (ServerGuess(*imap) if imap else None)
    assert guess.smtp == (ServerGuess(*smtp) if smtp else None)
    assert (hint is None) == (guess.hint is None) and (hint is None or hint in guess.hint)
    assert not guess.imap_reachable and not guess.smtp_reachable  # final even so: nothing else knows better
    assert [server for _, server in prober.asked] == [s for s in (guess.imap, guess.smtp) if s]


def test_a_bridge_on_this_machine_is_not_probed_by_default(mail_rig: MailRig) -> None:
    """Proton's Bridge listens on 127.0.0.1: the default prober reaches public addresses only."""
    local = ServerGuess("localhost", mail_rig.ports["imap"], "none")
    assert not SocketProber(timeout=2).probe("imap", local)
    assert SocketProber(timeout=2, allow_private=True).probe("imap", local)
    guess = guess_settings("a@pm.me", resolver=NoDns(), autoconfig_urls=no_autoconfig)
    assert guess.provider == "Proton Mail" and not guess.imap_reachable


# ---------------------------------------------------------------- MX records
def test_dns_resolver_orders_by_preference(resolver: DnsResolver) -> None:
    assert resolver.mx("workspace.test") == ["aspmx.l.google.com", "alt1.aspmx.l.google.com"]
    assert resolver.mx("WorkSpace.test") == ["aspmx.l.google.com", "alt1.aspmx.l.google.com"]
    assert resolver.mx("nullmx.test") == []  # RFC 7505: no mail at all
    assert resolver.mx("nowhere.test") == []  # NXDOMAIN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:  # a nameserver that never answers
        mute.bind(("127.0.0.1", 0))
        started = time.monotonic()
        assert DnsResolver(["127.0.0.1"], port=mute.getsockname()[1], timeout=0.3).mx("workspace.test") == []
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("domain", "provider", "imap", "smtp", "hint"),
    [
        ("workspace.test", "Google Workspace", ("imap.gmail.com", 993), ("smtp.gmail.com", 587), "Connect Google"),
        ("m365.test", "Microsoft 365", ("outlook.office365.com", 993), ("smtp.office365.com", 587),
         "Connect Microsoft"),
    ],
)  # fmt: skip
def test_a_domain_hosted_by_a_big_provider_is_found_by_its_mx(  # type: ignore[no-untyped-def]
    mail_rig: MailRig, resolver: DnsResolver, web: Web, domain, provider, imap, smtp, hint
) -> None:
    connect_to = common_names(domain) | {
        imap: ("127.0.0.1", free_port()),  # nothing listens there
        smtp: ("127.0.0.1", mail_rig.ports["smtp_submission"]),
    }
    guess = guess_settings(
        f"hr@{domain}",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=SocketProber(timeout=2, connect_to=connect_to),
        allow_private=True,
    )
    assert (guess.source, guess.provider) == (Source.MX, provider)
    assert guess.hint is not None and hint in guess.hint
    assert (guess.imap.host, guess.imap.port) == imap and (guess.smtp.host, guess.smtp.port) == smtp  # type: ignore[union-attr]
    assert not guess.imap_reachable and guess.smtp_reachable
    assert {c.source for c in guess.candidates} == {Source.MX}


# ---------------------------------------------------------------- autoconfig
def autoconfig(imap: list[tuple[str, int, str]], smtp: list[tuple[str, int, str]], username: str) -> bytes:
    server = "<{tag} type='{type}'><hostname>{host}</hostname><port>{port}</port><socketType>{sec}</socketType>" \
             "<username>{username}</username><authentication>password-cleartext</authentication></{tag}>"  # fmt: skip
    incoming = [server.format(tag="incomingServer", type="imap", host=h, port=p, sec=s, username=username)
                for h, p, s in imap]  # fmt: skip
    outgoing = [server.format(tag="outgoingServer", type="smtp", host=h, port=p, sec=s, username=username)
                for h, p, s in smtp]  # fmt: skip
    pop = server.format(tag="incomingServer", type="pop3", host="127.0.0.1", port=1, sec="SSL", username=username)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1"><emailProvider id="x">'
        f"<domain>x</domain><displayName>Selfhosted Mail</displayName>{pop}{''.join(incoming + outgoing)}"
        "</emailProvider></clientConfig>"
    ).encode()


def test_autoconfig_document(mail_rig: MailRig, resolver: DnsResolver, web: Web) -> None:
    closed = free_port()
    web.routes["/selfhosted.test/mail/config-v1.1.xml"] = (
        200,
        {"Content-Type": "text/xml"},
        autoconfig(
            imap=[("127.0.0.1", closed, "SSL"), ("127.0.0.1", mail_rig.ports["imaps"], "SSL")],
            smtp=[("127.0.0.1", mail_rig.ports["smtp_submission"], "STARTTLS")],
            username="%EMAILADDRESS%",
        ),
    )
    prober = SocketProber(
        ssl_context=rig_context(mail_rig), timeout=2, allow_private=True, connect_to=common_names("selfhosted.test")
    )
    guess = guess_settings(
        "Recruiting@SelfHosted.test",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=prober,
        allow_private=True,
    )
    assert (guess.source, guess.provider, guess.username) == (
        "autoconfig",
        "Selfhosted Mail",
        "Recruiting@selfhosted.test",
    )
    assert guess.imap == ServerGuess("127.0.0.1", mail_rig.ports["imaps"], "ssl")  # the first that answered
    assert guess.smtp == ServerGuess("127.0.0.1", mail_rig.ports["smtp_submission"], "starttls")
    assert guess.imap_reachable and guess.smtp_reachable
    assert [(c.server.port, c.reachable) for c in guess.candidates if c.protocol == "imap"] == [
        (closed, False),
        (mail_rig.ports["imaps"], True),
    ]
    assert web.asked("selfhosted.test") == [
        "/selfhosted.test/mail/config-v1.1.xml?emailaddress=Recruiting@selfhosted.test"
    ]


@pytest.mark.parametrize("first", ["missing", "redirect"])
def test_autoconfig_fallbacks(mail_rig: MailRig, resolver: DnsResolver, web: Web, first: str) -> None:
    """The second place is tried when the first has nothing; redirects are followed."""
    document = autoconfig(
        imap=[("mail.%EMAILDOMAIN%", 143, "STARTTLS")],
        smtp=[("mail.%EMAILDOMAIN%", 587, "STARTTLS")],
        username="%EMAILLOCALPART%",
    )
    if first == "redirect":
        web.routes["/other.test/mail/config-v1.1.xml"] = (302, {"Location": "/moved.xml"}, b"")
        web.routes["/moved.xml"] = (200, {}, document)
    else:
        web.routes["/other.test/.well-known"] = (200, {}, document)
    connect_to = common_names("other.test") | {
        ("mail.other.test", 143): ("127.0.0.1", mail_rig.ports["imap"]),
        ("mail.other.test", 587): ("127.0.0.1", mail_rig.ports["smtp_submission"]),
    }
    guess = guess_settings(
        "jo@other.test",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=SocketProber(timeout=2, connect_to=connect_to),
        allow_private=True,
    )
    assert (guess.source, guess.username) == ("autoconfig", "jo")
    assert (guess.imap, guess.smtp) == (
        ServerGuess("mail.other.test", 143, "starttls"),
        ServerGuess("mail.other.test", 587, "starttls"),
    )
    assert guess.imap_reachable and guess.smtp_reachable


def _laughs(port: int, encoding: str = "utf-8") -> bytes:
    """A billion laughs (10⁹ "lol"s) in the display name of a document that names a server that answers."""
    entities = '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    body = autoconfig([("127.0.0.1", port, "SSL")], [], "%EMAILADDRESS%").decode().split("\n", 1)[1]
    body = body.replace("Selfhosted Mail", "&l9;")
    return f'<?xml version="1.0" encoding="{encoding}"?>\n<!DOCTYPE clientConfig [{entities}]>\n{body}'.encode(encoding)


def _entity(port: int) -> bytes:
    """A harmless-looking DTD that names a server that answers: DTDs are refused, whatever they hold."""
    body = autoconfig([("&host;", port, "SSL")], [], "%EMAILADDRESS%").decode().split("\n", 1)[1]
    return f'<?xml version="1.0"?>\n<!DOCTYPE c [<!ENTITY host "127.0.0.1">]>\n{body}'.encode()


def _external(port: int) -> bytes:
    """A host name from a file of this machine (XXE)."""
    body = autoconfig([("&host;", port, "SSL")], [], "%EMAILADDRESS%").decode().split("\n", 1)[1]
    return f'<?xml version="1.0"?>\n<!DOCTYPE c [<!ENTITY host SYSTEM "file:///etc/hostname">]>\n{body}'.encode()


@pytest.mark.parametrize(
    "hostile",
    [
        "huge",
        "internal entity",
        "entity expansion",
        "entity expansion in utf-16",
        "external entity",
        "garbage",
        "html",
        "to plain http",
    ],
)
def test_hostile_autoconfig_falls_through_to_common_names(
    mail_rig: MailRig, resolver: DnsResolver, web: Web, hostile: str
) -> None:
    """Where a document names servers, they answer: only refusing the document keeps it from winning."""
    answering = [("127.0.0.1", mail_rig.ports["imaps"], "SSL")]
    padding = b"<!--" + b"x" * 300_000 + b"-->"  # over the 256 KiB an autoconfig document may have
    documents = {
        "huge": autoconfig(answering, [], "x").replace(b"</clientConfig>", padding + b"</clientConfig>"),
        "internal entity": _entity(mail_rig.ports["imaps"]),
        "entity expansion": _laughs(mail_rig.ports["imaps"]),
        "entity expansion in utf-16": _laughs(mail_rig.ports["imaps"], "utf-16"),
        "external entity": _external(mail_rig.ports["imaps"]),
        "garbage": bytes(range(256)) * 8,
        "html": b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>",
    }  # fmt: skip
    if hostile == "to plain http":  # a redirect may not leave https (where the document is good)
        web.routes["/evil.test/mail/config-v1.1.xml"] = (301, {"Location": f"http://127.0.0.1:{web.plain_port}/x"}, b"")
        web.routes["/x"] = (200, {}, autoconfig(answering, [], "x"))
    else:
        web.routes["/evil.test/mail/config-v1.1.xml"] = (200, {"Content-Type": "text/xml"}, documents[hostile])
    connect_to = common_names("evil.test", imap_143=("127.0.0.1", mail_rig.ports["imap"]))
    prober = SocketProber(ssl_context=rig_context(mail_rig), timeout=2, allow_private=True, connect_to=connect_to)
    guess = guess_settings(
        "a@evil.test", resolver=resolver, http=web.session(), autoconfig_urls=web.urls, probe=prober, allow_private=True
    )
    assert guess.source == Source.COMMON_NAMES
    assert guess.imap == ServerGuess("imap.evil.test", 143, "starttls") and guess.imap_reachable
    assert not guess.smtp_reachable


def test_autoconfig_on_a_private_address_is_not_fetched_by_default(mail_rig: MailRig, resolver, web: Web) -> None:  # type: ignore[no-untyped-def]
    web.routes["/inside.test/mail/config-v1.1.xml"] = (
        200,
        {},
        autoconfig([("127.0.0.1", mail_rig.ports["imaps"], "SSL")], [], "%EMAILADDRESS%"),
    )
    connect_to = common_names("inside.test", imap_143=("127.0.0.1", mail_rig.ports["imap"]))
    guess = guess_settings(
        "a@inside.test",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=SocketProber(timeout=2, connect_to=connect_to),
    )
    assert guess.source == Source.COMMON_NAMES and web.asked("inside.test") == []


def test_default_autoconfig_urls() -> None:
    assert default_autoconfig_urls("example.com", "jo+jobs@example.com") == [
        "https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=jo%2Bjobs@example.com",
        "https://example.com/.well-known/autoconfig/mail/config-v1.1.xml",
    ]


# ---------------------------------------------------------------- common host names
def test_common_names_where_only_one_port_answers(mail_rig: MailRig, resolver: DnsResolver, web: Web) -> None:
    connect_to = common_names(
        "plain.test",
        imap_143=("127.0.0.1", mail_rig.ports["imap"]),
        mail_587=("127.0.0.1", mail_rig.ports["smtp_submission"]),
    )
    guess = guess_settings(
        "ann@plain.test",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=SocketProber(timeout=2, connect_to=connect_to),
        allow_private=True,
    )
    assert (guess.source, guess.provider, guess.hint, guess.username) == (
        "common host names",
        None,
        None,
        "ann@plain.test",
    )
    assert guess.imap == ServerGuess("imap.plain.test", 143, "starttls")
    assert guess.smtp == ServerGuess("mail.plain.test", 587, "starttls")
    assert reachable(guess) == [("imap", "imap.plain.test", 143), ("smtp", "mail.plain.test", 587)]
    assert len(guess.candidates) == 10
    assert len(web.asked("plain.test")) == 2  # both autoconfig places were asked first


def test_common_names_over_tls_check_the_certificate(smtps: int, resolver: DnsResolver, web: Web) -> None:
    """aiosmtpd's certificate names smtp.tls.test: under another name the same server does not count."""
    connect_to = common_names("tls.test", smtp_465=("127.0.0.1", smtps), mail_465=("127.0.0.1", smtps))
    guess = guess_settings(
        "a@tls.test",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=SocketProber(ssl_context=trusting_test_ca(), timeout=2, connect_to=connect_to),
        allow_private=True,
    )
    assert guess.source == Source.COMMON_NAMES
    assert guess.smtp == ServerGuess("smtp.tls.test", 465, "ssl") and guess.smtp_reachable
    assert reachable(guess) == [("smtp", "smtp.tls.test", 465)]  # not mail.tls.test:465
    assert guess.imap == ServerGuess("imap.tls.test", 993, "ssl") and not guess.imap_reachable


def test_a_greeting_of_the_other_protocol_does_not_count(mail_rig: MailRig) -> None:
    prober = SocketProber(timeout=2, allow_private=True)
    imap = ServerGuess("127.0.0.1", mail_rig.ports["imap"], "none")
    smtp = ServerGuess("127.0.0.1", mail_rig.ports["smtp_submission"], "none")
    assert prober.probe("imap", imap) and prober.probe("smtp", smtp)
    assert not prober.probe("smtp", imap) and not prober.probe("imap", smtp)


# ---------------------------------------------------------------- nothing answers
@pytest.fixture
def mute_dns() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        yield mute.getsockname()[1]


@pytest.mark.parametrize(("timeout", "deadline", "limit"), [(0.5, 10.0, 2.0), (5.0, 1.0, 1.6)])
def test_nothing_answers_within_the_deadline(
    silent: int, mute_dns: int, timeout: float, deadline: float, limit: float
) -> None:
    """DNS that never answers, an autoconfig server that never answers, IMAP/SMTP ports that
    accept and never greet or lead nowhere (10.255.255.1): the guess ends by the deadline."""
    blackhole, quiet = ("10.255.255.1", 993), ("127.0.0.1", silent)
    connect_to = {
        (prefix + "void.test", port): quiet if i % 2 else blackhole for i, (prefix, port) in enumerate(COMMON)
    }
    started = time.monotonic()
    guess = guess_settings(
        "a@void.test",
        resolver=DnsResolver(["127.0.0.1"], port=mute_dns, timeout=timeout),
        autoconfig_urls=lambda domain, address: [f"https://127.0.0.1:{silent}/a", f"https://127.0.0.1:{silent}/b"],
        probe=SocketProber(timeout=timeout, connect_to=connect_to),
        timeout=timeout,
        deadline=deadline,
        allow_private=True,
    )
    elapsed = time.monotonic() - started
    print(f"nothing answers: timeout {timeout} s, deadline {deadline} s -> {elapsed:.2f} s")
    assert (guess.source, guess.imap, guess.smtp) == (Source.NONE, None, None)
    assert not guess.imap_reachable and not guess.smtp_reachable
    assert len(guess.candidates) == 10 and not reachable(guess)
    assert elapsed < limit


# ---------------------------------------------------------------- addresses, answers, the table
@pytest.mark.parametrize(
    "address",
    ["", "   ", "jane", "@example.com", "jane@", "jane@localhost", "jane@192.0.2.1", "jane@[192.0.2.1]",
     "jane doe@example.com", "jane@exa mple.com", "jane@-example.com", "jane@example..com", "jane@@example.com",
     ".jane@example.com", "ja..ne@example.com", "Jane <jane@example.com>", "jane@exam\nple.com", "j\x00@example.com",
     "jane@" + "a" * 64 + ".com"],
)  # fmt: skip
def test_malformed_addresses(address: str) -> None:
    with pytest.raises(MailSettingsError) as caught:
        guess_settings(address, resolver=NoDns(), autoconfig_urls=no_autoconfig, probe=Unreachable())
    assert caught.value.field == "email"
    assert caught.value.sentence(lambda f: f"--{f}") == "--email must be an email address, like name@example.com."


def test_an_international_domain_is_looked_up_in_ascii(resolver: DnsResolver, web: Web) -> None:
    prober = Unreachable()
    guess = guess_settings(
        "jürgen@Bücher.test",
        resolver=resolver,
        http=web.session(),
        autoconfig_urls=web.urls,
        probe=prober,
        timeout=1,
        allow_private=True,
    )
    assert guess.username == "jürgen@xn--bcher-kva.test" and guess.source == Source.NONE
    assert {s.host for _, s in prober.asked} >= {"imap.xn--bcher-kva.test", "xn--bcher-kva.test"}


def test_as_json() -> None:
    guess = guess_settings("a@gmail.com", resolver=NoDns(), autoconfig_urls=no_autoconfig, probe=Unreachable())
    data = json.loads(json.dumps(guess.as_json()))
    assert data == {
        "imap": {"host": "imap.gmail.com", "port": 993, "security": "ssl"},
        "smtp": {"host": "smtp.gmail.com", "port": 587, "security": "starttls"},
        "username": "a@gmail.com",
        "source": "known provider",
        "provider": "Google",
        "hint": guess.hint,
        "imap_reachable": False,
        "smtp_reachable": False,
        "candidates": [
            {"protocol": "imap", "host": "imap.gmail.com", "port": 993, "security": "ssl",
             "source": "known provider", "reachable": False},
            {"protocol": "smtp", "host": "smtp.gmail.com", "port": 587, "security": "starttls",
             "source": "known provider", "reachable": False},
        ],
    }  # fmt: skip


def test_the_shipped_provider_table() -> None:
    table = provider_table()
    assert table.by_domain("googlemail.com") is table.by_domain("gmail.com")
    assert table.by_domain("example.com") is None
    assert table.by_mx(["contoso-com.mail.protection.outlook.com"]).name == "Microsoft 365"  # type: ignore[union-attr]
    assert table.by_mx(["outlook-com.olc.protection.outlook.com"]).name == "Outlook.com"  # type: ignore[union-attr]
    assert table.by_mx(["mx.zoho.eu"]).imap[0].host == "imappro.zoho.eu"  # type: ignore[union-attr]
    assert table.by_mx(["in1-smtp.messagingengine.com"]).name == "Fastmail"  # type: ignore[union-attr]
    assert table.by_mx(["notgoogle.com", "evilgoogle.com"]) is None  # a suffix matches whole labels only


@pytest.mark.parametrize(
    "broken",
    [
        {"a": {"domains": ["x.com"]}, "b": {"domains": ["x.com"]}},  # one domain, two providers
        {"a": {"domains": ["X.com"]}},
        {"a": {"domains": [], "imap": {"host": "imap.x.com", "port": 993, "security": "tls"}}},
        {"a": {"domains": [], "imap": {"host": "imap.x.com", "port": "993", "security": "ssl"}}},
    ],
)
def test_a_broken_table_fails_when_loaded(broken: dict[str, dict[str, object]]) -> None:
    def entry(e: dict[str, object]) -> dict[str, object]:
        return {"name": "A", "imap": None, "smtp": None, **e}

    with pytest.raises(ValueError, match="mail provider table"):
        ProviderTable({"providers": {key: entry(e) for key, e in broken.items()}, "mx": []})
