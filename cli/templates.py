"""``postroom templates add | list``: message templates (a subject and a Markdown body with placeholders)."""

from __future__ import annotations

import argparse

from cli.common import App, Commands, Subparsers, common, group, json_flag, output
from cli.outbox import read_body
from services.templates import add_template, list_templates


def register(sub: Subparsers) -> Commands:
    te = group(sub, "templates", "message templates: a subject and a Markdown body with {{ placeholders }}")
    add = common(te.add_parser("add", help="save a template (refused with the line of a syntax error)"))
    add.add_argument("--name", required=True, help="the name 'send --template' uses")
    add.add_argument(
        "--subject", required=True, help="the subject, itself a template, e.g. 'Your interview, {{ applicant.name }}'"
    )
    add.add_argument("--body-file", required=True, metavar="FILE", help="UTF-8 Markdown of the body ('-' for stdin)")
    add.add_argument(
        "--json-part", action="store_true", help="messages from it also carry their data as an application/json part"
    )
    json_flag(add)
    ls = common(te.add_parser("list", help="every template, by name"))
    json_flag(ls)
    return {("templates", "add"): add_, ("templates", "list"): list_}


def add_(app: App, args: argparse.Namespace) -> int:
    body = read_body(args.body_file)
    with app.sessions.begin() as s:
        template = add_template(s, None, args.name, args.subject, body, json_part=args.json_part)
        template_id, name = template.id, template.name
    output(args, {"id": template_id}, f"Template {name!r} saved (id {template_id}).")
    return 0


def list_(app: App, args: argparse.Namespace) -> int:
    with app.sessions() as s:
        templates = list_templates(s)
    text = "\n".join(
        f"{t.id:>5}  {t.name}  {t.subject!r}{'  (with a JSON part)' if t.json_part else ''}" for t in templates
    )
    output(args, [t.as_json() for t in templates], text or "No templates yet; add one with 'postroom templates add'.")
    return 0
