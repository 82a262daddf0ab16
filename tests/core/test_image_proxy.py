"""The image proxy (postroom.image_proxy): signed URLs, the public-address test, and real fetches
from a local HTTP server (and an HTTPS one with a trustme certificate) on 127.0.0.1: images
pass, everything else is refused with one sentence, the connection goes to the address that was
checked, with the host's name in Host and TLS."""

from __future__ import annotations

import doctest
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

import postroom.image_proxy
from postroom.errors import UserError
from postroom.image_proxy import (
    FetchedImage,
    ImageProxyError,
    derive_key,
    fetch_image,
    is_public_address,
    sign_image_url,
    verify,
)
from web import session_key

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
KEY = derive_key("test-secret-key-0123456789abcdef")

# --------------------------------------------------------------------------------- signing


def test_signed_path_names_the_url() -> None:
    url = "https://img.example.com/a b.png?x=1&y=2#f"
    path = sign_image_url(KEY, url)
    sig, query = path.removeprefix("/img/").split("?", 1)
    assert len(sig) == 64 and int(sig, 16) >= 0
    assert parse_qs(query) == {"u": [url]}
    assert verify(KEY, sig, url)


IMAGE = "https://a.example/1.png"
SIG = sign_image_url(KEY, IMAGE).removeprefix("/img/").split("?")[0]


@pytest.mark.parametrize(
    ("what", "key", "sig", "url"),
    [
        ("another URL", KEY, SIG, "https://a.example/2.png"),
        ("another key", derive_key("another secret"), SIG, IMAGE),
        ("upper-case hex", KEY, SIG.upper(), IMAGE),
        ("truncated", KEY, SIG[:-1], IMAGE),
        ("not ASCII", KEY, "é" * 64, IMAGE),
        ("empty", KEY, "", IMAGE),
    ],
)
def test_verify_refuses(what: str, key: bytes, sig: str, url: str) -> None:
    assert verify(KEY, SIG, IMAGE)
    assert not verify(key, sig, url)


def test_key_is_derived_under_its_own_label() -> None:
    secret = "test-secret-key-0123456789abcdef"
    assert derive_key(secret) == KEY and len(KEY) == 32
    assert derive_key(secret + "x") != KEY
    assert KEY.hex() != session_key(secret) and secret.encode() not in KEY


# --------------------------------------------------------------------------------- addresses

ADDRESSES = [
    ("93.184.216.34", True),
    ("2606:4700:4700::1111", True),
    ("127.0.0.1", False),
    ("10.1.2.3", False),
    ("172.16.0.1", False),
    ("192.168.1.1", False),
    ("169.254.169.254", False),  # cloud metadata
    ("100.64.0.1", False),  # shared address space (carrier-grade NAT)
    ("0.0.0.0", False),
    ("224.0.0.1", False),
    ("240.0.0.1", False),
    ("255.255.255.255", False),
    ("::1", False),
    ("::", False),
    ("fe80::1", False),
    ("fc00::1", False),
    ("fec0::1", False),
    ("ff02::1", False),
    ("::ffff:127.0.0.1", False),  # IPv4-mapped
    ("::ffff:10.0.0.1", False),
    ("2002:7f00:1::1", False),  # 6to4 around 127.0.0.1
    ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
    ("64:ff9b::5db8:d822", True),  # NAT64 around 93.184.216.34
]


@pytest.mark.parametrize(("address", "public"), ADDRESSES)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


# --------------------------------------------------------------------------------- a local server


@dataclass
class Server:
    url: str  # http://127.0.0.1:<port>
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    routes: dict[str, Callable[[Handler], None]]
    stop: threading.Event

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))  # type: ignore[attr-defined]
        self.routes.get(urlsplit(self.path).path, lambda h: h.send_error(404))(self)

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, body: bytes, content_type: str | None, **headers: str) -> None:
        self.send_response(200)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.end_headers()


