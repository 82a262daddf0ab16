"""Remote images in mail, shown through Postroom rather than fetched by the reader's browser.

A remote image tells its sender when and where a message was read (the tracking pixel), and
an ``<img>`` may point anywhere, including at the reader's intranet. So the mail view shows
no remote image by default (:mod:`postroom.safe_html`), and when the reader asks for images,
each ``src`` becomes a signed path of Postroom's own, as GitHub's camo does:

    /img/<hex HMAC-SHA256 of the URL>?u=<the URL, percent-encoded>

Only URLs Postroom signed are fetched, so the route is no open proxy. The key is derived from
``security.secret_key`` under a label of its own (:func:`derive_key`), so it reveals nothing
of the session or credential keys.

:func:`fetch_image` fetches with the same caution a server owes any URL a stranger chose:

* only http and https, no user name or password in the URL, at most :data:`MAX_URL` long;
* the host is resolved once and *every* address it resolves to must be public (not private,
  loopback, link-local, multicast, reserved, unspecified or shared, nor such an IPv4 address
  inside IPv6: mapped, 6to4, Teredo, NAT64). The connection then goes to the address that
  was checked, so DNS cannot answer differently a moment later (rebinding): the request is
  sent to ``http(s)://<address>:<port>`` with the original ``Host`` header, and for https,
  urllib3's ``server_hostname`` makes TLS send the host name (SNI) and verify the
  certificate against it, not against the address;
* no proxy, ``.netrc`` or cookies from the environment (``trust_env`` off);
* redirects are followed by hand, at most :data:`MAX_REDIRECTS`, each hop checked the same;
* the answer must be 200, with a Content-Type of :data:`IMAGE_TYPES` (never SVG, which
  can carry script), no Content-Encoding (no decompression bomb), and at most ``max_bytes``;
  reading stops as soon as it is over;
* the whole fetch, redirects included, has one deadline (``timeout`` seconds; a read in
  progress may overrun it by up to one read timeout). Resolving a name uses the system
  resolver, whose own timeout applies.

Every refusal raises :class:`ImageProxyError` with one sentence.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from postroom.errors import UserError

__all__ = [
    "IMAGE_TYPES",
    "MAX_BYTES",
    "MAX_REDIRECTS",
    "MAX_URL",
    "PATH",
    "FetchedImage",
    "ImageProxyError",
    "derive_key",
    "fetch_image",
    "is_public_address",
    "sign_image_url",
    "verify",
]

PATH = "/img/"
MAX_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 3
MAX_URL = 4096
IMAGE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp", "image/x-icon",
})  # fmt: skip
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HEADERS = {"User-Agent": "Postroom image proxy", "Accept": "image/*", "Accept-Encoding": "identity"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


class ImageProxyError(UserError):
    """An image the proxy will not fetch or serve: a URL it may not visit, a server that fails
    or is too slow, an answer that is not an acceptable image. The message says which."""


@dataclass(frozen=True)
class FetchedImage:
    content_type: str  # one of IMAGE_TYPES
    body: bytes


def derive_key(secret_key: str) -> bytes:
    """The image proxy's signing key, derived from ``security.secret_key`` under its own label."""
    return hmac.new(secret_key.encode("utf-8"), b"postroom image proxy v1", hashlib.sha256).digest()


def _signature(key: bytes, url: str) -> str:
    return hmac.new(key, url.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def sign_image_url(key: bytes, url: str) -> str:
    """The proxy path that shows ``url``.

    >>> sign_image_url(b"k" * 32, "https://img.example.com/a b.png?x=1&y=2")  # doctest: +ELLIPSIS
    '/img/...?u=https%3A%2F%2Fimg.example.com%2Fa%20b.png%3Fx%3D1%26y%3D2'
    """
    return f"{PATH}{_signature(key, url)}?u={quote(url, safe='')}"


def verify(key: bytes, sig: str, url: str) -> bool:
    """Whether ``sig`` is the signature of ``url`` under ``key`` (compared in constant time)."""
    return hmac.compare_digest(_signature(key, url).encode(), sig.encode("utf-8", "replace"))


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is one a fetch may go to: a global unicast address, and no private
    IPv4 address inside an IPv6 one.

    >>> [is_public_address(ipaddress.ip_address(a)) for a in ("93.184.216.34", "10.0.0.1", "::ffff:127.0.0.1")]
    [True, False, False]
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:  # an IPv4 address seen from an IPv6-only network
            return is_public_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if address.is_site_local or any(e is not None and not is_public_address(e) for e in embedded):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass(frozen=True)
class _Target:
    """One hop: where to connect, and the names the server must see."""

    url: str  # where the request goes: the URL with the address that was checked for its host
    host: str  # the host name (ASCII), for SNI and the certificate
    host_header: str  # the host name and port, as the Host header names them

    @classmethod
    def check(cls, url: str, resolve: Resolver, allow_private: bool) -> _Target:
        if len(url) > MAX_URL:
            raise ImageProxyError(f"The image URL is longer than {MAX_URL} characters.")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ImageProxyError("The image URL is malformed.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageProxyError("Only http and https images are fetched.")
        if parts.username is not None or parts.password is not None:
            raise ImageProxyError("Image URLs with a user name or password are not fetched.")
        try:
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise ImageProxyError(f"The image's host name {parts.hostname!r} is not valid.") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            pinned, header = pin_address(parts.scheme, host, port, path, resolve, allow_private)
        except UnreachableHost as exc:
            if exc.private:
                raise ImageProxyError(f"The image's host {host} is a private address, which is not fetched.") from None
            raise ImageProxyError(f"The image's host {host} could not be found.") from None
        return cls(pinned, host, header)


class UnreachableHost(ValueError):
    """A host that cannot be found, or (``private``) that resolves to an address that is not public."""

    def __init__(self, host: str, private: bool) -> None:
        super().__init__(host)
        self.host, self.private = host, private


def pin_address(
    scheme: str, host: str, port: int, path: str, resolve: Resolver, allow_private: bool
) -> tuple[str, str]:
    """Resolve ``host`` once and check every address (public ones only, unless ``allow_private``):
    the URL to connect to — with the first checked address in place of the name, so a second
    lookup (DNS rebinding) cannot change where the request goes — and the Host header that names
    the host. Shared by the image proxy and webhook deliveries; raises :class:`UnreachableHost`."""
    try:
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
    except (OSError, UnicodeError, ValueError):
        raise UnreachableHost(host, private=False) from None
    if not addresses:
        raise UnreachableHost(host, private=False)
    if not allow_private and not all(is_public_address(a) for a in addresses):
        raise UnreachableHost(host, private=True)
    first = addresses[0]
    netloc = f"[{first}]" if first.version == 6 else str(first)
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}:{port}{path}", shown if port == default else f"{shown}:{port}"


class _PinnedAdapter(HTTPAdapter):
    """requests' adapter whose TLS names ``host`` (SNI, certificate check) whatever address the
    URL holds."""

    def __init__(self, host: str) -> None:
        self._host = host  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: object) -> None:
        super().init_poolmanager(connections, maxsize, block, server_hostname=self._host, **pool_kwargs)


