"""Configuration: parsed once from TOML into frozen dataclasses and passed in.

Sources, later ones winning:

1. built-in defaults: the dataclasses' own (the embedded mode: SQLite in a data directory);
2. the TOML file named by ``--config`` or ``POSTROOM_CONFIG`` (if any);
3. a few environment overrides (``POSTROOM_DATABASE_URL``, ``POSTROOM_SECRET_KEY``,
   ``POSTROOM_DATA_DIR``, ``POSTROOM_SYNC_INTERVAL``, ``POSTROOM_LOG_LEVEL``,
   ``POSTROOM_GOOGLE_CLIENT_ID``, ``POSTROOM_GOOGLE_CLIENT_SECRET``,
   ``POSTROOM_MICROSOFT_CLIENT_ID``, ``POSTROOM_MICROSOFT_CLIENT_SECRET``, ...).

Nothing here reads the environment at import time; :func:`load_config` takes the
environment as an argument, and writes nothing (the embedded mode's key file is created
when the key is first needed). Every problem raises :class:`ConfigError` with one sentence
that names the setting; a key a section does not have is one, naming the nearest it has.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from postroom.config_inbound import InboundConfig, read_inbound
from postroom.config_providers import GoogleConfig, MicrosoftConfig, read_google, read_microsoft
from postroom.config_reading import Table, choice, env_list, float_env, keys_of
from postroom.config_sending import SendingConfig, TrackingConfig, read_sending, read_tracking
from postroom.errors import ConfigError
from postroom.private_files import private_dir, tighten
from postroom.states import BodyPolicy
from postroom.urls import is_loopback_host, redact_url

__all__ = [
    "Config",
    "ConfigError",
    "GoogleConfig",
    "InboundConfig",
    "MicrosoftConfig",
    "SendingConfig",
    "TrackingConfig",
    "load_config",
]

BODY_POLICIES = tuple(BodyPolicy)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
SECTIONS = (
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
    "sending",
    "tracking",
    "demo",
    "webhooks",
    "inbound",
)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    echo: bool = False


@dataclass(frozen=True)
class SecurityConfig:
    """The key that seals stored credentials: ``secret_key`` as configured, else (the embedded
    SQLite default) one generated into ``key_file`` the first time :meth:`key` is asked —
    never by merely loading the config. ``previous_keys`` stay readable, never used to seal
    (docs/security.md)."""

    secret_key: str = field(default="", repr=False)
    previous_keys: tuple[str, ...] = field(default=(), repr=False)
    key_file: Path | None = field(default=None, metadata={"setting": False})

    def key(self) -> str:
        """The key in force: the configured one, or the generated one (created on first use)."""
        if self.secret_key:
            return self.secret_key
        if self.key_file is None:
            raise ConfigError("Setting security.secret_key is not set.")
        return load_secret_key(self.key_file)


@dataclass(frozen=True)
class SyncConfig:
    interval: float = 120.0  # seconds between two syncs of one account
    body_policy: BodyPolicy = BodyPolicy.APPLICANTS  # which bodies to fetch and keep
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
    webhook_interval: float = 2.0  # seconds between two beat ticks sending due webhook deliveries


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
    # the IMAP connect form's settings guess (services.imap_connect): an autoconfig document read before the
    # domain's own ({domain}, {address} filled in), and whether the guess may reach private and loopback addresses
    settings_guess_autoconfig: str = ""
    settings_guess_private: bool = False


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
class DemoConfig:
    """Demo mode (docs/demo.md): ``postroom serve`` seeds the demo organisation on a database with
    no accounts, users or applicants yet; ``enabled = false`` never seeds."""

    enabled: bool = True


@dataclass(frozen=True)
class WebhooksConfig:
    """Webhook deliveries (:mod:`sync.webhooks`): where they may go, and how long one may take."""

    allow_private: bool = False  # deliver to private and loopback addresses (and plain http there)
    timeout: float = 10.0  # seconds one delivery may take, connecting and answering


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
    sending: SendingConfig = field(default_factory=SendingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    source: str = "defaults"  # where the settings came from, for messages


def default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("POSTROOM_DATA_DIR"):
        return Path(env["POSTROOM_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "."), ".local", "share")
    return Path(base) / "postroom"


def load_secret_key(path: Path) -> str:
    """The embedded mode's key: generated once into ``path`` (beside the database, mode 0600)."""
    try:
        key = path.read_text().strip()
        if key:
            tighten(path)  # a copy restored from a backup may have lost its mode
            return key
    except FileNotFoundError:
        pass
    private_dir(path.parent)
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
    top = Table(doc, "", ("data_dir", *SECTIONS), source)

    data_dir = Path(top.get("data_dir", str, "") or default_data_dir(env)).expanduser()
    if env.get("POSTROOM_DATA_DIR"):
        data_dir = Path(env["POSTROOM_DATA_DIR"]).expanduser()
    elif not doc.get("data_dir") and data_dir.is_dir():
        tighten(data_dir)  # the default location is Postroom's own; older versions made it group-readable
    database = _database(doc, env, data_dir, source)
    web = _web(doc, env, source)
    return Config(
        data_dir=data_dir,
        database=database,
        security=_security(doc, env, data_dir, database.url, source),
        sync=_sync(doc, env, source),
        storage=_storage(doc, data_dir, source),
        logging=_logging(doc, env, source),
        imap=_imap(doc, source),
        celery=_celery(doc, env, source),
        metrics=_metrics(doc, env, source),
        google=read_google(doc, env, source),
        microsoft=read_microsoft(doc, env, source),
        web=web,
        sending=read_sending(doc, env, source),
        tracking=read_tracking(doc, env, source, web.base_url),
        demo=_demo(doc, source),
        webhooks=_webhooks(doc, source),
        inbound=read_inbound(doc, source),
        source=source,
    )


