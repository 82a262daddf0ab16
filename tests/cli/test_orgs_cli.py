"""`postroom orgs add|list`, `users add|list`, `tokens create` and `--org` as the contract spells
them; a token made here works on the API, and a user made here can sign in. SQLite and PostgreSQL."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from postroom.config import load_config
from postroom.models import ApiToken, Applicant, MailAccount, User
from services.users import user_for_token
from tests.cli.harness import Cli
from tests.rig.fixtures import Mailbox
from tests.web.signin import csrf_token
from web import create_app

PASSWORD = "a long enough password"


def test_orgs_users_tokens_as_the_contract_spells_them(cli: Cli, env: dict[str, str]) -> None:
    os.environ["ADMIN_PW"] = PASSWORD
    org = cli.json("orgs", "add", "--name", "Acme Hiring")
    assert isinstance(org, dict) and set(org) == {"id"}
    user = cli.json("users", "add", "--org", str(org["id"]), "--email", "Ada@Acme.test", "--password-env", "ADMIN_PW",
                    "--role", "admin")  # fmt: skip
    assert isinstance(user, dict) and set(user) == {"id"}
    token = cli.json("tokens", "create", "--user", str(user["id"]))
    assert isinstance(token, dict) and set(token) == {"token"} and token["token"].startswith("pr_")

    app = create_app(load_config(env=env))
    sessions = app.extensions["postroom"]["sessions"]
    with sessions.begin() as s:
        who = user_for_token(s, token["token"])
        assert who is not None and (who.org_id, who.email, who.role.value) == (org["id"], "ada@acme.test", "admin")
        stored = s.scalars(select(ApiToken.token_hash)).all()
        assert token["token"] not in stored and len(stored) == 1  # only a hash is kept
        assert PASSWORD not in s.scalar(select(User.password_hash)) and "argon2id" in s.scalar(
            select(User.password_hash)
        )

    client = app.test_client()  # the user signs in with the password from the environment
    data = {"csrf_token": csrf_token(client.get("/login").get_data(as_text=True)), "email": "ada@acme.test"}
    assert client.post("/login", data={**data, "password": PASSWORD}).status_code == 302

    listed = cli.json("users", "list", "--org", str(org["id"]))
    assert isinstance(listed, list) and [u["email"] for u in listed] == ["ada@acme.test"]
    orgs = cli.json("orgs", "list")
    assert isinstance(orgs, list) and {"id": org["id"], "name": "Acme Hiring", "demo": False, "users": 1} in orgs


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("orgs", "add", "--name", "  "), "--name must not be empty."),
        (("users", "add", "--org", "999", "--email", "a@b.test", "--password-env", "ADMIN_PW"), "no organisation 999"),
        (
            ("users", "add", "--email", "not-an-address", "--password-env", "ADMIN_PW"),
            "--email must be an email address",
        ),
        (("users", "add", "--email", "a@b.test", "--password-env", "SHORT_PW"), "--password-env must be at least 10"),
        (("users", "add", "--email", "a@b.test", "--password-env", "MISSING_PW"), "MISSING_PW"),
        (("tokens", "create", "--user", "42"), "There is no user 42"),
        (("applicants", "add", "--org", "77", "--name", "X", "--email", "x@y.test"), "no organisation 77"),
    ],
)
def test_wrong_input_is_one_sentence(cli: Cli, args: tuple[str, ...], sentence: str) -> None:
    os.environ["ADMIN_PW"], os.environ["SHORT_PW"] = PASSWORD, "short"
    os.environ.pop("MISSING_PW", None)
    code, _, err = cli(*args, ok=False)
    assert code == 1 and sentence in err and "Traceback" not in err and err.count("\n") == 1


def test_a_second_user_with_the_same_address_is_refused(cli: Cli) -> None:
    os.environ["ADMIN_PW"] = PASSWORD
    cli("users", "add", "--email", "sam@acme.test", "--password-env", "ADMIN_PW")
    other = cli.json("orgs", "add", "--name", "Other")
    assert isinstance(other, dict)
    code, _, err = cli("users", "add", "--org", str(other["id"]), "--email", "SAM@acme.test", "--password-env",
                       "ADMIN_PW", ok=False)  # fmt: skip
    assert code == 1 and "A user with the address sam@acme.test exists already." in err


def test_org_flag_puts_accounts_and_applicants_in_that_organisation(
    cli: Cli, env: dict[str, str], mailbox: Mailbox
) -> None:
    default = cli.json("applicants", "add", "--name", "Kim", "--email", "kim@x.test")  # no --org: the default one
    second = cli.json("orgs", "add", "--name", "Second")
    orgs = cli.json("orgs", "list")
    assert isinstance(default, dict) and isinstance(second, dict) and isinstance(orgs, list)
    first = orgs[0]  # the default organisation is the first one
    assert first["id"] != second["id"]
    account = cli.add_imap(mailbox, "--org", str(second["id"]))
    applicant = cli.json("applicants", "add", "--org", str(second["id"]), "--name", "Jo", "--email", "jo@x.test")
    assert isinstance(applicant, dict)
    sessions = create_app(load_config(env=env)).extensions["postroom"]["sessions"]
    with sessions() as s:
        assert s.get_one(MailAccount, account).org_id == second["id"]
        assert s.get_one(Applicant, applicant["id"]).org_id == second["id"]
        assert s.get_one(Applicant, default["id"]).org_id == first["id"]
    only_second = cli.json("accounts", "list", "--org", str(second["id"]))
    only_first = cli.json("accounts", "list", "--org", str(first["id"]))
    assert isinstance(only_second, list) and [a["id"] for a in only_second] == [account] and only_first == []