def fetch_image(
    url: str,
    *,
    max_bytes: int = MAX_BYTES,
    timeout: float = 5.0,
    allow_private: bool = False,
    resolve: Resolver | None = None,
    ca_bundle: str | None = None,
) -> FetchedImage:
    """Fetch the image at ``url`` as the module docstring says, or raise :class:`ImageProxyError`.

    ``allow_private`` lets tests fetch from 127.0.0.1; ``resolve(host, port)`` (the system
    resolver by default) and ``ca_bundle`` (certifi's by default) let them name a local
    server and trust its certificate."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        target = _Target.check(url, resolve or _system_resolver, allow_private)
        with requests.Session() as session:
            session.trust_env = False
            session.mount(target.url.split(":", 1)[0] + "://", _PinnedAdapter(target.host))
            answer = _fetch(session, target, deadline, timeout, max_bytes, ca_bundle)
        if isinstance(answer, FetchedImage):
            return answer
        url = urljoin(url, answer)
    raise ImageProxyError(f"The image redirects more than {MAX_REDIRECTS} times.")


def _fetch(
    session: requests.Session, target: _Target, deadline: float, timeout: float, max_bytes: int, ca: str | None
) -> FetchedImage | str:
    """One hop: the image, or where it redirects to."""
    try:
        remaining = max(deadline - time.monotonic(), 0.001)
        headers = {**_HEADERS, "Host": target.host_header}
        with session.get(
            target.url, headers=headers, stream=True, allow_redirects=False, timeout=remaining, verify=ca or True
        ) as response:
            if response.status_code in _REDIRECTS:
                if not response.headers.get("Location"):
                    raise ImageProxyError("The image server redirected without saying where to.")
                return response.headers["Location"]
            if response.status_code != 200:
                raise ImageProxyError(f"The image server answered {response.status_code} instead of the image.")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type not in IMAGE_TYPES:
                raise ImageProxyError(f"The image server sent {content_type or 'no type'}, not an image it may send.")
            if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                raise ImageProxyError("The image server sent the image compressed, which is not accepted.")
            if _length(response.headers.get("Content-Length")) > max_bytes:
                raise ImageProxyError(f"The image is larger than {max_bytes} bytes.")
            body = bytearray()
            while chunk := response.raw.read1(64 * 1024, decode_content=False):  # what one recv gives
                body += chunk
                if len(body) > max_bytes:
                    raise ImageProxyError(f"The image is larger than {max_bytes} bytes.")
                if time.monotonic() > deadline:
                    raise requests.Timeout()
            return FetchedImage(content_type, bytes(body))
    except requests.exceptions.SSLError:
        raise ImageProxyError(f"The image server's certificate is not valid for {target.host}.") from None
    except (requests.Timeout, requests.ConnectionError, urllib3.exceptions.ReadTimeoutError) as exc:
        if time.monotonic() >= deadline or not isinstance(exc, requests.ConnectionError):
            raise ImageProxyError(f"The image server did not answer within {timeout:g} seconds.") from None
        raise ImageProxyError(f"The image server {target.host} could not be reached.") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):  # the body is read from urllib3
        raise ImageProxyError(f"The image could not be fetched from {target.host}.") from None


def _length(header: str | None) -> int:
    """A Content-Length header's value, 0 if absent."""
    try:
        return int(header or 0)
    except ValueError:
        raise ImageProxyError("The image server sent a malformed Content-Length.") from None
