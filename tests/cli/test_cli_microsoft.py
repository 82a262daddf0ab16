"""`postroom accounts add-graph` and `add-ews`: what they store, and one sentence for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import Config
from postroom.crypto import SecretBox
from postroom.models import MailAccount
from tests.cli.harness import Cli
from tests.providers.test_ews_oauth import ews_oauth_rig
from tests.rig.fixtures import make_message
from tests.standins.ews_rig import ADDRESS as EWS_ADDRESS
from tests.standins.ews_rig import PASSWORD as EWS_PASSWORD
from tests.standins.ews_rig import ews_rig
from tests.standins.graph_rig import ADDRESS, graph_rig
from tests.web.microsoft_rig import microsoft_config

EWS_URL = "https://mail.example.com/EWS/Exchange.asmx"


def _stored(config: Config, sessions, account_id: int) -> tuple[MailAccount, dict[str, str]]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        account = s.get_one(MailAccount, account_id)
        s.expunge(account)
    return account, SecretBox(config.security.secret_key).open(account.secret)


@pytest.fixture
def ms_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """A [microsoft] app, from the environment as a deployment would set it."""
    monkeypatch.setenv("POSTROOM_MICROSOFT_CLIENT_ID", "6731de76-14a6-49ae-97bc-6eba6914391e")
    monkeypatch.setenv("POSTROOM_MICROSOFT_CLIENT_SECRET", "app-secret")


def test_add_graph_imports_a_grant_that_syncs_and_refuses_a_duplicate(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with graph_rig() as rig:
        ms = microsoft_config(rig)
        toml = tmp_path / "postroom.toml"
        toml.write_text(
            f'[microsoft]\nclient_id = "{ms.client_id}"\nauthority = "{ms.authority}"\n'
            f'graph_root = "{ms.graph_root}"\nca_file = "{ms.ca_file}"\ninstance_discovery = false\n'
        )
        monkeypatch.setenv("POSTROOM_CONFIG", str(toml))
        monkeypatch.setenv("POSTROOM_MICROSOFT_CLIENT_SECRET", ms.client_secret)
        monkeypatch.setenv("RITA_REFRESH_TOKEN", rig.refresh_token)
        rig.deliver(make_message(message_id="<apply@ms.test>", subject="Application", from_="jane.doe@gmail.com"))

        added = cli.json("accounts", "add-graph", "--email", ADDRESS, "--refresh-token-env", "RITA_REFRESH_TOKEN")
        assert isinstance(added, dict)
        (listed,) = cli.json("accounts", "list")  # type: ignore[misc]
        assert (listed["id"], listed["provider"], listed["status"]) == (added["id"], "graph", "active")
        _, out, _ = cli("sync", "--once")
        assert "1 new" in out
        threads = cli.json("threads", "--account", str(added["id"]))
        assert [t["message_ids"] for t in threads] == [["<apply@ms.test>"]]  # type: ignore[union-attr]

        code, _, err = cli(
            "accounts", "add-graph", "--email", ADDRESS.upper(), "--refresh-token-env", "RITA_REFRESH_TOKEN", ok=False
        )
        assert (code, err) == (
            1,
            f"postroom: error: A Microsoft 365 account for {ADDRESS} already exists (id {added['id']}).\n",
        )


def test_add_graph_input_problems_are_one_sentence(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    monkeypatch.setenv("SOME_TOKEN", "1.AQ-token")
    args = ["accounts", "add-graph", "--email", "rita@contoso.test", "--refresh-token-env"]
    code, _, err = cli(*args, "NO_SUCH_TOKEN_VAR", ok=False)
    assert (code, err) == (
        1,
        "postroom: error: Environment variable NO_SUCH_TOKEN_VAR (named by --refresh-token-env) is not set.\n",
    )
    code, _, err = cli(*args, "SOME_TOKEN", ok=False)  # no [microsoft] app configured
    assert (code, err) == (
        1,
        "postroom: error: Settings microsoft.client_id and microsoft.client_secret must be set to connect "
        "Microsoft 365 accounts (see docs/microsoft.md).\n",
    )
    monkeypatch.setenv("POSTROOM_MICROSOFT_CLIENT_ID", "cid")
    monkeypatch.setenv("POSTROOM_MICROSOFT_CLIENT_SECRET", "secret")
    code, _, err = cli("accounts", "add-graph", "--email", "rita", "--refresh-token-env", "SOME_TOKEN", ok=False)
    assert (code, err) == (1, "postroom: error: 'rita' is not an email address.\n")
    monkeypatch.setenv("BLANK_TOKEN", " ")
    code, _, err = cli(*args, "BLANK_TOKEN", ok=False)
    assert (code, err) == (1, "postroom: error: The Microsoft refresh token is empty.\n")
    assert cli.json("accounts", "list") == []


def test_add_ews_with_a_password_stores_it_sealed(
    cli: Cli, config: Config, sessions, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EXCHANGE_PASSWORD", "Winter2026!")
    added = cli.json(
        "accounts",
        "add-ews",
        "--email",
        "Alice@Example.com",
        "--ews-url",
        EWS_URL,
        "--username",
        "EXAMPLE\\alice",
        "--password-env",
        "EXCHANGE_PASSWORD",
    )
    assert isinstance(added, dict)
    account, secret = _stored(config, sessions, added["id"])
    assert (account.provider, account.email, account.status) == ("ews", "alice@example.com", "active")
    assert account.settings == {"ews_url": EWS_URL, "auth": "ntlm"}  # ntlm: the default with a password
    assert secret == {"username": "EXAMPLE\\alice", "password": "Winter2026!"}
    assert b"Winter2026!" not in account.secret
    (listed,) = cli.json("accounts", "list")  # type: ignore[misc]
    assert (listed["provider"], listed["status"]) == ("ews", "active")


def test_add_ews_with_oauth_stores_the_grant_and_the_app_it_belongs_to(
    cli: Cli, config: Config, sessions, ms_app: None, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EXCHANGE_TOKEN", "1.AQ-exchange-grant")
    added = cli.json(
        "accounts",
        "add-ews",
        "--email",
        "bob@example.com",
        "--ews-url",
        EWS_URL,
        "--refresh-token-env",
        "EXCHANGE_TOKEN",
    )
    assert isinstance(added, dict)
    account, secret = _stored(config, sessions, added["id"])
    assert account.settings == {
        "ews_url": EWS_URL,
        "auth": "oauth2",  # the default with a refresh token
        "authority": "https://login.microsoftonline.com/organizations",
        "client_id": "6731de76-14a6-49ae-97bc-6eba6914391e",
    }
    assert secret == {"refresh_token": "1.AQ-exchange-grant"}
    assert b"1.AQ-exchange-grant" not in account.secret and "app-secret" not in str(account.settings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--ews-url", "http://mail.example.com/EWS/Exchange.asmx", "--username", "u", "--password-env", "PW"],
            "Refusing to send credentials unencrypted to mail.example.com; --ews-url must use https "
            "(plain http only for this machine).",
        ),
        (
            ["--ews-url", "mail.example.com", "--username", "u", "--password-env", "PW"],
            "--ews-url must be an https URL such as https://mail.example.com/EWS/Exchange.asmx, "
            "not 'mail.example.com'.",
        ),
        (
            ["--ews-url", EWS_URL, "--username", "u", "--password-env", "PW", "--refresh-token-env", "TOKEN"],
            "Give either --password-env or --refresh-token-env, not both.",
        ),
        (["--ews-url", EWS_URL], "Give --username and --password-env, or --refresh-token-env, to sign in to Exchange."),
        (["--ews-url", EWS_URL, "--password-env", "PW"], "--auth ntlm needs --username and --password-env."),
        (
            ["--ews-url", EWS_URL, "--username", "u", "--password-env", "PW", "--auth", "oauth2"],
            "--auth oauth2 signs in with --refresh-token-env, not a username and password.",
        ),
        (
            ["--ews-url", EWS_URL, "--refresh-token-env", "TOKEN", "--auth", "basic"],
            "--auth basic signs in with --username and --password-env, not a refresh token.",
        ),
        (
            ["--ews-url", EWS_URL, "--refresh-token-env", "TOKEN"],
            "Settings microsoft.client_id and microsoft.client_secret must be set to connect Exchange OAuth "
            "accounts (see docs/microsoft.md).",
        ),
        (
            ["--ews-url", EWS_URL, "--username", "u", "--password-env", "UNSET_PASSWORD_VAR"],
            "Environment variable UNSET_PASSWORD_VAR (named by --password-env) is not set.",
        ),
        (
            ["--ews-url", EWS_URL, "--username", "u", "--password-env", "PW", "--ca-file", "/no/such/ca.pem"],
            "--ca-file /no/such/ca.pem is not a file.",
        ),
    ],
)
def test_add_ews_input_problems_are_one_sentence_and_store_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    monkeypatch.setenv("PW", "pw")
    monkeypatch.setenv("TOKEN", "1.AQ-token")
    monkeypatch.delenv("UNSET_PASSWORD_VAR", raising=False)
    code, out, err = cli("accounts", "add-ews", "--email", "alice@example.com", *extra, ok=False)
    assert (code, out, err) == (1, "", f"postroom: error: {message}\n")
    assert cli.json("accounts", "list") == []


def test_add_ews_accepts_plain_http_on_this_machine_and_refuses_a_duplicate(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", "pw")
    args = ["accounts", "add-ews", "--email", "alice@example.com", "--username", "alice", "--password-env", "PW"]
    added = cli.json(*args, "--ews-url", "http://127.0.0.1:8080/EWS/Exchange.asmx", "--auth", "basic")
    assert isinstance(added, dict)
    code, _, err = cli(*args, "--ews-url", EWS_URL, ok=False)
    assert (code, err) == (
        1,
        f"postroom: error: An EWS account for alice@example.com already exists (id {added['id']}).\n",
    )


@pytest.mark.parametrize("command", [["accounts", "add-graph"], ["accounts", "add-ews"]])
def test_microsoft_commands_have_help(command: list[str], cli: Cli) -> None:
    _, out, _ = cli(*command, "--help")
    assert "usage: postroom accounts" in out and "--refresh-token-env VAR" in out


def test_add_ews_mailbox_syncs_through_the_exchange_stand_in(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    with ews_rig(https=True) as rig:
        assert rig.ca_file is not None
        rig.deliver(make_message(message_id="<apply@ews.test>", subject="Application", from_="jane.doe@gmail.com"))
        monkeypatch.setenv("EXCHANGE_PASSWORD", EWS_PASSWORD)
        added = cli.json(
            "accounts",
            "add-ews",
            "--email",
            EWS_ADDRESS,
            "--ews-url",
            rig.endpoint,
            "--username",
            EWS_ADDRESS,
            "--password-env",
            "EXCHANGE_PASSWORD",
            "--auth",
            "basic",
            "--ca-file",
            rig.ca_file,
        )
        assert isinstance(added, dict)
        _, out, _ = cli("sync", "--once")
        assert "1 new" in out
        threads = cli.json("threads", "--account", str(added["id"]))
        assert [t["message_ids"] for t in threads] == [["<apply@ews.test>"]]  # type: ignore[union-attr]


def test_add_ews_with_oauth_syncs_and_keeps_the_rotated_refresh_token(
    cli: Cli,
    config: Config,
    sessions,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    with ews_oauth_rig() as rig:
        rig.ews.mailbox(EWS_ADDRESS).add(make_message(message_id="<oauth@ews.test>", subject="Application"), "inbox")
        toml = tmp_path / "postroom.toml"
        toml.write_text(
            f'[microsoft]\nclient_id = "{rig.identity.client_id}"\nauthority = "{rig.authority}"\n'
            "instance_discovery = false\n"
        )
        monkeypatch.setenv("POSTROOM_CONFIG", str(toml))
        monkeypatch.setenv("POSTROOM_MICROSOFT_CLIENT_SECRET", rig.identity.client_secret)
        monkeypatch.setenv("RITA_REFRESH_TOKEN", rig.refresh_token)
        # one CA signs both stand-ins; the EWS account trusts it with --ca-file, msal through the environment
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", rig.ca_file)
        args = ["--email", EWS_ADDRESS, "--ews-url", rig.endpoint, "--refresh-token-env", "RITA_REFRESH_TOKEN"]
        added = cli.json("accounts", "add-ews", *args, "--auth", "oauth2", "--ca-file", rig.ca_file)
        assert isinstance(added, dict)
        _, out, _ = cli("sync", "--once")
        assert "1 new" in out
        threads = cli.json("threads", "--account", str(added["id"]))
        assert [t["message_ids"] for t in threads] == [["<oauth@ews.test>"]]  # type: ignore[union-attr]
        _, secret = _stored(config, sessions, int(added["id"]))
        assert rig.refresh_calls() == [rig.refresh_token]
        assert secret["refresh_token"] != rig.refresh_token  # the rotated one, sealed
        assert rig.identity.user_for(secret["access_token"]) == (EWS_ADDRESS, "")
