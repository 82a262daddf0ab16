"""The ``[sending]`` and ``[tracking]`` sections (docs/sending.md, docs/tracking.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from postroom.config_reading import Table, keys_of
from postroom.errors import ConfigError
from postroom.urls import is_loopback_host, redact_url

_PLAIN_ADDRESS = re.compile(r"[^\s\"<>(),;:\\@+]+@[^\s\"<>(),;:\\@]+")


@dataclass(frozen=True)
class SendingConfig:
    """How messages sent from Postroom are written.

    ``reply_address``: the processing address replies go to, plus-addressed with each
    message's reply token (``replies@example.com`` → ``replies+<token>@example.com``); empty:
    the sending account's own address. ``layout_file``: an HTML layout of the organisation's
    own (a sandboxed Jinja2 template with ``{{ body }}``); empty: the built-in one.
    """

    reply_address: str = ""
    layout_file: str = ""
    logo_url: str = ""  # shown at the top of the built-in layout; empty: none
    max_recipients: int = 1000  # To + Cc + Bcc of one message


@dataclass(frozen=True)
class TrackingConfig:
    """Where tracked messages' pixels and links point, and how hits are judged.

    ``base_url``: the public address of the tracking endpoints, which ``postroom serve``
    answers at ``/t/...``; empty: ``web.base_url``. A tracked send needs one of the two.
    ``apple_ranges_file``: Apple's Mail Privacy Protection egress ranges (one CIDR a line);
    empty: the copy ``postroom tracking-ranges update`` keeps in the data directory, else the
    snapshot shipped with Postroom."""

    base_url: str = ""
    apple_ranges_file: str = ""
    scanner_seconds: float = 2.0  # links of one copy all clicked within this of each other and of delivery: a scanner


def read_sending(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> SendingConfig:
    t, d = Table(doc, "sending", keys_of(SendingConfig), source), SendingConfig()
    reply = env.get("POSTROOM_REPLY_ADDRESS") or t.get("reply_address", str, d.reply_address)
    if reply and not _PLAIN_ADDRESS.fullmatch(reply):
        raise ConfigError(
            f"Setting sending.reply_address must be one plain address without a plus tag, such as "
            f"replies@example.com, not {reply!r}."
        )
    layout = t.get("layout_file", str, d.layout_file)
    if layout and not os.path.isfile(layout):
        raise ConfigError(f"Setting sending.layout_file names {layout}, which is not a file.")
    most = t.get("max_recipients", int, d.max_recipients)
    if not 1 <= most <= 10000:
        raise ConfigError(f"Setting sending.max_recipients must be between 1 and 10000, not {most}.")
    return SendingConfig(
        reply_address=reply.lower(),
        layout_file=layout,
        logo_url=t.get("logo_url", str, d.logo_url),
        max_recipients=most,
    )


def read_tracking(doc: Mapping[str, Any], env: Mapping[str, str], source: str, web_base_url: str) -> TrackingConfig:
    t, d = Table(doc, "tracking", keys_of(TrackingConfig), source), TrackingConfig()
    base = env.get("POSTROOM_TRACKING_BASE_URL") or t.get("base_url", str, d.base_url)
    if base:
        parts = urlsplit(base)
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.username is not None
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(
                "Setting tracking.base_url must be the public address of Postroom's tracking endpoints, such as "
                f"https://t.example.com, not {redact_url(base)!r}."
            )
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ConfigError(
                f"Setting tracking.base_url must use https (plain http only for this machine), not {base!r}."
            )
    ranges = t.get("apple_ranges_file", str, d.apple_ranges_file)
    if ranges and not os.path.isfile(ranges):
        raise ConfigError(f"Setting tracking.apple_ranges_file names {ranges}, which is not a file.")
    window = t.get("scanner_seconds", float, d.scanner_seconds)
    if not 0 <= window <= 60:
        raise ConfigError(f"Setting tracking.scanner_seconds must be between 0 and 60, not {window:g}.")
    return TrackingConfig(base_url=(base or web_base_url).rstrip("/"), apple_ranges_file=ranges, scanner_seconds=window)