def _slow(h: Handler) -> None:
    h.stop.wait(3)
    h.answer(PNG, "image/png")


def _drip(h: Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.end_headers()
    for _ in range(30):
        if h.stop.wait(0.1):
            return
        h.wfile.write(b"x" * 10)
        h.wfile.flush()


def _stall(h: Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Content-Length", "100")
    h.end_headers()
    h.wfile.write(b"x" * 10)
    h.wfile.flush()
    h.stop.wait(3)


ROUTES: dict[str, Callable[[Handler], None]] = {
    "/ok.png": lambda h: h.answer(PNG, "image/png", Content_Length=str(len(PNG))),
    "/typed.png": lambda h: h.answer(PNG, "Image/PNG; charset=binary"),
    "/page": lambda h: h.answer(b"<script>alert(1)</script>", "text/html"),
    "/logo.svg": lambda h: h.answer(b"<svg onload=alert(1)/>", "image/svg+xml"),
    "/untyped": lambda h: h.answer(PNG, None),
    "/big.png": lambda h: h.answer(b"x" * 2000, "image/png", Content_Length="2000"),
    "/big-unsaid.png": lambda h: h.answer(b"x" * 2000, "image/png"),  # no Content-Length: read until too much
    "/lying.png": lambda h: h.answer(b"x" * 100, "image/png", Content_Length="abc"),
    "/gzip.png": lambda h: h.answer(PNG, "image/png", Content_Encoding="gzip"),
    "/missing.png": lambda h: h.send_error(404),
    "/chunked.png": lambda h: h.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (PNG[:10], PNG[10:]))
        + b"0\r\n\r\n"
    ),
    "/slow.png": _slow,
    "/drip.png": _drip,
    "/stall.png": _stall,
    "/short.png": lambda h: h.answer(b"x" * 10, "image/png", Content_Length="100"),
    "/redirect": lambda h: h.redirect(parse_qs(urlsplit(h.path).query)["to"][0]),
    "/relative": lambda h: h.redirect("ok.png", 301),
    "/loop": lambda h: h.redirect("/loop"),
    "/nowhere": lambda h: h.send_response(302) or h.end_headers(),
}


def _serve(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    stop = threading.Event()
    handler = type("RouteHandler", (Handler,), {"routes": ROUTES, "stop": stop})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    server = Server(f"{'https' if context else 'http'}://127.0.0.1:{port}", port)
    httpd.seen = server.seen  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve()


def fetch(url: str, **kwargs: object) -> FetchedImage:
    return fetch_image(url, allow_private=True, **kwargs)  # type: ignore[arg-type]


def test_an_image_is_fetched(server: Server) -> None:
    assert fetch(server.url + "/ok.png") == FetchedImage("image/png", PNG)
    assert fetch(server.url + "/typed.png").content_type == "image/png"
    assert fetch(server.url + "/chunked.png").body == PNG
    assert server.seen == [(p, f"127.0.0.1:{server.port}") for p in ("/ok.png", "/typed.png", "/chunked.png")]


def test_redirects_are_followed(server: Server) -> None:
    assert fetch(f"{server.url}/redirect?to={server.url}/relative").body == PNG
    assert [path for path, _ in server.seen] == [f"/redirect?to={server.url}/relative", "/relative", "/ok.png"]


REFUSED = [
    ("/page", "sent text/html, not an image"),
    ("/logo.svg", r"sent image/svg\+xml, not an image"),
    ("/untyped", "sent no type"),
    ("/big.png", "larger than 1000 bytes"),
    ("/big-unsaid.png", "larger than 1000 bytes"),
    ("/gzip.png", "compressed"),
    ("/lying.png", "malformed Content-Length"),
    ("/missing.png", "answered 404"),
    ("/loop", "redirects more than 3 times"),
    ("/nowhere", "redirected without saying where"),
    ("/redirect?to=file:///etc/passwd", "Only http and https"),
    ("/redirect?to=javascript:alert(1)", "Only http and https"),
    ("/slow.png", "did not answer within 0.5 seconds"),
    ("/drip.png", "did not answer within 0.5 seconds"),
    ("/stall.png", "did not answer within 0.5 seconds"),
    ("/short.png", "could not be fetched from 127.0.0.1"),
]


@pytest.mark.parametrize(("path", "sentence"), REFUSED, ids=[p for p, _ in REFUSED])
def test_refused(server: Server, path: str, sentence: str) -> None:
    start = time.monotonic()
    with pytest.raises(ImageProxyError, match=sentence) as refusal:
        fetch(server.url + path, max_bytes=1000, timeout=0.5)
    assert time.monotonic() - start < 2
    assert isinstance(refusal.value, UserError) and str(refusal.value).endswith(".")


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        ("ftp://127.0.0.1/a.png", "Only http and https"),
        ("data:image/png;base64,AAAA", "Only http and https"),
        ("http://user:pw@127.0.0.1/a.png", "user name or password"),
        ("http://127.0.0.1:99999/a.png", "malformed"),
        ("http:///a.png", "Only http and https"),
        ("https://" + "a" * 5000 + ".example/", "longer than 4096"),
        ("http://no-such-host.invalid/a.png", "could not be found"),
    ],
)
def test_urls_refused_before_any_connection(url: str, sentence: str) -> None:
    with pytest.raises(ImageProxyError, match=sentence):
        fetch(url)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "2130706433", "0x7f.1"])
