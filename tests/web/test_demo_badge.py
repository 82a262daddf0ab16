"""The layout labels the demo organisation's pages *Demo*, and no other organisation's; the flag
comes with the signed-in user (one query per request, not one more per page)."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from services.orgs import add_org
from tests.web.signin import signed_in
from web import create_app

BADGE = 'class="demo-badge"'


def test_only_the_demo_organisations_pages_say_demo(config: Config, sessions: sessionmaker[Session]) -> None:
    app = create_app(config)
    with sessions.begin() as s:
        demo, real = add_org(s, "Demo Org", demo=True).id, add_org(s, "Real Org").id
    in_demo = signed_in(app, "d@demo.test", demo)
    in_real = signed_in(app, "r@real.test", real)
    assert BADGE in in_demo.get("/").get_data(as_text=True)
    assert BADGE not in in_real.get("/").get_data(as_text=True)

    engine = app.extensions["postroom"]["sessions"].kw["bind"]
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        in_demo.get("/applicants")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert not [q for q in seen if "FROM organisations" in q and "JOIN" not in q], seen  # no lookup of its own
