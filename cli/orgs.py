"""``postroom orgs add|list``, ``postroom users add|list`` and ``postroom tokens create``: who may
sign in to the web app and the API, and in which organisation."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, env_secret, group, json_flag, org_flag, output
from services.orgs import add_org, list_orgs, resolve_org
from services.users import add_user, create_token, list_users


def register(sub: Subparsers) -> Commands:
    orgs = group(sub, "orgs", "organisations (each owns its accounts, applicants, templates and messages)")
    add = common(orgs.add_parser("add", help="add an organisation"))
    add.add_argument("--name", required=True)
    json_flag(add)
    json_flag(common(orgs.add_parser("list", help="list organisations")))

    users = group(sub, "users", "people who sign in to the web app")
    uadd = common(users.add_parser("add", help="add a user to an organisation"))
    org_flag(uadd)
    uadd.add_argument("--email", required=True, help="the address they sign in with")
    uadd.add_argument(
        "--password-env", required=True, metavar="VAR", help="name of the environment variable that holds the password"
    )
    uadd.add_argument("--role", choices=("admin", "recruiter"), default="recruiter")
    uadd.add_argument("--name", default="", help="their name, as the web app shows it")
    json_flag(uadd)
    ulist = common(users.add_parser("list", help="list an organisation's users"))
    org_flag(ulist)
    json_flag(ulist)

    tokens = group(sub, "tokens", "API tokens (bearer tokens of /api/v1)")
    tcreate = common(tokens.add_parser("create", help="create an API token acting as a user (shown once)"))
    tcreate.add_argument("--user", type=int, required=True, metavar="ID")
    json_flag(tcreate)
    return {
        ("orgs", "add"): orgs_add,
        ("orgs", "list"): orgs_list,
        ("users", "add"): users_add,
        ("users", "list"): users_list,
        ("tokens", "create"): tokens_create,
    }


def orgs_add(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        org_id = add_org(s, args.name).id
    output(args, {"id": org_id}, str(org_id))
    return 0


def orgs_list(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        rows = list_orgs(s)
    text = "\n".join(f"{o.id:>4}  {o.name}{'  (demo)' if o.demo else ''}  {o.users} user(s)" for o in rows)
    output(args, [o.as_json() for o in rows], text or "No organisations yet; add one with 'postroom orgs add'.")
    return 0


def users_add(app: App, args: argparse.Namespace) -> int:
    password = env_secret(args.password_env, "--password-env")
    with app.sessions.begin() as s:
        user_id = add_user(s, resolve_org(s, args.org), args.email, password, args.role, args.name).id
    output(args, {"id": user_id}, str(user_id))
    return 0


def users_list(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        rows = list_users(s, resolve_org(s, args.org))
    text = "\n".join(f"{u.id:>4}  {u.email:<32} {u.role.value}" for u in rows)
    output(args, [u.as_json() for u in rows], text or "No users yet; add one with 'postroom users add'.")
    return 0


def tokens_create(app: App, args: argparse.Namespace) -> int:
    with app.sessions.begin() as s:
        token = create_token(s, args.user)
    output(args, {"token": token}, token)
    return 0
