"""Configuration: embedded defaults, file + environment overrides, one-sentence errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config


def test_no_config_runs_embedded_sqlite_with_generated_key(tmp_path: Path) -> None:
    cfg = load_config(env={"HOME": str(tmp_path)})
    data = tmp_path / ".local" / "share" / "postroom"
    assert cfg.database.url == f"sqlite:///{data / 'postroom.db'}"
    key_file = data / "secret.key"
    assert not data.exists()  # loading the config writes nothing; the key is made when first needed
    key = cfg.security.key()
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # the same key is reused next time, so stored credentials stay readable
    assert load_config(env={"HOME": str(tmp_path)}).security.key() == key
    assert cfg.sync.interval == 120 and cfg.sync.body_policy == "applicants"


def test_example_config_documents_every_setting(tmp_path: Path) -> None:
    """Every field of every config section appears (set or commented out) under its [section]."""
    import dataclasses
    import re
    import typing

    from postroom.config import Config

    example = Path(__file__).parents[2] / "config.example.toml"
    text = example.read_text()
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S))
    assert re.search(r"^# data_dir =", text.split("[database]")[0], re.M)
    for name, kind in typing.get_type_hints(Config).items():
        if not dataclasses.is_dataclass(kind):
            continue
        assert name in sections, f"[{name}] is not documented"
        for f in (f for f in dataclasses.fields(kind) if f.metadata.get("setting", True)):
            assert re.search(rf"^#? ?{f.name} =", sections[name], re.M), f"{name}.{f.name} is not documented"
    assert load_config(example, env={"HOME": str(tmp_path)}).logging.format == "text"


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[database]\nurl = "sqlite:////nowhere/a.db"\n[security]\nsecret_key = "from-file-0123456789"\n')
    cfg = load_config(
        f,
        env={
            "HOME": str(tmp_path),
            "POSTROOM_DATABASE_URL": "postgresql://u@h/db",
            "POSTROOM_SECRET_KEY": "from-env-0123456789abc",
        },
    )
    assert cfg.database.url == "postgresql+psycopg://u@h/db"
    assert cfg.security.secret_key == "from-env-0123456789abc"
    cfg = load_config(env={"HOME": str(tmp_path), "POSTROOM_CONFIG": str(f)})
    assert cfg.security.secret_key == "from-file-0123456789"


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ('[sync]\ninterval = "often"\n', {}, "sync.interval must be a float"),
        ("[sync]\ninterval = 0\n", {}, "sync.interval must be at least 1 second"),
        ('[sync]\nbody_policy = "some"\n', {}, "sync.body_policy must be one of applicants, all, none"),
        ('[logging]\nlevel = "LOUD"\n', {}, "logging.level must be one of"),
        ('[security]\nsecret_key = "short"\n', {}, "security.secret_key must be at least 16 characters"),
        ('[database]\nurl = "postgresql://h/db"\n', {}, "security.secret_key (or POSTROOM_SECRET_KEY) is required"),
        ('[database]\nurl = "not a url"\n', {}, "database.url must be a URL"),
        ("[imap]\nca_file = '/no/such/ca.pem'\n", {}, "imap.ca_file names /no/such/ca.pem"),
        ("[mystery]\nx = 1\n", {}, "Unknown setting 'mystery'"),
        ("database = 3\n", {}, "Setting [database] must be a table"),
        ("[sync\n", {}, "is not valid TOML"),
        ("", {"POSTROOM_SYNC_INTERVAL": "soon"}, "POSTROOM_SYNC_INTERVAL must be a number of seconds"),
        ("[google]\ntoken_uri = 'http://oauth.example.com/token'\n", {}, "google.token_uri must use https"),
        ("[google]\napi_root = 'gmail.googleapis.com'\n", {}, "google.api_root must be an https URL"),
        ("[google]\nclient_id = 42\n", {}, "google.client_id must be a str"),
        ("[google]\nclient_secret = 's'\n", {}, "google.client_secret is set but google.client_id is not"),
        (
            "[microsoft]\nauthority = 'http://127.0.0.1:8443/organizations'\n",
            {},
            "microsoft.authority must be an https URL such as https://login.microsoftonline.com/organizations",
        ),
        ("[microsoft]\nauthority = 'https://login.example.com/'\n", {}, "microsoft.authority must end in a tenant"),
        ("[microsoft]\ngraph_root = 'graph.microsoft.com'\n", {}, "microsoft.graph_root must be an https URL"),
        ("[microsoft]\ntenant = 'my tenant'\n", {}, "microsoft.tenant must be a tenant id, a domain"),
        ("", {"POSTROOM_MICROSOFT_TENANT": "../x"}, "microsoft.tenant must be a tenant id"),
        ("[microsoft]\nclient_secret = 's'\n", {}, "microsoft.client_secret is set but microsoft.client_id is not"),
        ("[microsoft]\nca_file = '/no/such/ca.pem'\n", {}, "microsoft.ca_file names /no/such/ca.pem"),
        ("[microsoft]\ninstance_discovery = 'no'\n", {}, "microsoft.instance_discovery must be a bool"),
        (
            "[microsoft]\nallowed_tenants = ['contoso.com']\n",
            {},
            "Setting microsoft.allowed_tenants must list tenant ids "
            "(GUIDs such as aaaabbbb-0000-cccc-1111-dddd2222eeee), not 'contoso.com'.",
        ),
        ("[microsoft]\nallowed_tenants = 'x'\n", {}, "microsoft.allowed_tenants must be a list of tenant ids"),
        (
            "",
            {"POSTROOM_MICROSOFT_ALLOWED_TENANTS": "aaaabbbb-0000-cccc-1111-dddd2222eeee;x"},
            "POSTROOM_MICROSOFT_ALLOWED_TENANTS must list tenant ids",
        ),
        (
            "[microsoft]\ntenant = 'aaaabbbb-0000-cccc-1111-dddd2222eeee'\n"
            "allowed_tenants = ['bbbbcccc-1111-dddd-2222-eeee3333ffff']\n",
            {},
            "microsoft.allowed_tenants leaves out microsoft.tenant aaaabbbb-0000-cccc-1111-dddd2222eeee",
        ),
        ("[celery]\nwebhook_interval = 0\n", {}, "celery.webhook_interval must be between 0 and 3600 seconds"),
    ],
)
def test_bad_settings_get_one_sentence_naming_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], needle: str
) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(f, env={"HOME": str(tmp_path), **env})
    message = str(err.value)
    assert needle in message
    assert "\n" not in message and message.endswith(".")


def test_google_defaults_are_googles_endpoints_and_loopback_http_is_allowed(tmp_path: Path) -> None:
    google = load_config(env={"HOME": str(tmp_path)}).google
    assert (google.client_id, google.auth_uri, google.token_uri, google.api_root) == (
        "",
        "https://accounts.google.com/o/oauth2/auth",
        "https://oauth2.googleapis.com/token",
        "https://gmail.googleapis.com/",
    )
    f = tmp_path / "c.toml"
    f.write_text(
        '[google]\nclient_id = "cid"\napi_root = "http://127.0.0.1:8025"\ntoken_uri = "http://localhost:1/t"\n'
    )
    google = load_config(f, env={"HOME": str(tmp_path), "POSTROOM_GOOGLE_CLIENT_SECRET": "from-env"}).google
    assert (google.client_id, google.client_secret) == ("cid", "from-env")
    assert google.api_root == "http://127.0.0.1:8025/" and google.token_uri == "http://localhost:1/t"
    assert "from-env" not in repr(google)


def test_microsoft_defaults_are_microsofts_endpoints_and_the_tenant_shapes_the_authority(tmp_path: Path) -> None:
    ms = load_config(env={"HOME": str(tmp_path)}).microsoft
    assert (ms.client_id, ms.tenant, ms.authority, ms.graph_root, ms.ca_file, ms.instance_discovery) == (
        "",
        "organizations",
        "https://login.microsoftonline.com/organizations",
        "https://graph.microsoft.com/v1.0",
        None,
        True,
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    f = tmp_path / "c.toml"
    f.write_text(
        f'[microsoft]\nclient_id = "cid"\ntenant = "contoso.com"\nca_file = "{ca}"\ninstance_discovery = false\n'
    )
    env = {"HOME": str(tmp_path), "POSTROOM_MICROSOFT_CLIENT_SECRET": "from-env"}
    ms = load_config(f, env=env).microsoft
    assert (ms.client_id, ms.client_secret, ms.authority) == (
        "cid",
        "from-env",
        "https://login.microsoftonline.com/contoso.com",
    )
    assert (ms.ca_file, ms.instance_discovery) == (str(ca), False)
    assert "from-env" not in repr(ms)
    env |= {
        "POSTROOM_MICROSOFT_AUTHORITY": "https://login.microsoftonline.us/contoso.com/",
        "POSTROOM_MICROSOFT_GRAPH_ROOT": "https://graph.microsoft.us/v1.0/",
    }
    ms = load_config(f, env=env).microsoft  # an explicit authority wins over the tenant
    assert (ms.authority, ms.graph_root) == (
        "https://login.microsoftonline.us/contoso.com",
        "https://graph.microsoft.us/v1.0",
    )


def test_microsoft_allowed_tenants_from_the_file_or_the_environment(tmp_path: Path) -> None:
    assert load_config(env={"HOME": str(tmp_path)}).microsoft.allowed_tenants == ()  # any tenant
    f = tmp_path / "c.toml"
    f.write_text("[microsoft]\nallowed_tenants = ['AAAABBBB-0000-CCCC-1111-DDDD2222EEEE']\n")
    ms = load_config(f, env={"HOME": str(tmp_path)}).microsoft
    assert ms.allowed_tenants == ("aaaabbbb-0000-cccc-1111-dddd2222eeee",)  # as the ID token's tid has it
    listed = " bbbbcccc-1111-dddd-2222-eeee3333ffff, aaaabbbb-0000-cccc-1111-dddd2222eeee,"
    env = {"HOME": str(tmp_path), "POSTROOM_MICROSOFT_ALLOWED_TENANTS": listed}  # the environment wins
    assert load_config(f, env=env).microsoft.allowed_tenants == (
        "bbbbcccc-1111-dddd-2222-eeee3333ffff",
        "aaaabbbb-0000-cccc-1111-dddd2222eeee",
    )


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Config file /nope.toml does not exist\."):
        load_config("/nope.toml", env={"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ('[security]\nprevious_keys = "old"\n', {}, "security.previous_keys must be a list of keys, each at least 16"),
        ('[security]\nprevious_keys = ["short"]\n', {}, "security.previous_keys must be a list of keys"),
        (
            "",
            {"POSTROOM_PREVIOUS_SECRET_KEYS": "an-old-key-long-enough-0123,short"},
            "Environment variable POSTROOM_PREVIOUS_SECRET_KEYS must be a list of keys, each at least 16",
        ),
        ('[web]\nbase_url = "postroom.example.com"\n', {}, "web.base_url must be the address users open, such as"),
        ('[web]\nbase_url = "https://postroom.example.com/app"\n', {}, "(scheme, host and port only)"),
        ("", {"POSTROOM_BASE_URL": "ftp://postroom.example.com"}, "web.base_url must be the address users open"),
        ("", {"POSTROOM_BASE_URL": "https://postroom.example.com:port"}, "web.base_url must be"),
        ("[web]\ntrusted_proxies = 11\n", {}, "web.trusted_proxies must be the number of reverse proxies"),
        ("[web]\ntrusted_proxies = -1\n", {}, "web.trusted_proxies must be the number of reverse proxies"),
        ('[metrics]\ntoken = "short"\n', {}, "metrics.token must be at least 16 characters with no spaces"),
        ("", {"POSTROOM_METRICS_TOKEN": "has spaces in it 0123456"}, "metrics.token must be at least 16 characters"),
        ('[metrics]\nweb_endpoint = "no"\n', {}, "metrics.web_endpoint must be a bool"),
        # a URL in a message never shows its password
        ('[database]\nurl = "postgresql//bob:s3cret@db/x"\n', {}, "not 'postgresql//bob:***@db/x'."),
        ("", {"POSTROOM_BROKER_URL": "amqp//guest:s3cret@rabbit//"}, "not 'amqp//guest:***@rabbit//'."),
        ('[web]\nbase_url = "https://bob:s3cret@postroom.example.com"\n', {}, "'https://bob:***@postroom.example.com'"),
    ],
)
def test_bad_security_and_web_settings_get_one_sentence(
    tmp_path: Path, toml: str, env: dict[str, str], needle: str
) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(f, env={"HOME": str(tmp_path), **env})
    message = str(err.value)
    assert needle in message and "s3cret" not in message
    assert "\n" not in message and message.endswith(".")


def test_security_web_and_metrics_settings_from_the_file_or_the_environment(tmp_path: Path) -> None:
    cfg = load_config(env={"HOME": str(tmp_path)})
    assert (cfg.security.previous_keys, cfg.web.base_url, cfg.web.trusted_proxies) == ((), "", 0)
    assert (cfg.metrics.token, cfg.metrics.web_endpoint) == ("", True)
    f = tmp_path / "c.toml"
    f.write_text(
        '[security]\nsecret_key = "the-current-key-0123456789"\n'
        'previous_keys = ["an-old-key-0123456789", "the-current-key-0123456789"]\n'
        '[web]\nbase_url = "https://postroom.example.com/"\ntrusted_proxies = 2\n'
        '[metrics]\ntoken = "file-token-0123456789abcdef"\nweb_endpoint = false\n'
    )
    cfg = load_config(f, env={"HOME": str(tmp_path)})
    assert cfg.security.previous_keys == ("an-old-key-0123456789",)  # the current key is not a previous one
    assert (cfg.web.base_url, cfg.web.trusted_proxies) == ("https://postroom.example.com", 2)
    assert (cfg.metrics.token, cfg.metrics.web_endpoint) == ("file-token-0123456789abcdef", False)
    assert "an-old-key" not in repr(cfg) and "file-token" not in repr(cfg)
    env = {
        "HOME": str(tmp_path),
        "POSTROOM_PREVIOUS_SECRET_KEYS": " key-one-0123456789abc, key-two-0123456789abc,",
        "POSTROOM_BASE_URL": "http://127.0.0.1:8000",
        "POSTROOM_METRICS_TOKEN": "env-token-0123456789abcdef",
    }
    cfg = load_config(f, env=env)  # the environment wins
    assert cfg.security.previous_keys == ("key-one-0123456789abc", "key-two-0123456789abc")
    assert (cfg.web.base_url, cfg.metrics.token) == ("http://127.0.0.1:8000", "env-token-0123456789abcdef")


@pytest.mark.parametrize(
    ("toml", "sentence"),
    [
        ("[sync]\nintervall = 60\n", "Unknown setting 'sync.intervall' in {path}; did you mean sync.interval?"),
        ("[metrics]\nprot = 9100\n", "Unknown setting 'metrics.prot' in {path}; did you mean metrics.port?"),
        ("[microsoft]\nallowed_tennants = []\n", "did you mean microsoft.allowed_tenants?"),
        (
            "[security]\nsecret = 'x'\n",
            "Unknown setting 'security.secret' in {path}; did you mean security.secret_key?",
        ),
        ("data_dri = '/tmp'\n", "Unknown setting 'data_dri' in {path}; did you mean data_dir?"),
        ("[sync]\nzzz = 1\n", "Unknown setting 'sync.zzz' in {path}; the known ones are backoff_base, backoff_max,"),
    ],
)
def test_a_mistyped_key_stops_postroom_naming_the_nearest_one(tmp_path: Path, toml: str, sentence: str) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"HOME": str(tmp_path)})
    assert sentence.format(path=path) in str(err.value)


def test_defaults_are_the_dataclasses_own(tmp_path: Path) -> None:
    """With no file, every section is its dataclass's defaults (one place to change a default)."""
    import dataclasses

    from postroom import config as cfgmod

    cfg = load_config(env={"HOME": str(tmp_path), "POSTROOM_SECRET_KEY": "k" * 20})
    for section, cls in (
        (cfg.sync, cfgmod.SyncConfig),
        (cfg.celery, cfgmod.CeleryConfig),
        (cfg.metrics, cfgmod.MetricsConfig),
        (cfg.logging, cfgmod.LoggingConfig),
        (cfg.imap, cfgmod.ImapDefaults),
        (cfg.google, cfgmod.GoogleConfig),
        (cfg.microsoft, cfgmod.MicrosoftConfig),
        (cfg.web, cfgmod.WebConfig),
    ):
        assert section == cls(), dataclasses.asdict(section)
