"""Configuration: parsed once from TOML into frozen dataclasses and passed in.

Sources, later ones winning:

1. built-in defaults (the embedded mode: SQLite in a data directory);
2. the TOML file named by ``--config`` or ``POSTROOM_CONFIG`` (if any);
3. a few environment overrides (``POSTROOM_DATABASE_URL``, ``POSTROOM_SECRET_KEY``,
   ``POSTROOM_DATA_DIR``, ``POSTROOM_SYNC_INTERVAL``, ``POSTROOM_LOG_LEVEL``,
   ``POSTROOM_GOOGLE_CLIENT_ID``, ``POSTROOM_GOOGLE_CLIENT_SECRET``,
   ``POSTROOM_MICROSOFT_CLIENT_ID``, ``POSTROOM_MICROSOFT_CLIENT_SECRET``, ...).

Nothing here reads the environment at import time; :func:`load_config` takes
the environment as an argument. Every problem raises :class:`ConfigError` with
one sentence that names the setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from postroom.private_files import private_dir, tighten

BODY_POLICIES = ("applicants", "all", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """A setting is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    echo: bool = False


@dataclass(frozen=True)
class SecurityConfig:
    secret_key: str = field(repr=False)
    # keys stored credentials may still be sealed under (readable, never used to seal); see docs/security.md
    previous_keys: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class SyncConfig:
    interval: float = 120.0  # seconds between two syncs of one account
    body_policy: str = "applicants"  # which bodies to fetch and keep
    batch_size: int = 500  # messages per header batch and per transaction
    connect_timeout: float = 30.0
    concurrency: int = 8  # accounts one worker process syncs at the same time (threads)
    jitter: float = 0.1  # due times spread by ±10 % of the interval
    lease_seconds: float = 600.0  # a worker's hold on an account; renewed while it syncs
    backoff_base: float = 30.0  # first retry after a transient failure
    backoff_max: float = 3600.0  # cap on the exponential backoff
    max_message_size: int = 50 * 1024 * 1024  # bytes; larger bodies are not fetched or stored
    body_chunk_bytes: int = 16 * 1024 * 1024  # bodies fetched together, by the sizes the index knows


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str = "redis://127.0.0.1:6379/0"
    dispatch_interval: float = 15.0  # seconds between two beat dispatches of due accounts


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 0  # Prometheus metrics of a worker process; 0 = off
    host: str = "127.0.0.1"
    token: str = field(default="", repr=False)  # if set, scrapes must send Authorization: Bearer <token>
    web_endpoint: bool = True  # the web app's /metrics; off: metrics only on the workers' port


@dataclass(frozen=True)
class WebConfig:
    base_url: str = ""  # the address users open, e.g. https://postroom.example.com; "" = as the request says
    trusted_proxies: int = 0  # reverse proxies in front of the web app whose X-Forwarded-* headers are trusted


@dataclass(frozen=True)
class StorageConfig:
    blob_dir: Path


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True)
class ImapDefaults:
    allow_plaintext: bool = False  # allow security=none to non-loopback hosts
    ca_file: str | None = None


@dataclass(frozen=True)
class GoogleConfig:
    """The Google OAuth client Gmail accounts are connected through, and Google's endpoints.

    The endpoints default to Google's own; tests and the demo point them at the
    local stand-ins (http is accepted only for this machine)."""

    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    auth_uri: str = "https://accounts.google.com/o/oauth2/auth"
    token_uri: str = "https://oauth2.googleapis.com/token"
    api_root: str = "https://gmail.googleapis.com/"


