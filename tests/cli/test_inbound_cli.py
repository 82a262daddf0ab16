"""`postroom inbound add|run|list|retry` as the contract spells them, against the rig's Dovecot:
the JSON shapes, text for people, and wrong input in one sentence naming its flag, exit code 1,
no traceback. SQLite and PostgreSQL."""

from __future__ import annotations

from tests.cli.harness import Cli
from tests.rig.fixtures import Mailbox

ITEM_KEYS = {"id", "message_id", "status", "reason", "data", "text", "attachments", "routed_to"}


def _mail(message_id: str, body: str) -> bytes:
    return (
        f"From: Ann <ann@example.org>\r\nTo: jobs@example.test\r\nSubject: Hello\r\nMessage-ID: {message_id}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def test_inbound_commands_as_the_contract_spells_them(cli: Cli, mailbox: Mailbox) -> None:
    account = cli.add_imap(mailbox)
    added = cli.json("inbound", "add", "--account", str(account), "--processed", "Done")
    assert isinstance(added, dict) and set(added) == {"id"} and isinstance(added["id"], int)
    mailbox.append(_mail("<one@example.org>", "Name: Ada\r\nRole: Engineer"))
    mailbox.append(b"not a message\r\n")

    assert cli.json("inbound", "run", "--once") == {"processed": 1, "failed": 1}
    assert mailbox.uids("INBOX") == [] and len(mailbox.uids("Done")) == 1 and len(mailbox.uids("failed")) == 1

    items = cli.json("inbound", "list")
    assert isinstance(items, list) and len(items) == 2 and all(set(i) >= ITEM_KEYS for i in items)
    (done,) = cli.json("inbound", "list", "--status", "processed")  # type: ignore[misc]
    assert done["data"] == {"name": "Ada", "role": "Engineer"} and done["routed_to"] is None
    assert done["attachments"] == [] and done["status"] == "processed" and done["reason"] is None
    (failed,) = cli.json("inbound", "list", "--status", "failed")  # type: ignore[misc]
    assert failed["reason"].startswith("It is not an email message")

    _, text, _ = cli("inbound", "list")
    assert "processed" in text and "It is not an email message" in text
    _, text, _ = cli("inbound", "run", "--once")
    assert text.strip() == "0 processed, 0 failed."
    code, text, _ = cli("inbound", "retry", str(failed["id"]), ok=False)  # still not a message
    assert code == 1 and text.startswith(f"Item {failed['id']}: failed.")


def test_wrong_input_is_one_sentence(cli: Cli, mailbox: Mailbox) -> None:
    account = cli.add_imap(mailbox)
    cli("inbound", "add", "--account", str(account))
    cases = {
        ("inbound", "add", "--account", "999"): "postroom: error: There is no mail account 999; "
        "'postroom accounts list' shows them.",
        ("inbound", "add", "--account", str(account)): f"postroom: error: Account {account} is a processing "
        "mailbox already.",
        ("inbound", "add", "--account", str(account), "--move", "sideways"): "postroom: error: --move must be "
        "one of auto, copy-delete, not 'sideways'.",
        ("inbound", "list", "--status", "lost"): "postroom: error: --status must be one of processed, failed, "
        "not 'lost'.",
        ("inbound", "retry", "4242"): "postroom: error: There is no inbound item 4242.",
        ("inbound", "run",): "postroom: error: Add --once to run the processing mailboxes once "
        "('postroom worker' runs them continuously).",
    }  # fmt: skip
    for args, sentence in cases.items():
        code, out, err = cli(*args, ok=False)
        assert (code, out, err.strip()) == (1, "", sentence), args
        assert "Traceback" not in err
