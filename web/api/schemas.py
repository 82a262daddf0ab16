"""The schemas every resource shares: the error, the page of a list and its query, and the base
schema of every answer.

The answers are the services' own ``as_json()`` dictionaries (the same JSON as the CLI's
``--json``), dumped through a schema so that the OpenAPI document describes them. The base
schema :class:`Answer` refuses to drop a key it does not declare: a service that grows a field
fails the API's tests until the schema (and so the document) says what the field is.

Lists paginate with ``?offset=0&limit=50`` (at most 200 items a page), as
:class:`services.paging.Page` does, and answer ``{"items": [...], "total": N, "offset": O,
"limit": L}``: the next page starts at ``offset + limit`` while that is below ``total``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import RAISE, Schema, fields, post_dump, validate

from services.paging import DEFAULT_LIMIT, MAX_LIMIT, Page


class Answer(Schema):
    """Base of every answer: each key the service gives must be declared."""

    @post_dump(pass_original=True)
    def _every_key_declared(self, data: dict[str, Any], original: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(original, dict):
            declared = {field.attribute or name for name, field in self.dump_fields.items()}
            undeclared = set(original) - declared
            if undeclared:
                raise TypeError(f"{type(self).__name__} does not declare {sorted(undeclared)}")
        return data


class Request(Schema):
    """Base of every request body and query: unknown keys are refused (422), not ignored."""

    class Meta:
        unknown = RAISE


def when(**kwargs: Any) -> fields.String:
    """A timestamp as the services write it: ISO 8601 with its offset."""
    description = kwargs.pop("description", None)
    metadata = {"format": "date-time", **({"description": description} if description else {})}
    return fields.String(metadata=metadata, **kwargs)


def described(description: str) -> dict[str, Any]:
    return {"metadata": {"description": description}}


class ErrorSchema(Answer):
    error = fields.String(required=True, **described("One sentence saying what is wrong."))
    field = fields.String(
        required=True,
        allow_none=True,
        **described("The request field at fault (a JSON body key or query parameter), or null."),
    )


class PartySchema(Answer):
    """A message's sender: name (may be empty) and address."""

    name = fields.String(required=True)
    address = fields.String(required=True, allow_none=True)


class CreatedSchema(Answer):
    id = fields.Integer(required=True, **described("The new thing's id; Location names its address."))


class PageArgs(Request):
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0), **described("Items to skip, from 0."))
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        **described(f"Items per page, 1 to {MAX_LIMIT}."),
    )


def page_of(item: type[Schema], name: str) -> type[Schema]:
    """The schema of one page of ``item``s (:class:`services.paging.Page`), named ``name``."""
    return type(
        name,
        (Answer,),
        {
            "items": fields.List(fields.Nested(item), required=True),
            "total": fields.Integer(required=True, **described("How many items there are on all pages.")),
            "offset": fields.Integer(required=True, **described("Items skipped before this page.")),
            "limit": fields.Integer(required=True, **described("At most this many items on a page.")),
        },
    )


def cut(everything: Sequence[Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """The page ``args`` asks for of a list a service answers whole (an organisation's
    accounts, its templates): short lists, cut here rather than in the database."""
    offset, limit = args["offset"], args["limit"]
    page = Page(list(everything[offset : offset + limit]), len(everything), offset, limit)
    return page.as_json(lambda item: item.as_json())
