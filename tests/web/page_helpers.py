"""What the page tests of the recruiter app share: a signed-in client of an app for the test's
configuration, form posts the way a browser sends them (with the page's CSRF token), the flash
sentences a page shows, and a user of another organisation."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from postroom.config import Config
from services.orgs import add_org
from tests.web.signin import csrf_token, signed_in
from web import create_app

_FLASH = re.compile(r'<p class="flash flash-(\w+)"[^>]*>(.*?)</p>', re.S)
_FIELD_ERROR = re.compile(r'<span class="field-error" role="alert">(.*?)</span>', re.S)


@dataclass
class Browser:
    """A signed-in recruiter's browser on the app."""

    app: Flask
    client: FlaskClient
    token: str = ""

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.app.extensions["postroom"]["sessions"]  # type: ignore[no-any-return]

    def get(self, path: str) -> TestResponse:
        return self.client.get(path)

    def text(self, path: str) -> str:
        resp = self.client.get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.get_data(as_text=True)[:500])
        return page_text(resp)

    def post(self, path: str, data: Mapping[str, str], **kwargs: object) -> TestResponse:
        """POST ``data`` with the session's CSRF token, as a form of the app does."""
        if not self.token:  # any page has it; the dashboard has no flash a test looks for yet
            self.token = csrf_token(self.client.get("/").get_data(as_text=True))
        return self.client.post(path, data={"csrf_token": self.token, **data}, **kwargs)  # type: ignore[arg-type]

    def follow(self, resp: TestResponse) -> str:
        """The page a redirect leads to (where the flash shows)."""
        assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
        return self.text(resp.headers["Location"])


def browser(config: Config, email: str = "recruiter@example.test", org_id: int | None = None) -> Browser:
    app = create_app(config)
    return Browser(app, signed_in(app, email, org_id))


def other_org(app: Flask) -> Browser:
    """A recruiter of a second organisation on the same app."""
    with app.extensions["postroom"]["sessions"].begin() as s:
        org = add_org(s, "Other Co").id
    return Browser(app, signed_in(app, "eve@other.test", org))


def page_text(resp: TestResponse) -> str:
    return html.unescape(resp.get_data(as_text=True))


def flashes(page: str) -> list[tuple[str, str]]:
    """(category, sentence) of every flash message on the page."""
    return [(kind, " ".join(text.split())) for kind, text in _FLASH.findall(page)]


def field_errors(page: str) -> list[str]:
    return [" ".join(text.split()) for text in _FIELD_ERROR.findall(page)]
