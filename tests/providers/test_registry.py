"""The backend registry: every backend is a ProviderFactory, and says itself what it takes from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postroom.config import Config, load_config
from providers.base import Credentials, ProviderFactory
from providers.errors import BackendNotFound
from providers.registry import BACKENDS, backend_class


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_is_a_provider_factory(name: str) -> None:
    factory = backend_class(name)
    assert isinstance(factory, ProviderFactory)
    assert f"{factory.__module__}:{factory.__qualname__}" == BACKENDS[name]  # type: ignore[attr-defined]


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(
        BackendNotFound, match=r"Unknown mail backend 'pop3'; known backends: ews, gmail, graph, imap\."
    ):
        backend_class("pop3")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {
        "HOME": str(tmp_path),
        "POSTROOM_GOOGLE_CLIENT_ID": "g-id",
        "POSTROOM_GOOGLE_CLIENT_SECRET": "g-secret",
        "POSTROOM_MICROSOFT_CLIENT_ID": "m-id",
        "POSTROOM_MICROSOFT_CLIENT_SECRET": "m-secret",
        "POSTROOM_MICROSOFT_TENANT": "contoso.test",
        "POSTROOM_MICROSOFT_CA_FILE": str(ca),
    }
    return load_config(env=env)


OAUTH = Credentials("rita@x.test", refresh_token="1//refresh")
PASSWORD = Credentials("rita@x.test", password="pw")
GOOGLE = {"client_id": "g-id", "client_secret": "g-secret"}
MICROSOFT = {"client_id": "m-id", "authority": "https://login.microsoftonline.com/contoso.test"}
MICROSOFT |= {"client_secret": "m-secret", "ca_bundle": "CA"}  # "CA": microsoft.ca_file
OWN_APP = {"authority": "https://login.example/t", "ca_bundle": "/own.pem"}
GMAIL_SMTP = {"smtp_host": "smtp.gmail.com", "smtp_port": 587, "smtp_security": "starttls"}


@pytest.mark.parametrize(
    ("name", "stored", "credentials", "expected"),
    [
        ("imap", {"imap_host": "mail.x.test"}, PASSWORD, {"imap_host": "mail.x.test"}),
        ("gmail", {}, OAUTH, GOOGLE),
        # the grant belongs to the client it came from; the secret is always the config's, never stored
        ("gmail", {"client_id": "old-id", "client_secret": "stale"}, OAUTH, {**GOOGLE, "client_id": "old-id"}),
        ("gmail", {}, Credentials("rita@x.test", access_token="ya29"), {}),
        ("graph", {}, OAUTH, MICROSOFT),
        ("graph", OWN_APP, OAUTH, {**MICROSOFT, **OWN_APP}),
        # tracked sends over the service's SMTP: where it is comes from the config unless the account says
        ("gmail", {"smtp_submission": True}, OAUTH, {**GOOGLE, "smtp_submission": True, **GMAIL_SMTP}),
        (
            "graph",
            {"smtp_submission": True, "smtp_port": 465},
            OAUTH,
            {
                **MICROSOFT,
                "smtp_submission": True,
                "smtp_host": "smtp.office365.com",
                "smtp_port": 465,
                "smtp_security": "starttls",
            },
        ),
        ("ews", {"auth": "oauth2"}, OAUTH, {"auth": "oauth2", **MICROSOFT}),
        ("ews", {"auth": "basic"}, PASSWORD, {"auth": "basic", "ca_bundle": "CA"}),
    ],
)
def test_each_backend_takes_its_oauth_client_and_ca_from_the_config(
    config: Config, name: str, stored: dict[str, Any], credentials: Credentials, expected: dict[str, Any]
) -> None:
    before = dict(stored)
    options = backend_class(name).options_with_config(stored, credentials, config)
    assert options == {k: config.microsoft.ca_file if v == "CA" else v for k, v in expected.items()}
    assert stored == before  # the account's own settings are left as they are
