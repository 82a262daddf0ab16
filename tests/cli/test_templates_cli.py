"""`postroom templates add | list` as a recruiter uses them, on SQLite and PostgreSQL: the JSON
shapes of the contract, a sentence for people, and one line naming the flag or the line at fault
when a template cannot be saved."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from postroom.templating import TemplateError
from services.templates import add_template, get_template
from tests.cli.harness import Cli

LIST_KEYS = ["id", "name", "subject", "json_part", "created_at", "updated_at"]


@pytest.fixture
def body(tmp_path: Path) -> str:
    path = tmp_path / "invite.md"
    path.write_text("Dear {{ applicant.name }},\n\nPick a slot: {{ slots|join(', ') }}.\n", encoding="utf-8")
    return str(path)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "body.md"
    path.write_text(text, encoding="utf-8")
    return str(path)


def add(cli: Cli, name: str, body: str, *extra: str, subject: str = "Your interview", ok: bool = True) -> tuple:  # type: ignore[type-arg]
    return cli("templates", "add", "--name", name, "--subject", subject, "--body-file", body, *extra, ok=ok)


def test_add_then_list_in_the_contracts_json(cli: Cli, body: str) -> None:
    assert cli.json("templates", "list") == []
    assert cli.json("templates", "add", "--name", "Invite", "--subject", "Hi {{ applicant.name }}",
                    "--body-file", body) == {"id": 1}  # fmt: skip
    assert cli.json("templates", "add", "--name", "Offer", "--subject", "Offer", "--body-file", body,
                    "--json-part") == {"id": 2}  # fmt: skip
    listed = cli.json("templates", "list")
    assert isinstance(listed, list) and len(listed) == 2
    for entry in listed:
        assert list(entry) == LIST_KEYS
        assert datetime.fromisoformat(entry["created_at"]).tzinfo is not None
        assert entry["updated_at"] == entry["created_at"]
    invite, offer = listed
    assert (invite["id"], invite["name"], invite["subject"], invite["json_part"]) == (
        1,
        "Invite",
        "Hi {{ applicant.name }}",
        False,
    )
    assert (offer["id"], offer["name"], offer["json_part"]) == (2, "Offer", True)


def test_text_output_for_people(cli: Cli, body: str) -> None:
    _, out, _ = cli("templates", "list")
    assert out == "No templates yet; add one with 'postroom templates add'.\n"
    _, out, _ = add(cli, "Invite", body)
    assert out == "Template 'Invite' saved (id 1).\n"
    add(cli, "Offer", body, "--json-part")
    _, out, _ = cli("templates", "list")
    lines = out.splitlines()
    assert len(lines) == 2
    assert "Invite" in lines[0] and "'Your interview'" in lines[0] and "JSON" not in lines[0]
    assert "Offer" in lines[1] and "(with a JSON part)" in lines[1]


def test_the_body_is_read_as_utf8(cli: Cli, tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    add(cli, "Grüße", write(tmp_path, "Liebe {{ applicant.name }}, wir freuen uns — 🎉\n"), subject="Grüße")
    with sessions() as s:
        template = get_template(s, None, "Grüße")
        assert (template.subject, template.body) == ("Grüße", "Liebe {{ applicant.name }}, wir freuen uns — 🎉\n")


def test_a_duplicate_name_is_refused(cli: Cli, body: str) -> None:
    add(cli, "Invite", body)
    code, out, err = add(cli, "Invite", body, ok=False)
    assert (code, out) == (1, "")
    assert err == "postroom: error: There is already a template named 'Invite'; choose another name.\n"
    listed = cli.json("templates", "list")
    assert isinstance(listed, list) and [t["name"] for t in listed] == ["Invite"]


def test_a_syntax_error_is_refused_naming_its_line(cli: Cli, tmp_path: Path) -> None:
    broken = write(tmp_path, "Dear {{ applicant.name }},\n\n{% if slots %}\nPick {{ slots }\n{% endif %}\n")
    code, out, err = add(cli, "Broken", broken, ok=False)
    assert (code, out) == (1, "")
    assert err == "postroom: error: The body has a syntax error on line 4: unexpected '}'.\n"
    code, _, err = add(cli, "Broken", write(tmp_path, "ok"), subject="Hi {{ name", ok=False)
    assert code == 1 and err.startswith("postroom: error: The subject has a syntax error on line 1: ")
    assert cli.json("templates", "list") == []


@pytest.mark.parametrize(
    ("name", "subject", "says"),
    [
        ("   ", "Hi", "A template needs a name."),
        ("x" * 201, "Hi", "A template name is one line of at most 200 characters."),
        ("two\nlines", "Hi", "A template name is one line of at most 200 characters."),
        ("Invite", "Hi\r\nBcc: eve@evil.example", "The subject must be one line, without control characters."),
    ],
)
def test_bad_names_and_subjects_are_refused(cli: Cli, body: str, name: str, subject: str, says: str) -> None:
    code, out, err = add(cli, name, body, subject=subject, ok=False)
    assert (code, out, err) == (1, "", f"postroom: error: {says}\n")


def test_a_body_over_the_limit_is_refused(cli: Cli, tmp_path: Path) -> None:
    code, _, err = add(cli, "Long", write(tmp_path, "x" * (64 * 1024 + 1)), ok=False)
    assert (code, err) == (1, "postroom: error: The body may have at most 65,536 characters, not 65,537.\n")


def test_a_missing_or_unreadable_body_file_is_one_sentence(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.md"
    code, out, err = add(cli, "Invite", str(missing), ok=False)
    assert (code, out, err) == (1, "", f"postroom: error: Body file {missing} does not exist.\n")
    latin1 = tmp_path / "latin1.md"
    latin1.write_bytes("Grüße".encode("latin-1"))
    code, _, err = add(cli, "Invite", str(latin1), ok=False)
    assert (code, err) == (1, f"postroom: error: Body file {latin1} is not UTF-8 text.\n")


def test_add_requires_its_flags(cli: Cli, body: str) -> None:
    code, _, err = cli("templates", "add", "--name", "Invite", "--body-file", body, ok=False)
    assert code == 2 and "The following arguments are required: --subject." in err


def test_get_template_by_name(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        added = add_template(s, None, "  Invite ", "Hi", "Body", json_part=True)
        assert added.name == "Invite"
    with sessions() as s:
        found = get_template(s, None, "Invite")
        assert (found.subject, found.body, found.json_part) == ("Hi", "Body", True)
        with pytest.raises(TemplateError) as caught:
            get_template(s, None, "Offer")
        assert caught.value.field == "template"
        assert str(caught.value) == "No template named 'Offer'; see 'postroom templates list'."
