"""The ``[google]`` and ``[microsoft]`` sections: the OAuth apps mailboxes connect through,
the providers' endpoints, and their SMTP submission for tracked sends (docs/sending.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from postroom.config_reading import Table, choice, endpoint, env_list, https_url, keys_of
from postroom.errors import ConfigError
from postroom.urls import is_loopback_host


@dataclass(frozen=True)
class GoogleConfig:
    """The Google OAuth client Gmail accounts are connected through, and Google's endpoints.

    The endpoints default to Google's own; tests and the demo point them at the
    local stand-ins (http is accepted only for this machine). ``smtp_send``: the consent
    flow also asks for ``https://mail.google.com/``, which Gmail's SMTP submission
    (``smtp_host``, for tracked sends with an SMTP envelope) needs (docs/gmail.md)."""

    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    auth_uri: str = "https://accounts.google.com/o/oauth2/auth"
    token_uri: str = "https://oauth2.googleapis.com/token"
    api_root: str = "https://gmail.googleapis.com/"
    smtp_send: bool = False
    smtp_host: str = "smtp.gmail.com"
    smtp_port: int = 587
    smtp_security: str = "starttls"


@dataclass(frozen=True)
class MicrosoftConfig:
    """The Entra ID app Microsoft 365 mailboxes are connected through, and Microsoft's endpoints.

    ``authority`` defaults to ``https://login.microsoftonline.com/{tenant}``; ``tenant``
    defaults to ``organizations`` (any work or school account, no personal Microsoft
    accounts). msal and the Graph backend speak https only, so the local stand-ins run
    over TLS with a test CA (``ca_file``) and ``instance_discovery = false``. ``smtp_send``:
    the consent flow also asks for ``https://outlook.office.com/SMTP.Send``, which Exchange
    Online's SMTP submission (``smtp_host``, for tracked sends) needs (docs/microsoft.md)."""

    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    tenant: str = "organizations"
    authority: str = "https://login.microsoftonline.com/organizations"
    graph_root: str = "https://graph.microsoft.com/v1.0"
    ca_file: str | None = None  # PEM of extra CAs to trust for the authority and Graph
    instance_discovery: bool = True  # msal's check of the authority host with Microsoft
    allowed_tenants: tuple[str, ...] = ()  # tenant ids (lower-case GUIDs) that may connect; empty: any
    smtp_send: bool = False
    smtp_host: str = "smtp.office365.com"
    smtp_port: int = 587
    smtp_security: str = "starttls"


def read_google(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> GoogleConfig:
    t, d = Table(doc, "google", keys_of(GoogleConfig), source), GoogleConfig()
    values: dict[str, Any] = {}
    for key in ("client_id", "client_secret", "auth_uri", "token_uri", "api_root"):
        values[key] = env.get(f"POSTROOM_GOOGLE_{key.upper()}") or t.get(key, str, getattr(d, key))
    for key in ("auth_uri", "token_uri", "api_root"):
        endpoint(values[key], f"google.{key}")
    values["api_root"] = values["api_root"].rstrip("/") + "/"
    if values["client_secret"] and not values["client_id"]:
        raise ConfigError("Setting google.client_secret is set but google.client_id is not; set both or neither.")
    return GoogleConfig(**values, **_smtp(t, d.smtp_host))


def _smtp(t: Table, default_host: str) -> dict[str, Any]:
    """``smtp_send``, ``smtp_host``, ``smtp_port`` and ``smtp_security`` of ``[google]`` or
    ``[microsoft]``: the service's SMTP submission for tracked sends (plain text only to this
    machine, as the provider insists too)."""
    host = t.get("smtp_host", str, default_host).strip()
    security = choice(t.get("smtp_security", str, "starttls"), t.where("smtp_security"), ("ssl", "starttls", "none"))
    port = t.get("smtp_port", int, 465 if security == "ssl" else 587)
    if not host:
        raise ConfigError(f"Setting {t.where('smtp_host')} must name a host, such as {default_host}.")
    if not 0 < port < 65536:
        raise ConfigError(f"Setting {t.where('smtp_port')} must be a TCP port between 1 and 65535, not {port}.")
    if security == "none" and not is_loopback_host(host):
        raise ConfigError(
            f"Setting {t.where('smtp_security')} may be none only for this machine, not for {host}; "
            "use starttls or ssl."
        )
    return {
        "smtp_send": t.get("smtp_send", bool, False),
        "smtp_host": host,
        "smtp_port": port,
        "smtp_security": security,
    }


_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def read_microsoft(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> MicrosoftConfig:
    t, d = Table(doc, "microsoft", keys_of(MicrosoftConfig), source), MicrosoftConfig()
    values: dict[str, Any] = {}
    for key in ("client_id", "client_secret", "tenant", "authority", "graph_root", "ca_file"):
        default = "" if key in ("authority", "ca_file") else getattr(d, key)  # authority: from the tenant
        values[key] = env.get(f"POSTROOM_MICROSOFT_{key.upper()}") or t.get(key, str, default)
    if not _TENANT.fullmatch(values["tenant"]):
        raise ConfigError(
            "Setting microsoft.tenant must be a tenant id, a domain, organizations or common, "
            f"not {values['tenant']!r}."
        )
    values["authority"] = https_url(
        values["authority"] or f"https://login.microsoftonline.com/{values['tenant']}",
        "microsoft.authority",
        "https://login.microsoftonline.com/organizations",
    )
    if urlsplit(values["authority"]).path.strip("/") == "":
        raise ConfigError(
            "Setting microsoft.authority must end in a tenant, e.g. "
            f"https://login.microsoftonline.com/organizations, not {values['authority']!r}."
        )
    values["graph_root"] = https_url(values["graph_root"], "microsoft.graph_root", "https://graph.microsoft.com/v1.0")
    if values["ca_file"] and not os.path.isfile(values["ca_file"]):
        raise ConfigError(f"Setting microsoft.ca_file names {values['ca_file']}, which is not a file.")
    values["ca_file"] = values["ca_file"] or None
    if values["client_secret"] and not values["client_id"]:
        raise ConfigError("Setting microsoft.client_secret is set but microsoft.client_id is not; set both or neither.")
    values["instance_discovery"] = t.get("instance_discovery", bool, d.instance_discovery)
    values["allowed_tenants"] = _allowed_tenants(t, env, values["tenant"])
    return MicrosoftConfig(**values, **_smtp(t, d.smtp_host))


def _allowed_tenants(t: Table, env: Mapping[str, str], tenant: str) -> tuple[str, ...]:
    """``microsoft.allowed_tenants`` (or the comma-separated environment variable): tenant ids,
    never domains, because the ID token names the user's tenant by its id (``tid``) only."""
    where, items = env_list(env, "POSTROOM_MICROSOFT_ALLOWED_TENANTS", t, "allowed_tenants")
    if not isinstance(items, list):
        raise ConfigError(f"Setting microsoft.allowed_tenants must be a list of tenant ids, not {items!r}.")
    for item in items:
        if not isinstance(item, str) or not _GUID.fullmatch(item):
            raise ConfigError(
                f"{where} must list tenant ids (GUIDs such as aaaabbbb-0000-cccc-1111-dddd2222eeee), not {item!r}."
            )
    allowed = tuple(dict.fromkeys(t.lower() for t in items))
    if allowed and _GUID.fullmatch(tenant) and tenant.lower() not in allowed:
        raise ConfigError(
            f"Setting microsoft.allowed_tenants leaves out microsoft.tenant {tenant}, so nobody could connect."
        )
    return allowed
