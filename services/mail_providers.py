"""What is published about mail providers' servers, parsed: Postroom's built-in table of the big
providers (``postroom/data/mail_providers.json``), found by an address's domain or by the MX hosts
of a custom domain they host, and a domain's own Thunderbird autoconfig document. No I/O beyond
reading the packaged table; :mod:`services.mail_settings` fetches, probes and decides.

>>> table = provider_table()
>>> table.by_domain("googlemail.com").imap
(ServerGuess(host='imap.gmail.com', port=993, security='ssl'),)
>>> table.by_mx(["mx.acme.example", "aspmx.l.google.com"]).name
'Google Workspace'
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, NoReturn
from xml.etree import ElementTree as ET
from xml.parsers import expat

__all__ = ["SECURITY_MODES", "ProviderServers", "ProviderTable", "ServerGuess", "parse_autoconfig", "provider_table"]

SECURITY_MODES = ("ssl", "starttls", "none")  # as the connect form takes them (services.accounts)
_SOCKET_TYPES = {"ssl": "ssl", "tls": "ssl", "starttls": "starttls", "plain": "none"}  # autoconfig's socketType
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class ServerGuess:
    """One server to connect to: ``ServerGuess("imap.example.com", 993, "ssl")``.

    ``security``: "ssl" (TLS from the start), "starttls" (upgraded after the greeting) or
    "none" (no TLS at all)."""

    host: str
    port: int
    security: str


@dataclass(frozen=True)
class ProviderServers:
    """The servers one source names, in order of preference; empty: it offers no such access."""

    name: str | None
    imap: tuple[ServerGuess, ...]
    smtp: tuple[ServerGuess, ...]
    username: str = "%EMAILADDRESS%"  # a template: %EMAILADDRESS%, %EMAILLOCALPART%, %EMAILDOMAIN%
    hint: str | None = None

    def username_for(self, address: str) -> str:
        """The username for ``address``; the address itself when the template cannot be filled."""
        username = fill(self.username, address)
        return address if not username or "%" in username or any(c.isspace() for c in username) else username


def fill(template: str, address: str) -> str:
    """Thunderbird's placeholders filled in for ``address``."""
    local, _, domain = address.rpartition("@")
    for placeholder, value in (("%EMAILADDRESS%", address), ("%EMAILLOCALPART%", local), ("%EMAILDOMAIN%", domain)):
        template = template.replace(placeholder, value)
    return template


def is_host_name(host: str) -> bool:
    """``host`` is a DNS name of letters, digits and hyphens (lower-case, ASCII)."""
    return len(host) <= 253 and all(_LABEL_RE.fullmatch(label) for label in host.split("."))


class ProviderTable:
    """Look-ups in the table; the data is checked when it is loaded, so a typo fails at once."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        providers = {key: _provider(key, entry) for key, entry in data["providers"].items()}
        self._domains: dict[str, ProviderServers] = {}
        for key, entry in data["providers"].items():
            for domain in entry["domains"]:
                if not is_host_name(domain) or domain in self._domains:
                    raise ValueError(f"mail provider table: domain {domain!r} is repeated or not lower-case")
                self._domains[domain] = providers[key]
        mx: list[tuple[str, ProviderServers]] = []
        for entry in data["mx"]:
            base = providers[entry["provider"]]
            provider = replace(base, name=entry.get("name", base.name), hint=entry.get("hint", base.hint))
            mx.append((entry["suffix"].lower(), provider))
        self._mx = sorted(mx, key=lambda item: -len(item[0]))  # the most specific suffix first

    def by_domain(self, domain: str) -> ProviderServers | None:
        """The provider of addresses at ``domain`` (lower-case, ASCII), if it is in the table."""
        return self._domains.get(domain)

    def by_mx(self, hosts: Iterable[str]) -> ProviderServers | None:
        """The provider that hosts a domain with these MX hosts (most preferred first), if any."""
        for host in hosts:
            host = host.lower().rstrip(".")
            for suffix, provider in self._mx:
                if host == suffix or host.endswith("." + suffix):
                    return provider
        return None


def _server(key: str, entry: Mapping[str, Any] | None) -> tuple[ServerGuess, ...]:
    if entry is None:
        return ()
    host, port, security = entry["host"], entry["port"], entry["security"]
    if not (isinstance(host, str) and host and type(port) is int and 0 < port < 65536 and security in SECURITY_MODES):
        raise ValueError(f"mail provider table: {key} has a malformed server {dict(entry)!r}")
    return (ServerGuess(host, port, security),)


def _provider(key: str, entry: Mapping[str, Any]) -> ProviderServers:
    imap, smtp = _server(key, entry["imap"]), _server(key, entry["smtp"])
    return ProviderServers(entry["name"], imap, smtp, entry.get("username", "%EMAILADDRESS%"), entry.get("hint"))


@functools.cache
def provider_table() -> ProviderTable:
    """The table shipped with Postroom (read once)."""
    text = (resources.files("postroom") / "data" / "mail_providers.json").read_text("utf-8")
    return ProviderTable(json.loads(text))


def _parse_xml(data: bytes) -> ET.Element:
    """ElementTree on expat, refusing any DTD: no entities to expand, nothing external to fetch
    (what defusedxml does, without depending on it)."""

    def refuse(*_: Any) -> NoReturn:
        raise ValueError("an autoconfig document has no DTD")

    builder, parser = ET.TreeBuilder(), expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.Parse(data, True)
    return builder.close()


def _autoconfig_server(element: ET.Element, address: str) -> ServerGuess | None:
    host = fill((element.findtext("hostname") or "").strip(), address).lower()
    port = (element.findtext("port") or "").strip()
    security = _SOCKET_TYPES.get((element.findtext("socketType") or "").strip().lower())
    if not (is_host_name(host) and port.isdigit() and 0 < int(port) < 65536 and security):
        return None
    return ServerGuess(host, int(port), security)


def parse_autoconfig(data: bytes, address: str) -> ProviderServers | None:
    """The IMAP and SMTP servers of a Thunderbird autoconfig document (``config-v1.1.xml``), in
    its order, host names filled in for ``address``; None for anything else (malformed, a DTD,
    no usable server). Servers with a malformed host name, port or socketType are left out.

    >>> doc = b'''<clientConfig version="1.1"><emailProvider id="example.com">
    ...   <incomingServer type="imap"><hostname>mail.%EMAILDOMAIN%</hostname><port>993</port>
    ...     <socketType>SSL</socketType><username>%EMAILLOCALPART%</username></incomingServer>
    ... </emailProvider></clientConfig>'''
    >>> servers = parse_autoconfig(doc, "jo@example.com")
    >>> servers.imap, servers.smtp, servers.username_for("jo@example.com")
    ((ServerGuess(host='mail.example.com', port=993, security='ssl'),), (), 'jo')
    """
    try:
        root = _parse_xml(data)
    except (expat.ExpatError, ValueError):
        return None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        return None
    incoming = provider.findall("incomingServer[@type='imap']")
    outgoing = provider.findall("outgoingServer[@type='smtp']")
    imap = tuple(s for s in (_autoconfig_server(e, address) for e in incoming) if s)
    smtp = tuple(s for s in (_autoconfig_server(e, address) for e in outgoing) if s)
    if not imap and not smtp:
        return None
    username = next((text.strip() for e in incoming + outgoing if (text := e.findtext("username"))), "")
    name = (provider.findtext("displayName") or "").strip()[:100] or None
    return ProviderServers(name, imap, smtp, username)
