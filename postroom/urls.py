"""Hosts and URLs as Postroom judges and shows them: "is this machine?", and a URL without its password."""

from __future__ import annotations

import ipaddress
import re


def is_loopback_host(host: str) -> bool:
    """True for names that can only mean this machine: ``localhost`` (any case; RFC 6761
    reserves it) and loopback addresses (127.0.0.0/8, ``::1``, ``::ffff:127.0.0.1``), an IPv6
    address also in URL brackets (``[::1]``). The one test of "this machine" for plaintext
    IMAP/SMTP, http OAuth endpoints and the web server's bind address. Anything else is
    False, including names that merely tend to resolve here: ``localhost.localdomain`` is
    an /etc/hosts convention, not a reserved name, so DNS may send it anywhere.

    >>> [is_loopback_host(h) for h in ("localhost", "127.0.0.2", "[::1]", "localhost.localdomain")]
    [True, True, True, False]
    """
    if host.lower() == "localhost":
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # Python < 3.13 calls ::ffff:127.0.0.1 not loopback
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


# password-like parameters in a query string or a libpq "key=value" string, quoted or not
_SECRET_QUERY = re.compile(
    r"(?i)((?:^|[?&;\s])(?:[\w.-]*pass(?:word|wd)?|pwd|[\w.-]*secret|[\w.-]*token)\s*=\s*)"  # the name
    r"(?:'(?:[^'\\]|\\.)*'?|[^&;#\s]*)"  # the value
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for every message that shows a URL.

    Works on URLs no parser accepts too (a missing ``//``, a bad port, an unescaped
    ``/``, ``:`` or ``@`` in the password): if in doubt it hides more, never less. Query
    parameters that carry a password (``?password=``, ``sslpassword=``, ...) are hidden."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")  # the userinfo runs to the last @, whatever the password holds
    if sep:
        colon = rest.find(":", 0, at)
    else:  # "postgresql//bob:pw@db", "bob:pw@db": the password follows the first ":" of the last segment
        scheme, rest, at = "", url, url.rfind("@")
        colon = rest.find(":", rest.rfind("/", 0, at) + 1, at)
        if colon < 0:
            colon = rest.find(":", 0, at)
    if at >= 0 and colon >= 0:
        rest = f"{rest[: colon + 1]}***{rest[at:]}"
    return scheme + sep + _SECRET_QUERY.sub(r"\1***", rest)