def test_private_addresses_are_refused(server: Server, host: str) -> None:
    with pytest.raises(ImageProxyError, match="private address"):
        fetch_image(f"http://{host}:{server.port}/ok.png")
    assert server.seen == []


def test_a_redirect_to_a_private_address_is_refused(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own address passes as public here; the hop it redirects to (another loopback
    address) is checked afresh and refused before any connection."""
    monkeypatch.setattr(postroom.image_proxy, "is_public_address", lambda a: str(a) == "127.0.0.1")
    assert fetch_image(server.url + "/ok.png").body == PNG
    with pytest.raises(ImageProxyError, match=r"127\.0\.0\.2 is a private address"):
        fetch_image(f"{server.url}/redirect?to=http://127.0.0.2:{server.port}/ok.png")
    assert [path for path, _ in server.seen] == ["/ok.png", f"/redirect?to=http://127.0.0.2:{server.port}/ok.png"]


def test_one_private_address_among_public_ones_is_refused() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(ImageProxyError, match="private address"):
        fetch_image("http://images.example.test/a.png", resolve=resolve)


def test_the_connection_goes_to_the_checked_address(server: Server) -> None:
    """The name is resolved once (by the resolver given); the request then goes to that address
    with the name in Host, so a second DNS answer could not send it elsewhere."""
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    assert fetch(f"http://images.example.test:{server.port}/ok.png", resolve=resolve).body == PNG
    assert asked == [("images.example.test", server.port)]
    assert server.seen == [("/ok.png", f"images.example.test:{server.port}")]


# --------------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(authority: trustme.CA) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("images.example.test").configure_cert(context)
    yield from _serve(context)


def test_https_names_the_host_in_sni_and_checks_its_certificate(
    tls_server: Server, authority: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))

    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    url = f"https://images.example.test:{tls_server.port}/ok.png"
    assert fetch(url, resolve=resolve, ca_bundle=str(bundle)).body == PNG
    assert tls_server.seen == [("/ok.png", f"images.example.test:{tls_server.port}")]
    with pytest.raises(ImageProxyError, match=r"certificate is not valid for other\.example\.test"):
        fetch(f"https://other.example.test:{tls_server.port}/ok.png", resolve=resolve, ca_bundle=str(bundle))
    with pytest.raises(ImageProxyError, match="certificate is not valid"):  # not trusted without the test CA
        fetch(url, resolve=resolve)


def test_doctests() -> None:
    assert doctest.testmod(postroom.image_proxy).failed == 0
