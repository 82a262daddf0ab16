"""The JSON API under ``/api/v1``, for the hiring systems that integrate with Postroom.

Built with flask-smorest: one blueprint per resource (accounts, applicants, threads, messages,
templates, tracking, outbox, webhooks, inbound), each view declared with marshmallow schemas
from which the OpenAPI 3 document at ``/api/v1/openapi.json`` is generated — it is never written by hand, and
``tests/web/test_api_openapi.py`` checks that it validates and lists every ``/api/v1`` route.
The document itself needs no token (it holds no data); there is no Swagger UI page, which
would load scripts from a CDN that the app's Content-Security-Policy forbids.

Views are thin, as the pages' are: parse the request (the schemas), call one service function
with the token user's organisation, dump its ``as_json()``. Authentication, the error shape
and the 404 of another organisation's ids are :mod:`web.api.common`'s; see ``docs/api.md``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from web import auth
from web.api import accounts, applicants, common, inbound, messages, outbox, templates, threads, tracking, webhooks
from web.api.common import BEARER
from web.api.schemas import ErrorSchema

RESOURCES = (accounts, applicants, threads, messages, templates, tracking, outbox, webhooks, inbound)


class PostroomApi(Api):  # type: ignore[misc]
    """flask-smorest's Api whose errors are ``{"error", "field"}``, answered by the API's own
    blueprints only (its stock handler would turn every HTTP error of the pages into JSON)."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        pass


def init_app(app: Flask) -> Api:
    app.config.update(
        API_TITLE="Postroom",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "security": [{BEARER: []}],
            "info": {
                "description": "Postroom's JSON API. Authenticate with `Authorization: Bearer <token>` "
                '(`postroom tokens create --user ID`). Errors are `{"error": sentence, "field": name or '
                'null}`; lists take `?offset=0&limit=50` and answer `{"items", "total", "offset", "limit"}`; '
                "an id of another organisation answers 404 exactly like an id that does not exist.",
            },
        },
    )
    api = PostroomApi(app)
    api.spec.components.security_scheme(
        BEARER, {"type": "http", "scheme": "bearer", "description": "An API token from `postroom tokens create`."}
    )
    for resource in RESOURCES:
        auth.csrf.exempt(resource.bp)
        api.register_blueprint(resource.bp)
    common.init_app(app)
    return api
