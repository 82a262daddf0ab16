"""Google discovery documents: the published schema a Google API stand-in is held to.

google-api-python-client ships the discovery document of every API it supports
(``googleapiclient/discovery_cache/documents/<api>.<version>.json``). Its
``schemas`` use Google's JSON-Schema dialect: ``type``, ``properties``,
``items``, ``additionalProperties``, ``$ref: "Message"``, ``enum`` and
``format`` (``int64``/``uint64`` numbers travel as decimal strings, ``byte`` as
base64). :func:`validate` checks a JSON value against one schema and returns
every violation as a readable path::

    >>> doc = load_document("gmail", "v1")
    >>> validate(doc, {"id": "1", "threadID": "1"}, "Message")
    ['Message.threadID: unknown property']
    >>> validate(doc, {"historyId": 17}, "Profile")
    ['Profile.historyId: expected a string holding a uint64, got 17']

Objects are closed: a property the schema does not list is a violation (that is
how a typo such as ``threadID`` is caught). :class:`Method` describes one API
method (HTTP verb, path template, parameters, request and response schemas) and
:meth:`Method.parse_query` checks a request's query string against it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

STANDARD_QUERY = {"alt", "fields", "prettyPrint", "quotaUser", "key", "access_token", "oauth_token"}
STANDARD_QUERY |= {"$.xgafv", "callback", "uploadType", "upload_protocol", "userIp"}

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}
_DECIMAL = {"int64": re.compile(r"-?\d+\Z"), "uint64": re.compile(r"\d+\Z")}


class ParameterError(ValueError):
    """A request parameter the method does not accept, or one with a bad value."""


@cache
def load_document(api: str, version: str) -> dict[str, Any]:
    """The discovery document bundled with google-api-python-client (parsed once)."""
    import googleapiclient

    path = os.path.join(
        os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents", f"{api}.{version}.json"
    )
    with open(path, encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    return doc


def validate(doc: Mapping[str, Any], value: Any, ref: str) -> list[str]:
    """Every way ``value`` violates schema ``ref`` of ``doc`` (empty: it conforms)."""
    errors: list[str] = []
    _check(doc["schemas"], value, {"$ref": ref}, ref, errors)
    return errors


def _check(schemas: Mapping[str, Any], value: Any, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if "$ref" in schema:
        target = schemas.get(schema["$ref"])
        if target is None:
            errors.append(f"{path}: schema {schema['$ref']!r} is not in the document")
            return
        schema = target
    kind = schema.get("type", "any")
    if kind == "any":
        return
    if kind == "object":
        _check_object(schemas, value, schema, path, errors)
    elif kind == "array":
        if not isinstance(value, list):
            errors.append(f"{path}: expected an array, got {value!r:.60}")
            return
        for i, item in enumerate(value):
            _check(schemas, item, schema.get("items", {}), f"{path}[{i}]", errors)
    elif kind == "string":
        _check_string(value, schema, path, errors)
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {value!r:.60}")
        elif schema.get("format") in _INT_RANGES:
            low, high = _INT_RANGES[schema["format"]]
            if not low <= value <= high:
                errors.append(f"{path}: {value} is out of range for {schema['format']}")
    elif kind == "number":
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {value!r:.60}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, got {value!r:.60}")
    else:
        errors.append(f"{path}: the schema has an unknown type {kind!r}")


def _check_object(
    schemas: Mapping[str, Any], value: Any, schema: Mapping[str, Any], path: str, errors: list[str]
) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object, got {value!r:.60}")
        return
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _check(schemas, item, properties[key], f"{path}.{key}", errors)
        elif extra is not None:
            _check(schemas, item, extra, f"{path}[{key!r}]", errors)
        else:
            errors.append(f"{path}.{key}: unknown property")


def _check_string(value: Any, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    fmt = schema.get("format")
    if not isinstance(value, str):
        what = f"a string holding a {fmt}" if fmt else "a string"
        errors.append(f"{path}: expected {what}, got {value!r:.60}")
        return
    if fmt in _DECIMAL and not _DECIMAL[fmt].match(value):
        errors.append(f"{path}: {value!r:.60} is not a {fmt} in decimal")
    elif fmt == "byte" and not _is_base64(value):
        errors.append(f"{path}: not base64 data")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r:.60} is not one of {schema['enum']}")


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One API method as the discovery document describes it."""

    id: str  # "gmail.users.messages.get"
    http_method: str  # "GET"
    flat_path: str  # "gmail/v1/users/{userId}/messages/{id}"
    parameters: Mapping[str, Any]
    request_ref: str | None
    response_ref: str | None

    @property
    def rule(self) -> str:
        """The path as a werkzeug routing rule: ``/gmail/v1/users/<userId>/messages/<id>``."""
        return "/" + re.sub(r"\{(\w+)\}", r"<\1>", self.flat_path)

    def parse_query(self, args: Mapping[str, list[str]]) -> dict[str, Any]:
        """Typed query parameters (lists for repeated ones); :class:`ParameterError` for
        an unknown name, a bad value, or a missing required parameter."""
        out: dict[str, Any] = {}
        for name, values in args.items():
            if name in STANDARD_QUERY:
                continue
            spec = self.parameters.get(name)
            if spec is None or spec.get("location") != "query":
                raise ParameterError(f"Unknown name {name!r}: Cannot bind query parameter.")
            if not spec.get("repeated") and len(values) > 1:
                raise ParameterError(f"Parameter {name!r} is not repeated but was given {len(values)} times.")
            typed = [_typed(name, spec, v) for v in values]
            out[name] = typed if spec.get("repeated") else typed[0]
        for name, spec in self.parameters.items():
            if spec.get("location") == "query" and spec.get("required") and name not in out:
                raise ParameterError(f"Required parameter {name!r} is missing.")
        return out


def _typed(name: str, spec: Mapping[str, Any], raw: str) -> Any:
    kind = spec.get("type", "string")
    if "enum" in spec and raw not in spec["enum"]:
        raise ParameterError(f"Invalid value {raw!r} for {name!r}; expected one of {spec['enum']}.")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ParameterError(f"Invalid value {raw!r} for {name!r}: not an integer.") from None
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise ParameterError(f"Invalid value {raw!r} for {name!r}: not a boolean.")
        return raw == "true"
    if spec.get("format") in _DECIMAL and not _DECIMAL[spec["format"]].match(raw):
        raise ParameterError(f"Invalid value {raw!r} for {name!r}: not a {spec['format']}.")
    return raw


def methods(doc: Mapping[str, Any]) -> dict[str, Method]:
    """Every method in the document, by id."""
    return {m.id: m for m in _walk(doc.get("resources", {}))}


def _walk(resources: Mapping[str, Any]) -> Iterator[Method]:
    for resource in resources.values():
        for m in resource.get("methods", {}).values():
            yield Method(
                id=m["id"],
                http_method=m["httpMethod"],
                flat_path=m.get("flatPath", m["path"]),
                parameters=m.get("parameters", {}),
                request_ref=m.get("request", {}).get("$ref"),
                response_ref=m.get("response", {}).get("$ref"),
            )
        yield from _walk(resource.get("resources", {}))
