"""`postroom send` and `postroom outbox list|retry` as a recruiter uses them, against Dovecot and an
SMTP server with fault modes, on SQLite and PostgreSQL: text for people, --json for machines, one
sentence (never a traceback) when something cannot be done or may have gone wrong."""

from __future__ import annotations

import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from postroom.models import OutboxMessage
from tests.cli.harness import Cli
from tests.rig.faulty_smtp import FaultySmtp
from tests.rig.fixtures import Mailbox

KEYS = {"id", "message_id", "account_id", "status", "recipients", "refused", "error"}


@pytest.fixture
def account(cli: Cli, mailbox: Mailbox, smtp: FaultySmtp) -> int:
    mailbox.ensure_folders()
    args = mailbox.add_imap_args("BOX_PASSWORD")
    args[args.index("--smtp-port") + 1] = str(smtp.port)
    os.environ["BOX_PASSWORD"] = mailbox.password
    data = cli.json(*args)
    assert isinstance(data, dict)
    return int(data["id"])


@pytest.fixture
def body(tmp_path: Path) -> str:
    path = tmp_path / "body.txt"
    path.write_text("Thank you for applying.\n", encoding="utf-8")
    return str(path)


def rcpt(kind: str = "ann") -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.org"


def send(cli: Cli, account: int, body: str, *to: str, ok: bool = True, extra: tuple[str, ...] = ()) -> tuple:  # type: ignore[type-arg]
    args = ["send", "--account", str(account), "--subject", "Your application", "--body-file", body]
    for addr in to:
        args += ["--to", addr]
    return cli(*args, *extra, ok=ok)


def test_send_that_ends_uncertain_exits_non_zero_saying_where_to_check(
    cli: Cli, mailbox: Mailbox, smtp: FaultySmtp, account: int, body: str
) -> None:
    to = rcpt("dropdata")
    code, out, err = send(cli, account, body, to, ok=False)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("postroom: error: Message 1 (<")
    assert "may have gone out" in err and f"Sent folder of {mailbox.address}" in err and to in err
    assert "'postroom outbox retry 1'" in err

    (listed,) = cli.json("outbox", "list")  # type: ignore[misc]
    assert set(listed) >= KEYS and listed["status"] == "uncertain" and listed["recipients"] == [to]
    assert listed["refused"] == {} and "no answer after the message was handed over" in listed["error"]
    _, text, _ = cli("outbox", "list", "--status", "uncertain")
    assert "uncertain" in text and listed["message_id"] in text and "error: " in text
    assert cli.json("outbox", "list", "--status", "sent") == []

    code, out, err = cli("outbox", "retry", "1", ok=False)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "may already have gone out" in err and "--force" in err and to in err
    assert len(smtp.received(listed["message_id"])) == 1


def test_send_json_reports_an_uncertain_message_too(cli: Cli, smtp: FaultySmtp, account: int, body: str) -> None:
    code, out, err = send(cli, account, body, rcpt("dropdata"), ok=False, extra=("--json",))
    assert code == 1 and "may have gone out" in err
    data = json.loads(out)
    assert data["status"] == "uncertain" and data["id"] == 1 and data["message_id"].startswith("<")


def test_forced_retry_of_an_uncertain_message_sends_it_again(
    cli: Cli, mailbox: Mailbox, smtp: FaultySmtp, account: int, body: str
) -> None:
    send(cli, account, body, rcpt("dropfirst"), ok=False)
    code, out, err = cli("outbox", "retry", "1", "--force")
    assert code == 0 and out.strip().endswith("sent.") and err == ""
    (listed,) = cli.json("outbox", "list")  # type: ignore[misc]
    assert listed["status"] == "sent" and len(smtp.received(listed["message_id"])) == 2
    _, out, _ = cli("outbox", "retry", "1")
    assert "was already sent; nothing was done." in out