@dataclass(frozen=True)
class MicrosoftConfig:
    """The Entra ID app Microsoft 365 mailboxes are connected through, and Microsoft's endpoints.

    ``authority`` defaults to ``https://login.microsoftonline.com/{tenant}``; ``tenant``
    defaults to ``organizations`` (any work or school account, no personal Microsoft
    accounts). msal and the Graph backend speak https only, so the local stand-ins run
    over TLS with a test CA (``ca_file``) and ``instance_discovery = false``."""

    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    tenant: str = "organizations"
    authority: str = "https://login.microsoftonline.com/organizations"
    graph_root: str = "https://graph.microsoft.com/v1.0"
    ca_file: str | None = None  # PEM of extra CAs to trust for the authority and Graph
    instance_discovery: bool = True  # msal's check of the authority host with Microsoft
    allowed_tenants: tuple[str, ...] = ()  # tenant ids (lower-case GUIDs) that may connect; empty: any


@dataclass(frozen=True)
class Config:
    data_dir: Path
    database: DatabaseConfig
    security: SecurityConfig
    sync: SyncConfig
    storage: StorageConfig
    logging: LoggingConfig
    imap: ImapDefaults
    celery: CeleryConfig = field(default_factory=CeleryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    google: GoogleConfig = field(default_factory=GoogleConfig)
    microsoft: MicrosoftConfig = field(default_factory=MicrosoftConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str = "defaults"  # where the settings came from, for messages


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


def default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("POSTROOM_DATA_DIR"):
        return Path(env["POSTROOM_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "."), ".local", "share")
    return Path(base) / "postroom"


def _section(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"Setting [{name}] must be a table.")
    return value


def _get(sec: Mapping[str, Any], section: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in sec:
        return default
    value = sec[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"Setting {section}.{key} must be a {want}, not {value!r}.")
    return value


def _choice(value: str, section: str, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"Setting {section}.{key} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    if name not in env:
        return default
    try:
        return float(env[name])
    except ValueError:
        raise ConfigError(f"Environment variable {name} must be a number of seconds, not {env[name]!r}.") from None


def is_loopback_host(host: str) -> bool:
    """True for names that can only mean this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _endpoint(value: str, section: str, key: str) -> str:
    """An https URL, or http for this machine only (the local stand-ins)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"Setting {section}.{key} must be an https URL, not {value!r}.")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(f"Setting {section}.{key} must use https (plain http only for this machine), not {value!r}.")
    return value


def _google(doc: Mapping[str, Any], env: Mapping[str, str]) -> GoogleConfig:
    g = _section(doc, "google")
    defaults = GoogleConfig()
    values: dict[str, str] = {}
    for key in ("client_id", "client_secret", "auth_uri", "token_uri", "api_root"):
        values[key] = env.get(f"POSTROOM_GOOGLE_{key.upper()}") or _get(g, "google", key, str, getattr(defaults, key))
    for key in ("auth_uri", "token_uri", "api_root"):
        _endpoint(values[key], "google", key)
    values["api_root"] = values["api_root"].rstrip("/") + "/"
    if values["client_secret"] and not values["client_id"]:
        raise ConfigError("Setting google.client_secret is set but google.client_id is not; set both or neither.")
    return GoogleConfig(**values)


_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")


def _https(value: str, section: str, key: str, example: str) -> str:
    """An https URL with a path: msal and the Graph backend refuse anything else (even on loopback)."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"Setting {section}.{key} must be an https URL such as {example}, not {value!r}.")
    return value.rstrip("/")


def _microsoft(doc: Mapping[str, Any], env: Mapping[str, str]) -> MicrosoftConfig:
    m = _section(doc, "microsoft")
    defaults = MicrosoftConfig()
    values: dict[str, Any] = {}
    for key in ("client_id", "client_secret", "tenant", "authority", "graph_root", "ca_file"):
        default = "" if key in ("authority", "ca_file") else getattr(defaults, key)
        values[key] = env.get(f"POSTROOM_MICROSOFT_{key.upper()}") or _get(m, "microsoft", key, str, default)
    if not _TENANT.fullmatch(values["tenant"]):
        raise ConfigError(
            "Setting microsoft.tenant must be a tenant id, a domain, organizations or common, "
            f"not {values['tenant']!r}."
        )
    values["authority"] = _https(
        values["authority"] or f"https://login.microsoftonline.com/{values['tenant']}",
        "microsoft",
        "authority",
        "https://login.microsoftonline.com/organizations",
    )
    if urlsplit(values["authority"]).path.strip("/") == "":
        raise ConfigError(
            "Setting microsoft.authority must end in a tenant, e.g. "
            f"https://login.microsoftonline.com/organizations, not {values['authority']!r}."
        )
    values["graph_root"] = _https(values["graph_root"], "microsoft", "graph_root", "https://graph.microsoft.com/v1.0")
    if values["ca_file"] and not os.path.isfile(values["ca_file"]):
        raise ConfigError(f"Setting microsoft.ca_file names {values['ca_file']}, which is not a file.")
    values["ca_file"] = values["ca_file"] or None
    if values["client_secret"] and not values["client_id"]:
        raise ConfigError("Setting microsoft.client_secret is set but microsoft.client_id is not; set both or neither.")
    values["instance_discovery"] = _get(m, "microsoft", "instance_discovery", bool, True)
    values["allowed_tenants"] = _allowed_tenants(m, env, values["tenant"])
    return MicrosoftConfig(**values)


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _allowed_tenants(m: Mapping[str, Any], env: Mapping[str, str], tenant: str) -> tuple[str, ...]:
    """``microsoft.allowed_tenants`` (or the comma-separated environment variable): tenant ids,
    never domains, because the ID token names the user's tenant by its id (``tid``) only."""
    where, items = "Setting microsoft.allowed_tenants", m.get("allowed_tenants", [])
    if env.get("POSTROOM_MICROSOFT_ALLOWED_TENANTS"):
        where = "Environment variable POSTROOM_MICROSOFT_ALLOWED_TENANTS"
        items = [t.strip() for t in env["POSTROOM_MICROSOFT_ALLOWED_TENANTS"].split(",") if t.strip()]
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


def _previous_keys(sec: Mapping[str, Any], env: Mapping[str, str], key: str) -> tuple[str, ...]:
    """``security.previous_keys`` (or comma-separated ``POSTROOM_PREVIOUS_SECRET_KEYS``): keys
    credentials may still be sealed under while ``postroom keys rotate`` re-seals them."""
    where, items = "Setting security.previous_keys", sec.get("previous_keys", [])
    if env.get("POSTROOM_PREVIOUS_SECRET_KEYS"):
        where = "Environment variable POSTROOM_PREVIOUS_SECRET_KEYS"
        items = [k.strip() for k in env["POSTROOM_PREVIOUS_SECRET_KEYS"].split(",") if k.strip()]
    if not isinstance(items, list) or not all(isinstance(k, str) and len(k) >= 16 for k in items):
        raise ConfigError(f"{where} must be a list of keys, each at least 16 characters long.")
    return tuple(k for k in dict.fromkeys(items) if k != key)


def _web(doc: Mapping[str, Any], env: Mapping[str, str]) -> WebConfig:
    w = _section(doc, "web")
    base_url = env.get("POSTROOM_BASE_URL") or _get(w, "web", "base_url", str, "")
    if base_url:
        parts = urlsplit(base_url)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or not port_ok
            or parts.username is not None
            or parts.path.strip("/")
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(
                "Setting web.base_url must be the address users open, such as https://postroom.example.com "
                f"(scheme, host and port only), not {redact_url(base_url)!r}."
            )
        base_url = f"{parts.scheme}://{parts.netloc}"
    proxies = _get(w, "web", "trusted_proxies", int, 0)
    if not 0 <= proxies <= 10:
        raise ConfigError(
            "Setting web.trusted_proxies must be the number of reverse proxies in front of Postroom "
            f"(0 to 10), not {proxies}."
        )
    return WebConfig(base_url=base_url, trusted_proxies=proxies)


def load_secret_key(data_dir: Path) -> str:
    """The embedded mode's key: generated once and kept beside the database (mode 0600)."""
    path = data_dir / "secret.key"
    try:
        key = path.read_text().strip()
        if key:
            tighten(path)  # a copy restored from a backup may have lost its mode
            return key
    except FileNotFoundError:
        pass
    private_dir(data_dir)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or ``$POSTROOM_CONFIG``), apply environment overrides, validate."""
    env = dict(os.environ if env is None else env)
    path = path or env.get("POSTROOM_CONFIG") or None
    doc: dict[str, Any] = {}
    source = "defaults"
    if path:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist.") from None
        except IsADirectoryError:
            raise ConfigError(f"Config file {path} is a directory, not a TOML file.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from None
    known = {
        "data_dir",
        "database",
        "security",
        "sync",
        "storage",
        "logging",
        "imap",
        "celery",
        "metrics",
        "google",
        "microsoft",
        "web",
    }
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"Unknown setting {unknown[0]!r} in {source}; known sections: {', '.join(sorted(known))}.")

    data_dir = Path(_get(doc, "top level", "data_dir", str, "") or default_data_dir(env)).expanduser()
    if env.get("POSTROOM_DATA_DIR"):
        data_dir = Path(env["POSTROOM_DATA_DIR"]).expanduser()
    elif not doc.get("data_dir") and data_dir.is_dir():
        tighten(data_dir)  # the default location is Postroom's own; older versions made it group-readable

    db = _section(doc, "database")
    url = env.get("POSTROOM_DATABASE_URL") or _get(db, "database", "url", str, "")
    if not url:
        url = f"sqlite:///{data_dir / 'postroom.db'}"
    if "://" not in url:
        raise ConfigError(
            "Setting database.url must be a URL such as sqlite:///path or postgresql://host/db, "
            f"not {redact_url(url)!r}."
        )
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the driver we ship
    database = DatabaseConfig(url=url, echo=_get(db, "database", "echo", bool, False))

    sec = _section(doc, "security")
    key = env.get("POSTROOM_SECRET_KEY") or _get(sec, "security", "secret_key", str, "")
    if not key:
        if not url.startswith("sqlite"):
            raise ConfigError(
                "Setting security.secret_key (or POSTROOM_SECRET_KEY) is required with a server database, "
                "so that every process can decrypt stored credentials."
            )
        key = load_secret_key(data_dir)
    if len(key) < 16:
        raise ConfigError("Setting security.secret_key must be at least 16 characters long.")
    previous_keys = _previous_keys(sec, env, key)

    s = _section(doc, "sync")
    interval = _float_env(env, "POSTROOM_SYNC_INTERVAL", _get(s, "sync", "interval", float, 120.0))
    if interval < 1:
        raise ConfigError(f"Setting sync.interval must be at least 1 second, not {interval:g}.")
    batch = _get(s, "sync", "batch_size", int, 500)
    if not 1 <= batch <= 5000:
        raise ConfigError(f"Setting sync.batch_size must be between 1 and 5000, not {batch}.")
    concurrency = _get(s, "sync", "concurrency", int, 8)
    if not 1 <= concurrency <= 256:
        raise ConfigError(f"Setting sync.concurrency must be between 1 and 256, not {concurrency}.")
    jitter = _get(s, "sync", "jitter", float, 0.1)
    if not 0 <= jitter <= 0.5:
        raise ConfigError(f"Setting sync.jitter must be between 0 and 0.5, not {jitter:g}.")
    backoff_base = _get(s, "sync", "backoff_base", float, 30.0)
    backoff_max = _get(s, "sync", "backoff_max", float, 3600.0)
    if not 0 < backoff_base <= backoff_max:
        raise ConfigError("Setting sync.backoff_base must be positive and at most sync.backoff_max.")
    lease = _get(s, "sync", "lease_seconds", float, 600.0)
    max_size = _get(s, "sync", "max_message_size", int, SyncConfig.max_message_size)
    if not 1024 <= max_size <= 2**40:
        raise ConfigError(f"Setting sync.max_message_size must be a number of bytes of at least 1024, not {max_size}.")
    chunk_bytes = _get(s, "sync", "body_chunk_bytes", int, SyncConfig.body_chunk_bytes)
    if not 1024 <= chunk_bytes <= 2**36:
        raise ConfigError(
            f"Setting sync.body_chunk_bytes must be a number of bytes of at least 1024, not {chunk_bytes}."
        )
    if lease < 10:
        raise ConfigError(f"Setting sync.lease_seconds must be at least 10, not {lease:g}.")
    sync = SyncConfig(
        interval=interval,
        body_policy=_choice(_get(s, "sync", "body_policy", str, "applicants"), "sync", "body_policy", BODY_POLICIES),
        batch_size=batch,
        connect_timeout=_get(s, "sync", "connect_timeout", float, 30.0),
        concurrency=concurrency,
        jitter=jitter,
        lease_seconds=lease,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        max_message_size=max_size,
        body_chunk_bytes=chunk_bytes,
    )

    cel = _section(doc, "celery")
    broker = env.get("POSTROOM_BROKER_URL") or _get(cel, "celery", "broker_url", str, CeleryConfig.broker_url)
    if "://" not in broker:
        raise ConfigError(
            f"Setting celery.broker_url must be a URL such as redis://host:6379/0, not {redact_url(broker)!r}."
        )
    celery_cfg = CeleryConfig(
        broker_url=broker, dispatch_interval=_get(cel, "celery", "dispatch_interval", float, 15.0)
    )

    met = _section(doc, "metrics")
    port_text = env.get("POSTROOM_METRICS_PORT")
    try:
        port = int(port_text) if port_text else _get(met, "metrics", "port", int, 0)
    except ValueError:
        raise ConfigError(
            f"Environment variable POSTROOM_METRICS_PORT must be a port number, not {port_text!r}."
        ) from None
    if not 0 <= port < 65536:
        raise ConfigError(f"Setting metrics.port must be between 0 and 65535, not {port}.")
    token = env.get("POSTROOM_METRICS_TOKEN") or _get(met, "metrics", "token", str, "")
    if token and not re.fullmatch(r"[!-~]{16,}", token):
        raise ConfigError(
            "Setting metrics.token must be at least 16 characters with no spaces "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    metrics_cfg = MetricsConfig(
        port=port,
        host=_get(met, "metrics", "host", str, "127.0.0.1"),
        token=token,
        web_endpoint=_get(met, "metrics", "web_endpoint", bool, True),
    )

    st = _section(doc, "storage")
    blob_dir = Path(_get(st, "storage", "blob_dir", str, "") or data_dir / "blobs").expanduser()

    lg = _section(doc, "logging")
    level = (env.get("POSTROOM_LOG_LEVEL") or _get(lg, "logging", "level", str, "INFO")).upper()
    logging_cfg = LoggingConfig(
        level=_choice(level, "logging", "level", LOG_LEVELS),
        format=_choice(
            env.get("POSTROOM_LOG_FORMAT") or _get(lg, "logging", "format", str, "text"),
            "logging",
            "format",
            LOG_FORMATS,
        ),
    )

    im = _section(doc, "imap")
    ca_file = _get(im, "imap", "ca_file", str, None)
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"Setting imap.ca_file names {ca_file}, which is not a file.")
    imap = ImapDefaults(allow_plaintext=_get(im, "imap", "allow_plaintext", bool, False), ca_file=ca_file)

    return Config(
        data_dir=data_dir,
        database=database,
        security=SecurityConfig(secret_key=key, previous_keys=previous_keys),
        sync=sync,
        storage=StorageConfig(blob_dir=blob_dir),
        logging=logging_cfg,
        imap=imap,
        celery=celery_cfg,
        metrics=metrics_cfg,
        google=_google(doc, env),
        microsoft=_microsoft(doc, env),
        web=_web(doc, env),
        source=source,
    )