# ------------------------------------------------------------------ sections (one function each)


def _database(doc: Mapping[str, Any], env: Mapping[str, str], data_dir: Path, source: str) -> DatabaseConfig:
    t = Table(doc, "database", keys_of(DatabaseConfig), source)
    url = env.get("POSTROOM_DATABASE_URL") or t.get("url", str, "")
    if not url:
        url = f"sqlite:///{data_dir / 'postroom.db'}"
    if "://" not in url:
        raise ConfigError(
            "Setting database.url must be a URL such as sqlite:///path or postgresql://host/db, "
            f"not {redact_url(url)!r}."
        )
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the driver we ship
    return DatabaseConfig(url=url, echo=t.get("echo", bool, DatabaseConfig.echo))


def _security(doc: Mapping[str, Any], env: Mapping[str, str], data_dir: Path, url: str, source: str) -> SecurityConfig:
    t = Table(doc, "security", keys_of(SecurityConfig), source)
    key = env.get("POSTROOM_SECRET_KEY") or t.get("secret_key", str, "")
    if not key and not url.startswith("sqlite"):
        raise ConfigError(
            "Setting security.secret_key (or POSTROOM_SECRET_KEY) is required with a server database, "
            "so that every process can decrypt stored credentials."
        )
    if key and len(key) < 16:
        raise ConfigError("Setting security.secret_key must be at least 16 characters long.")
    where, items = env_list(env, "POSTROOM_PREVIOUS_SECRET_KEYS", t, "previous_keys")
    if not isinstance(items, list) or not all(isinstance(k, str) and len(k) >= 16 for k in items):
        raise ConfigError(f"{where} must be a list of keys, each at least 16 characters long.")
    key_file = None if key else data_dir / "secret.key"
    if key_file is not None:
        tighten(key_file)  # one an older version (or a restored backup) left readable; made when first needed
    return SecurityConfig(
        secret_key=key,
        key_file=key_file,
        previous_keys=tuple(k for k in dict.fromkeys(items) if k != key),
    )