def test_retry_finds_an_uncertain_message_in_sent(
    cli: Cli, mailbox: Mailbox, smtp: FaultySmtp, account: int, body: str
) -> None:
    send(cli, account, body, rcpt("dropdata"), ok=False)
    (listed,) = cli.json("outbox", "list")  # type: ignore[misc]
    ((_, raw),) = smtp.received(listed["message_id"])
    mailbox.append(raw, "Sent")  # the server filed it after all
    code, out, _ = cli("outbox", "retry", "1")
    assert code == 0 and f"is in the Sent folder of {mailbox.address}, so it did go out" in out
    assert cli.json("outbox", "list", "--status", "sent")[0]["id"] == 1  # type: ignore[index]
    assert len(smtp.received(listed["message_id"])) == 1


def test_a_refused_recipient_is_shown_not_hidden(cli: Cli, smtp: FaultySmtp, account: int, body: str) -> None:
    ok, refused = rcpt("ann"), rcpt("permfail")
    code, out, err = send(cli, account, body, ok, refused)
    assert code == 0 and out.strip().startswith("<")
    reason = "550 5.1.1 Simulated permanent failure: no such user"
    assert err == f"postroom: warning: the server refused {refused} ({reason}); the others were sent.\n"
    (listed,) = cli.json("outbox", "list", "--status", "sent")  # type: ignore[misc]
    assert listed["refused"] == {refused: "550 5.1.1 Simulated permanent failure: no such user"}
    assert listed["recipients"] == [ok, refused]
    _, text, _ = cli("outbox", "list")
    assert f"refused: {refused} (550 5.1.1" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--in-reply-to", "<a\r\nBcc: someone@else>"), "In-Reply-To must be one Message-ID like <id@example.com>"),
        (("--in-reply-to", "<two@x.test> <ids@x.test>"), "In-Reply-To must be one Message-ID"),
        (("--subject", "Hi\r\nBcc: someone@else"), "The subject contains a line break or another control character."),
        (("--to", "ann@example.org\r\nBcc: someone@else"), "contains a line break or another control character."),
    ],
)
def test_header_injection_is_refused_in_one_sentence(
    cli: Cli, smtp: FaultySmtp, account: int, body: str, extra: tuple[str, ...], message: str
) -> None:
    before = len(smtp.transactions())
    args = ["send", "--account", str(account), "--to", rcpt(), "--subject", "Hi", "--body-file", body, *extra]
    code, out, err = cli(*args, ok=False)
    assert code == 1 and out == ""
    assert err.startswith("postroom: error: ") and message in err and err.endswith(".\n") and err.count("\n") == 1
    assert len(smtp.transactions()) == before
    assert cli.json("outbox", "list") == []


def test_retry_refuses_a_message_a_live_process_is_sending(
    cli: Cli, account: int, body: str, env: dict[str, str]
) -> None:
    send(cli, account, body, rcpt("ann"))
    engine = create_engine(env["POSTROOM_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:  # as if another `postroom send` of this machine were sending it right now
            conn.execute(
                update(OutboxMessage).values(
                    status="sending",
                    owner=f"{socket.gethostname()}:{os.getpid()}:other",
                    claimed_until=datetime.now(UTC) + timedelta(minutes=5),
                )
            )
    finally:
        engine.dispose()
    code, _, err = cli("outbox", "retry", "1", ok=False)
    assert code == 1 and "is being sent by a process that is still running" in err and err.count("\n") == 1


def test_outbox_commands_answer_wrong_input_in_one_sentence(cli: Cli) -> None:
    code, out, err = cli("outbox", "retry", "999", ok=False)
    assert (code, out, err) == (1, "", "postroom: error: No outbox message with id 999.\n")
    code, _, err = cli("outbox", "list", "--status", "lost", ok=False)
    assert code == 2 and "invalid choice: 'lost'" in err and err.count("\n") == 1
    _, out, _ = cli("outbox", "list")
    assert out == "The outbox is empty.\n"
