"""The `postroom` command as a newcomer uses it: against real Dovecot/Postfix, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import main
from tests.cli.harness import Cli
from tests.rig.fixtures import Mailbox, make_message
from tests.standins.gmail_rig import ADDRESS as GMAIL_ADDRESS
from tests.standins.gmail_rig import gmail_rig

POSTROOM = [sys.executable, "-m", "cli"]


def test_newcomer_flow_add_sync_threads_history(cli: Cli, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    box = new_mailbox()
    box.append(
        make_message(
            message_id="<apply@x.test>", subject="Application: designer", from_="Jane <jane.doe@gmail.com>", date=None
        )
    )
    box.append(make_message(message_id="<noise@x.test>", subject="Lunch?", from_="colleague@corp.test"))
    account_id = cli.add_imap(box)
    accounts = cli.json("accounts", "list")
    assert accounts == [
        {
            "id": account_id,
            "email": box.address,
            "provider": "imap",
            "status": "active",
            "last_sync_at": None,
            "last_success_at": None,
            "last_error": None,
        }
    ]
    applicant = cli.json(
        "applicants", "add", "--name", "Jane Doe", "--email", "janedoe@gmail.com", "--email", "jane@work.test"
    )
    assert isinstance(applicant, dict)

    _, out, _ = cli("sync", "--once")
    assert "2 new" in out and "1 bodies" in out

    threads = cli.json("threads", "--account", str(account_id))
    assert sorted((t["subject"], t["message_ids"]) for t in threads) == [  # type: ignore[union-attr]
        ("Application: designer", ["<apply@x.test>"]),
        ("Lunch?", ["<noise@x.test>"]),
    ]
    history = cli.json("history", "--applicant", str(applicant["id"]))
    assert [(h["message_id"], h["direction"], h["account_ids"]) for h in history] == [  # type: ignore[union-attr]
        ("<apply@x.test>", "inbound", [account_id])
    ]
    assert history[0]["date"].endswith("+00:00")  # type: ignore[index]

    (listed,) = cli.json("accounts", "list")  # type: ignore[misc]
    assert listed["last_sync_at"] and listed["status"] == "active"


def test_send_delivers_and_keeps_a_copy_in_sent_then_threads_the_reply(cli: Cli, new_mailbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sender, recipient = new_mailbox(), new_mailbox()
    sender.append(
        make_message(message_id="<question@x.test>", subject="Question", from_=recipient.address, to=sender.address)
    )
    account_id = cli.add_imap(sender)
    cli("sync", "--once")
    body = tmp_path / "body.txt"
    body.write_text("Thanks — we will be in touch.\n", encoding="utf-8")

    _, out, _ = cli(
        "send",
        "--account",
        str(account_id),
        "--to",
        recipient.address,
        "--subject",
        "Re: Question",
        "--body-file",
        str(body),
        "--in-reply-to",
        "<question@x.test>",
    )
    message_id = out.strip()
    assert message_id.startswith("<") and message_id.endswith(">")

    recipient.wait_for(lambda: len(recipient.uids()) == 1)
    (delivered,) = recipient.fetch_raw().values()
    assert f"Message-ID: {message_id}".encode() in delivered
    assert b"In-Reply-To: <question@x.test>" in delivered and b"References: <question@x.test>" in delivered
    (stored,) = sender.fetch_raw("Sent").values()
    assert f"Message-ID: {message_id}".encode() in stored

    cli("sync", "--once")
    threads = cli.json("threads", "--account", str(account_id))
    assert [t["message_ids"] for t in threads] == [["<question@x.test>", message_id]]  # type: ignore[union-attr]


def test_sync_exits_non_zero_naming_the_failed_account(cli: Cli, new_mailbox) -> None:  # type: ignore[no-untyped-def]
    good, bad = new_mailbox(), new_mailbox()
    cli.add_imap(good)
    bad.password = "not-the-password"
    bad_id = cli.add_imap(bad)
    code, _, err = cli("sync", "--once", ok=False)
    assert code == 1
    assert f"1 of 2 accounts failed to sync: {bad_id} ({bad.address})" in err
    assert err.count("\n") == 1
    status = {a["id"]: a["status"] for a in cli.json("accounts", "list")}  # type: ignore[union-attr]
    assert status[bad_id] == "reconnect-needed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "--applicant", "99"], "No applicant with id 99."),
        (["threads", "--account", "42"], "No mail account with id 42."),
        (["sync", "--once", "--account", "7"], "No mail account with id 7."),
        (
            ["applicants", "add", "--name", "X", "--email", "not-an-address"],
            "'not-an-address' is not an email address.",
        ),
        (
            ["send", "--account", "1", "--to", "a@b.test", "--subject", "s", "--body-file", "/no/such/file"],
            "Body file /no/such/file does not exist.",
        ),
    ],
)
def test_wrong_input_gets_one_clear_sentence(cli: Cli, args: list[str], message: str) -> None:
    code, out, err = cli(*args, ok=False)
    assert code == 1 and out == ""
    assert err == f"postroom: error: {message}\n"


def test_account_input_is_checked_before_anything_is_stored(cli: Cli, mailbox: Mailbox) -> None:
    os.environ.pop("UNSET_PASSWORD_VAR", None)
    base = [
        "accounts",
        "add-imap",
        "--email",
        mailbox.address,
        "--username",
        "u",
        "--imap-port",
        "993",
        "--imap-security",
        "ssl",
        "--smtp-host",
        "smtp.example.com",
        "--smtp-port",
        "587",
    ]
    code, _, err = cli(
        *base,
        "--password-env",
        "UNSET_PASSWORD_VAR",
        "--imap-host",
        "imap.example.com",
        "--smtp-security",
        "starttls",
        ok=False,
    )
    assert code == 1 and "Environment variable UNSET_PASSWORD_VAR (named by --password-env) is not set." in err
    os.environ["SOME_PASSWORD"] = "pw"
    code, _, err = cli(
        *base, "--password-env", "SOME_PASSWORD", "--imap-host", "imap.example.com", "--smtp-security", "none", ok=False
    )
    assert code == 1 and "Refusing to send the password unencrypted to smtp.example.com" in err
    code, _, err = cli(
        *base,
        "--password-env",
        "SOME_PASSWORD",
        "--imap-host",
        "imap.example.com",
        "--smtp-security",
        "sometimes",
        ok=False,
    )
    assert code == 2 and "Argument --smtp-security: invalid choice: 'sometimes'" in err and err.count("\n") == 1
    assert cli.json("accounts", "list") == []


def test_duplicate_account_is_refused(cli: Cli, mailbox: Mailbox) -> None:
    account_id = cli.add_imap(mailbox)
    code, _, err = cli(*mailbox.add_imap_args("BOX_PASSWORD", email=mailbox.address.upper()), ok=False)
    assert code == 1 and f"already exists (id {account_id})" in err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["db", "upgrade"],
        ["accounts", "add-imap"],
        ["accounts", "add-gmail"],
        ["accounts", "list"],
        ["applicants", "add"],
        ["sync"],
        ["threads"],
        ["history"],
        ["send"],
        ["worker"],
    ],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: postroom" in capsys.readouterr().out


def test_bad_config_file_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "postroom.toml"
    cfg.write_text('[sync]\nbody_policy = "everything"\n')
    assert main(["--config", str(cfg), "accounts", "list"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "postroom: error: Setting sync.body_policy must be one of applicants, all, none, not 'everything'.\n"
    )


def test_worker_syncs_until_sigterm_then_exits_cleanly(env: dict[str, str], mailbox: Mailbox) -> None:
    mailbox.append(make_message(message_id="<w1@x.test>"))
    full_env = {
        **os.environ,
        **env,
        "BOX_PASSWORD": mailbox.password,
        "POSTROOM_SYNC_INTERVAL": "1",
        "POSTROOM_LOG_LEVEL": "INFO",
    }
    subprocess.run(
        [*POSTROOM, *mailbox.add_imap_args("BOX_PASSWORD")],
        env=full_env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [*POSTROOM, "worker"], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            lines.append(line)
            if "1 new" in line:
                break
        assert any("1 new" in line for line in lines), lines
        mailbox.append(make_message(message_id="<w2@x.test>"))  # picked up on the next interval
        while time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            lines.append(line)
            if "1 new" in line:
                break
        assert sum("1 new" in line for line in lines) == 2, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        rest = proc.stderr.read()  # type: ignore[union-attr]
        assert "worker stopped" in rest and "Traceback" not in rest
        assert all(f"[account {1}]" in line for line in lines if " new, " in line)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_console_script_is_installed() -> None:
    exe = shutil.which("postroom", path=str(Path(sys.executable).parent))
    assert exe, "the `postroom` console command is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "accounts" in out and "worker" in out


def test_unreachable_database_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("POSTROOM_DATABASE_URL", "postgresql://postroom@127.0.0.1:1/nothing")
    monkeypatch.setenv("POSTROOM_SECRET_KEY", "k" * 24)
    assert main(["accounts", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("postroom: error: Cannot reach the database at ") and err.count("\n") == 1


def test_server_database_without_schema_asks_for_db_upgrade(
    pg_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if pg_url is None:
        pytest.skip("PostgreSQL not configured (POSTROOM_TEST_POSTGRES_URL is empty)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "postroom_cli_empty"'))
        conn.execute(text('CREATE DATABASE "postroom_cli_empty"'))
    admin.dispose()
    empty = make_url(pg_url).set(database="postroom_cli_empty").render_as_string(hide_password=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("POSTROOM_DATABASE_URL", empty)
    monkeypatch.setenv("POSTROOM_SECRET_KEY", "k" * 24)
    assert main(["accounts", "list"]) == 1
    assert capsys.readouterr().err == (
        "postroom: error: The database schema is not up to date; run 'postroom db upgrade' first.\n"
    )
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out.startswith("Database at revision ")
    assert main(["accounts", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_add_gmail_imports_a_grant_that_syncs_and_refuses_a_duplicate(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gmail_rig() as rig:
        for key, value in {
            "POSTROOM_GOOGLE_CLIENT_ID": rig.standin.client_id,
            "POSTROOM_GOOGLE_CLIENT_SECRET": rig.standin.client_secret,
            "POSTROOM_GOOGLE_TOKEN_URI": rig.server.url + "/token",
            "POSTROOM_GOOGLE_API_ROOT": rig.server.url + "/",
            "RITA_REFRESH_TOKEN": rig.refresh_token,
        }.items():
            monkeypatch.setenv(key, value)
        rig.deliver(make_message(message_id="<apply@gm.test>", subject="Application", from_="jane.doe@gmail.com"))
        added = cli.json("accounts", "add-gmail", "--email", GMAIL_ADDRESS, "--refresh-token-env", "RITA_REFRESH_TOKEN")
        assert isinstance(added, dict)
        (listed,) = cli.json("accounts", "list")  # type: ignore[misc]
        assert (listed["id"], listed["provider"], listed["status"]) == (added["id"], "gmail", "active")
        _, out, _ = cli("sync", "--once")
        assert "2 new" in out  # one message, two copies: INBOX and All Mail
        threads = cli.json("threads", "--account", str(added["id"]))
        assert [t["message_ids"] for t in threads] == [["<apply@gm.test>"]]  # type: ignore[union-attr]

        code, _, err = cli(
            "accounts",
            "add-gmail",
            "--email",
            GMAIL_ADDRESS.upper(),
            "--refresh-token-env",
            "RITA_REFRESH_TOKEN",
            ok=False,
        )
        assert code == 1
        assert err == f"postroom: error: A Gmail account for {GMAIL_ADDRESS} already exists (id {added['id']}).\n"


def test_add_gmail_input_problems_are_one_sentence(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    monkeypatch.setenv("SOME_TOKEN", "1//token")
    args = ["accounts", "add-gmail", "--email", "rita@example.test", "--refresh-token-env"]
    code, _, err = cli(*args, "NO_SUCH_TOKEN_VAR", ok=False)
    assert (code, err) == (
        1,
        "postroom: error: Environment variable NO_SUCH_TOKEN_VAR (named by --refresh-token-env) is not set.\n",
    )
    code, _, err = cli(*args, "SOME_TOKEN", ok=False)  # no [google] client configured
    assert (code, err) == (
        1,
        "postroom: error: Settings google.client_id and google.client_secret must be set to connect Gmail "
        "accounts (see docs/gmail.md).\n",
    )
    monkeypatch.setenv("POSTROOM_GOOGLE_CLIENT_ID", "cid")
    monkeypatch.setenv("POSTROOM_GOOGLE_CLIENT_SECRET", "secret")
    code, _, err = cli("accounts", "add-gmail", "--email", "rita", "--refresh-token-env", "SOME_TOKEN", ok=False)
    assert (code, err) == (1, "postroom: error: 'rita' is not an email address.\n")
    assert cli.json("accounts", "list") == []
