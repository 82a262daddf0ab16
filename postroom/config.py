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


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str = "redis://127.0.0.1:6379/0"
    dispatch_interval: float = 15.0  # seconds between two beat dispatches of due accounts


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 0  # Prometheus metrics of a worker process; 0 = off
    host: str = "127.0.0.1"


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
    source: str = "defaults"  # where the settings came from, for messages


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
    return MicrosoftConfig(**values)


def load_secret_key(data_dir: Path) -> str:
    """The embedded mode's key: generated once and kept beside the database (mode 0600)."""
    path = data_dir / "secret.key"
    try:
        key = path.read_text().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
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
    }
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"Unknown setting {unknown[0]!r} in {source}; known sections: {', '.join(sorted(known))}.")

    data_dir = Path(_get(doc, "top level", "data_dir", str, "") or default_data_dir(env)).expanduser()
    if env.get("POSTROOM_DATA_DIR"):
        data_dir = Path(env["POSTROOM_DATA_DIR"]).expanduser()

    db = _section(doc, "database")
    url = env.get("POSTROOM_DATABASE_URL") or _get(db, "database", "url", str, "")
    if not url:
        url = f"sqlite:///{data_dir / 'postroom.db'}"
    if "://" not in url:
        raise ConfigError(
            f"Setting database.url must be a URL such as sqlite:///path or postgresql://host/db, not {url!r}."
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
    )

    cel = _section(doc, "celery")
    broker = env.get("POSTROOM_BROKER_URL") or _get(cel, "celery", "broker_url", str, CeleryConfig.broker_url)
    if "://" not in broker:
        raise ConfigError(f"Setting celery.broker_url must be a URL such as redis://host:6379/0, not {broker!r}.")
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
    metrics_cfg = MetricsConfig(port=port, host=_get(met, "metrics", "host", str, "127.0.0.1"))

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
        security=SecurityConfig(secret_key=key),
        sync=sync,
        storage=StorageConfig(blob_dir=blob_dir),
        logging=logging_cfg,
        imap=imap,
        celery=celery_cfg,
        metrics=metrics_cfg,
        google=_google(doc, env),
        microsoft=_microsoft(doc, env),
        source=source,
    )
