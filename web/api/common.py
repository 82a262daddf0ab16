"""What every API blueprint shares: bearer-token authentication, the one error shape, the
database sessions, and the ``404`` of an id that is not the caller's.

* **Authentication** (:func:`authenticate`, run before every view of an API blueprint):
  ``Authorization: Bearer <token>`` only — a browser's session cookie never acts on the API,
  so the API needs no CSRF token. A missing or unknown token answers ``401`` with
  ``WWW-Authenticate: Bearer``, never a redirect to the sign-in page. The user the token
  belongs to is ``g.api_user`` (:class:`services.users.SignedIn`); every view reads and writes
  only that user's organisation (:func:`org_id`).
* **Errors** (:func:`install_error_handlers`): every error is ``{"error": sentence, "field":
  name-or-null}``. A :class:`~postroom.errors.UserError` answers ``400`` naming its field as
  the JSON body calls it; a request body or query that does not match the documented schema
  answers ``422`` naming the first field at fault; a mail server that refused or could not be
  reached answers ``502``. :func:`normalise_error_body` gives the app's own 404/405/500 answers
  under ``/api/`` the same shape.
* **Not found**: the services answer an id of another organisation exactly as an id that does
  not exist (the same :class:`~postroom.errors.UserError`); :func:`not_found` turns that error
  into ``404`` for the resource the URL names, so both answer the same ``404``.
* **Admins only**: what sends the organisation's mail or events elsewhere (webhook
  subscriptions, designating a processing mailbox) needs an admin's token;
  :func:`require_admin` answers a recruiter's ``403`` with the view's sentence, and
  :func:`admins_only` documents that ``403`` in the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

from flask import Flask, Response, current_app, g, jsonify, request
from flask_smorest import Blueprint
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import Forbidden, HTTPException, NotFound, UnprocessableEntity, default_exceptions

from postroom.config import Config
from postroom.errors import UserError
from postroom.states import UserRole
from services.errors import ServerError
from services.users import SignedIn, user_for_token
from web import auth
from web.api.schemas import ErrorSchema

BEARER = "bearerAuth"  # the security scheme's name in the OpenAPI document


class NotFoundError(NotFound):
    """The resource a URL names does not exist, or belongs to another organisation (the
    caller cannot tell which)."""


def sessions() -> sessionmaker[Session]:
    maker: sessionmaker[Session] = current_app.extensions["postroom"]["sessions"]
    return maker


def config() -> Config:
    found: Config = current_app.extensions["postroom"]["config"]
    return found


def api_user() -> SignedIn:
    who: SignedIn = g.api_user
    return who


def org_id() -> int:
    """The organisation of the token's user: the only one the API reads or changes."""
    return api_user().org_id


def require_admin(sentence: str) -> None:
    """``403`` with ``sentence`` (saying what only an admin may do) unless the token is an
    admin's. A view that addresses an id checks it is the organisation's first, so that another
    organisation's id answers ``404`` as everywhere."""
    if api_user().role != UserRole.ADMIN:
        raise Forbidden(sentence)


def admins_only(bp: Blueprint) -> Callable[[Any], Any]:
    """Decorates a view of ``bp`` that calls :func:`require_admin`: the OpenAPI document lists
    its ``403``."""
    decorate: Callable[[Any], Any] = bp.alt_response(
        403, schema=ErrorSchema, description="The token is a recruiter's; only an admin of the organisation may."
    )
    return decorate


def error_response(status: int, sentence: str, field: str | None = None, headers: Mapping[str, str] = {}) -> Response:
    response = jsonify(error=sentence, field=field)
    response.status_code = status
    response.headers.update(headers)
    return response


# ---------------------------------------------------------------------------- authentication


def authenticate() -> Response | None:
    """Before every API view: the bearer token's user in ``g.api_user``, or ``401``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return error_response(
            401,
            "Send an API token: Authorization: Bearer <token> ('postroom tokens create' makes one).",
            headers={"WWW-Authenticate": 'Bearer realm="postroom"'},
        )
    with sessions().begin() as s:  # commits the token's last_used_at
        who = user_for_token(s, token)
    if who is None:
        return error_response(
            401,
            "This API token is not valid: it is unknown, revoked, or its user is deactivated.",
            headers={"WWW-Authenticate": 'Bearer realm="postroom", error="invalid_token"'},
        )
    g.api_user = who
    return None


# ---------------------------------------------------------------------------- errors


def name_fields(**names: str) -> None:
    """Where a request's keys are not the service's field names (``emails`` for the service's
    ``email``), the errors of this request name the keys: ``name_fields(email="emails")``."""
    g.api_field_names = names


def json_pointer_name(field: str) -> str:
    """A service's field as the request names it: the JSON body key or query parameter."""
    names: dict[str, str] = g.get("api_field_names") or {}
    return names.get(field, field)