def _sync(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> SyncConfig:
    t, d = Table(doc, "sync", keys_of(SyncConfig), source), SyncConfig()
    interval = float_env(env, "POSTROOM_SYNC_INTERVAL", t.get("interval", float, d.interval))
    if interval < 1:
        raise ConfigError(f"Setting sync.interval must be at least 1 second, not {interval:g}.")
    batch = t.get("batch_size", int, d.batch_size)
    if not 1 <= batch <= 5000:
        raise ConfigError(f"Setting sync.batch_size must be between 1 and 5000, not {batch}.")
    concurrency = t.get("concurrency", int, d.concurrency)
    if not 1 <= concurrency <= 256:
        raise ConfigError(f"Setting sync.concurrency must be between 1 and 256, not {concurrency}.")
    jitter = t.get("jitter", float, d.jitter)
    if not 0 <= jitter <= 0.5:
        raise ConfigError(f"Setting sync.jitter must be between 0 and 0.5, not {jitter:g}.")
    backoff_base = t.get("backoff_base", float, d.backoff_base)
    backoff_max = t.get("backoff_max", float, d.backoff_max)
    if not 0 < backoff_base <= backoff_max:
        raise ConfigError("Setting sync.backoff_base must be positive and at most sync.backoff_max.")
    lease = t.get("lease_seconds", float, d.lease_seconds)
    if lease < 10:
        raise ConfigError(f"Setting sync.lease_seconds must be at least 10, not {lease:g}.")
    max_size = t.get("max_message_size", int, d.max_message_size)
    if not 1024 <= max_size <= 2**40:
        raise ConfigError(f"Setting sync.max_message_size must be a number of bytes of at least 1024, not {max_size}.")
    chunk_bytes = t.get("body_chunk_bytes", int, d.body_chunk_bytes)
    if not 1024 <= chunk_bytes <= 2**36:
        raise ConfigError(
            f"Setting sync.body_chunk_bytes must be a number of bytes of at least 1024, not {chunk_bytes}."
        )
    policy = choice(t.get("body_policy", str, d.body_policy.value), "sync.body_policy", BODY_POLICIES)
    return SyncConfig(
        interval=interval,
        body_policy=BodyPolicy(policy),
        batch_size=batch,
        connect_timeout=t.get("connect_timeout", float, d.connect_timeout),
        concurrency=concurrency,
        jitter=jitter,
        lease_seconds=lease,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        max_message_size=max_size,
        body_chunk_bytes=chunk_bytes,
    )


def _celery(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> CeleryConfig:
    t, d = Table(doc, "celery", keys_of(CeleryConfig), source), CeleryConfig()
    broker = env.get("POSTROOM_BROKER_URL") or t.get("broker_url", str, d.broker_url)
    if "://" not in broker:
        raise ConfigError(
            f"Setting celery.broker_url must be a URL such as redis://host:6379/0, not {redact_url(broker)!r}."
        )
    webhook_interval = t.get("webhook_interval", float, d.webhook_interval)
    if not 0 < webhook_interval <= 3600:
        raise ConfigError(
            f"Setting celery.webhook_interval must be between 0 and 3600 seconds, not {webhook_interval}."
        )
    return CeleryConfig(
        broker_url=broker,
        dispatch_interval=t.get("dispatch_interval", float, d.dispatch_interval),
        webhook_interval=webhook_interval,
    )


def _metrics(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> MetricsConfig:
    t, d = Table(doc, "metrics", keys_of(MetricsConfig), source), MetricsConfig()
    port_text = env.get("POSTROOM_METRICS_PORT")
    try:
        port = int(port_text) if port_text else t.get("port", int, d.port)
    except ValueError:
        raise ConfigError(
            f"Environment variable POSTROOM_METRICS_PORT must be a port number, not {port_text!r}."
        ) from None
    if not 0 <= port < 65536:
        raise ConfigError(f"Setting metrics.port must be between 0 and 65535, not {port}.")
    token = env.get("POSTROOM_METRICS_TOKEN") or t.get("token", str, d.token)
    if token and not re.fullmatch(r"[!-~]{16,}", token):
        raise ConfigError(
            "Setting metrics.token must be at least 16 characters with no spaces "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    return MetricsConfig(
        port=port,
        host=t.get("host", str, d.host),
        token=token,
        web_endpoint=t.get("web_endpoint", bool, d.web_endpoint),
    )


def _storage(doc: Mapping[str, Any], data_dir: Path, source: str) -> StorageConfig:
    t = Table(doc, "storage", keys_of(StorageConfig), source)
    return StorageConfig(blob_dir=Path(t.get("blob_dir", str, "") or data_dir / "blobs").expanduser())


def _logging(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> LoggingConfig:
    t, d = Table(doc, "logging", keys_of(LoggingConfig), source), LoggingConfig()
    level = (env.get("POSTROOM_LOG_LEVEL") or t.get("level", str, d.level)).upper()
    return LoggingConfig(
        level=choice(level, "logging.level", LOG_LEVELS),
        format=choice(env.get("POSTROOM_LOG_FORMAT") or t.get("format", str, d.format), "logging.format", LOG_FORMATS),
    )


def _imap(doc: Mapping[str, Any], source: str) -> ImapDefaults:
    t, d = Table(doc, "imap", keys_of(ImapDefaults), source), ImapDefaults()
    ca_file = t.get("ca_file", str, d.ca_file)
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"Setting imap.ca_file names {ca_file}, which is not a file.")
    return ImapDefaults(allow_plaintext=t.get("allow_plaintext", bool, d.allow_plaintext), ca_file=ca_file)


def _demo(doc: Mapping[str, Any], source: str) -> DemoConfig:
    t, d = Table(doc, "demo", keys_of(DemoConfig), source), DemoConfig()
    return DemoConfig(enabled=t.get("enabled", bool, d.enabled))


def _webhooks(doc: Mapping[str, Any], source: str) -> WebhooksConfig:
    t, d = Table(doc, "webhooks", keys_of(WebhooksConfig), source), WebhooksConfig()
    timeout = t.get("timeout", float, d.timeout)
    if not 0 < timeout <= 300:
        raise ConfigError(f"Setting webhooks.timeout must be between 0 and 300 seconds, not {timeout}.")
    return WebhooksConfig(allow_private=t.get("allow_private", bool, d.allow_private), timeout=timeout)


def _web(doc: Mapping[str, Any], env: Mapping[str, str], source: str) -> WebConfig:
    t, d = Table(doc, "web", keys_of(WebConfig), source), WebConfig()
    base_url = env.get("POSTROOM_BASE_URL") or t.get("base_url", str, d.base_url)
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
    proxies = t.get("trusted_proxies", int, d.trusted_proxies)
    if not 0 <= proxies <= 10:
        raise ConfigError(
            "Setting web.trusted_proxies must be the number of reverse proxies in front of Postroom "
            f"(0 to 10), not {proxies}."
        )
    autoconfig = t.get("settings_guess_autoconfig", str, d.settings_guess_autoconfig)
    if autoconfig:
        parts = urlsplit(autoconfig.replace("{domain}", "example.com").replace("{address}", "a@example.com"))
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))
        ):
            raise ConfigError(
                "Setting web.settings_guess_autoconfig must be an https URL (plain http only for this machine), "
                f"not {redact_url(autoconfig)!r}."
            )
    return WebConfig(
        base_url=base_url,
        trusted_proxies=proxies,
        settings_guess_autoconfig=autoconfig,
        settings_guess_private=t.get("settings_guess_private", bool, d.settings_guess_private),
    )