def _user_error(exc: UserError) -> Response:
    return error_response(400, exc.sentence(json_pointer_name), json_pointer_name(exc.field) if exc.field else None)


def _server_error(exc: ServerError) -> Response:
    return error_response(502, f"The mail server could not do it: {exc}")


def _validation_error(exc: UnprocessableEntity) -> Response:
    """webargs' ``{"json": {"emails": {"0": ["Not a valid email."]}}}`` as one sentence naming
    the first field at fault."""
    messages = (getattr(exc, "data", None) or {}).get("messages") or {}
    field, message = _first_message(messages)
    if field is None:
        return error_response(422, message or "The request does not match the documented schema.")
    return error_response(422, f"{field}: {message}", field)


def _first_message(messages: Any, path: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """The first field (dotted path below the location, e.g. ``emails.0``) and its message."""
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            # the outer level names the location (json, query); "_schema" is the whole body
            inner = path if not path and key in ("json", "query", "form", "headers", "view_args") else (*path, str(key))
            if key == "_schema":
                inner = path
            return _first_message(value, inner)
    if isinstance(messages, list | tuple) and messages:
        first = messages[0]
        if isinstance(first, str):
            text = first if first.endswith(".") else first + "."
            if text == "Unknown field.":
                text = "this field is not part of the request's schema."
            return (".".join(path) or None), text
        return _first_message(first, path)
    return (".".join(path) or None), str(messages or "")


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, UnprocessableEntity):
        return _validation_error(exc)
    messages = (getattr(exc, "data", None) or {}).get("messages")
    if messages:  # webargs' own 400: a body that is not JSON
        field, message = _first_message(messages)
        return error_response(exc.code or 400, message, field)
    if exc.code == 500:  # never the exception's own text
        return error_response(500, "Postroom hit an unexpected error; it has been logged.")
    return error_response(exc.code or 500, exc.description or exc.name)


def install_error_handlers(bp: Blueprint) -> None:
    """Every error raised in ``bp``'s views answered as ``{"error", "field"}``. The HTTP errors
    are registered by code: Flask looks for a handler of the code (the blueprint's, then the
    app's HTML one) before it looks for one of the class."""
    bp.register_error_handler(UserError, _user_error)
    bp.register_error_handler(ServerError, _server_error)
    for code in default_exceptions:
        bp.register_error_handler(code, _http_error)


def normalise_error_body(response: Response) -> Response:
    """After every request under ``/api/``: an error answered elsewhere (the app's own 404 of
    an unknown URL, its 405 and 500) carries ``field`` too, so every API error has one shape."""
    if response.status_code < 400 or not auth.is_api() or response.mimetype != "application/json":
        return response
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return response
    if isinstance(body, dict) and "error" in body and "field" not in body:
        body["field"] = None
        response.set_data(json.dumps(body))
    return response


def private_answer(response: Response) -> Response:
    """An answer to a token's user holds their organisation's data: no cache keeps it."""
    if auth.is_api() and g.get("api_user") is not None:
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.after_request(normalise_error_body)
    app.after_request(private_answer)


@contextmanager
def not_found(*kinds: type[UserError] | str) -> Iterator[None]:
    """The service's "no such thing" error — a class such as
    :class:`services.templates.NoSuchTemplate`, or a :class:`UserError` naming the field (a
    string) the URL addresses — answers ``404`` with the service's sentence. The services raise
    it alike for an id that does not exist and one of another organisation."""
    try:
        yield
    except UserError as exc:
        if any(exc.field == k if isinstance(k, str) else isinstance(exc, k) for k in kinds):
            raise_not_found(exc.sentence(json_pointer_name))
        raise


def raise_not_found(sentence: str) -> NoReturn:
    raise NotFoundError(sentence)


def api_blueprint(name: str, description: str) -> Blueprint:
    """The blueprint of one resource at ``/api/v1/<name>``: every view behind a bearer token,
    every error as ``{"error", "field"}``."""
    bp = Blueprint(f"api_{name}", __name__, url_prefix=f"/api/v1/{name}", description=description)
    bp.before_request(authenticate)
    install_error_handlers(bp)
    return bp
