"""User templates: a subject and a Markdown body with ``{{ placeholders }}``, checked when saved and
rendered when sent. Pure functions, no I/O.

Templates are Jinja2, run in :class:`postroom.sandbox.Sandbox` (Jinja2's immutable sandbox with
bounds on loops, sizes, steps and time) with ``StrictUndefined``: a placeholder the data does
not have is an error naming it, never an empty string. The body is Markdown, so nothing is
HTML-escaped here: :mod:`postroom.rendering` renders the Markdown with raw HTML off and
sanitises the result, which is where values are escaped.

>>> context = template_context({"role": "Data Engineer"},
...                            applicant={"name": "Ann Lee", "addresses": ["ann@example.com"]},
...                            sender={"name": "Bo Chen", "email": "bo@example.com"})
>>> render_template("Your application: {{ role }}", "Hello {{ applicant.name }},\\n\\nThanks! {{ sender.name }}",
...                 context)
Rendered(subject='Your application: Data Engineer', markdown='Hello Ann Lee,\\n\\nThanks! Bo Chen')

Errors are :class:`TemplateError` naming the field (``subject``, ``body``, ``data``, ``layout``):

>>> try:
...     render_template("Hi", "Call {{ applicant.phone }}", context)
... except TemplateError as exc:
...     print(exc, exc.field)
The body uses {{ applicant.phone }}, which the data does not have. body
>>> try:
...     check_template("Hi", "Hello\\n{% if x %}\\n{{ y }")
... except TemplateError as exc:
...     print(exc)
The body has a syntax error on line 3: unexpected '}'.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from jinja2 import Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.runtime import StrictUndefined
from jinja2.utils import missing
from markupsafe import Markup

from postroom.compose import unsafe_header_text
from postroom.errors import UserError
from postroom.sandbox import Limits, Sandbox

__all__ = [
    "BODY_LIMITS",
    "LAYOUT_LIMITS",
    "MAX_BODY_SOURCE",
    "MAX_DATA",
    "MAX_SUBJECT",
    "Rendered",
    "TemplateError",
    "check_layout",
    "check_template",
    "render_layout",
    "render_template",
    "template_context",
]

MAX_SUBJECT = 1000  # characters of a subject template, and of a rendered subject
MAX_BODY_SOURCE = 64 * 1024  # characters of a body template
MAX_DATA = 256 * 1024  # characters of the data, as JSON
BODY_LIMITS = Limits()  # output 256 KiB, 10,000 items per range(), 100,000 steps, 2 seconds...
LAYOUT_LIMITS = Limits(output=2 * 1024 * 1024, value=2 * 1024 * 1024)  # the layout holds the whole body's HTML
_RESERVED = ("applicant", "sender")


class TemplateError(UserError):
    """A template that cannot be saved or rendered: a syntax error (naming the line), a
    placeholder the data does not have (naming it), something the sandbox refuses or a limit
    it reaches, a rendered subject with a line break, data that is not a JSON object.
    ``field`` is ``subject``, ``body``, ``data`` or ``layout``."""


@dataclass(frozen=True)
class Rendered:
    """A rendered template: the subject (one line) and the body's Markdown."""

    subject: str
    markdown: str


def check_template(subject: str, body: str) -> None:
    """Refuse a template that could never render: a subject over :data:`MAX_SUBJECT`
    characters or on more than one line, a body over :data:`MAX_BODY_SOURCE`, a syntax error
    (naming the line), an unknown filter, ``{% include %}`` and its kind."""
    _check_sources(subject, body)
    _compile(_env(BODY_LIMITS), subject, "subject")
    _compile(_env(BODY_LIMITS), body, "body")


def render_template(subject: str, body: str, context: Mapping[str, Any]) -> Rendered:
    """Render both parts with ``context`` (see :func:`template_context`). The subject must
    come out as one line of at most :data:`MAX_SUBJECT` characters without control
    characters (a value with a line break cannot add a header)."""
    _check_sources(subject, body)
    values = _traced(context)
    env = _env(BODY_LIMITS)
    rendered_subject = _render(env, _compile(env, subject, "subject"), "subject", values, context)
    if unsafe_header_text(rendered_subject):
        raise TemplateError(
            "The subject comes out with a line break or another control character; check the values it uses.",
            "subject",
        )
    if len(rendered_subject) > MAX_SUBJECT:
        raise TemplateError(f"The subject comes out longer than {MAX_SUBJECT:,} characters.", "subject")
    env = _env(BODY_LIMITS)  # a fresh count for the body
    return Rendered(rendered_subject.strip(), _render(env, _compile(env, body, "body"), "body", values, context))


def template_context(
    data: Mapping[str, Any], *, sender: Mapping[str, Any], applicant: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The placeholders of one message: the keys of ``data`` (a JSON object), ``sender``
    (``name``, ``email``) and ``applicant`` (``name``, ``email`` — by default the first of
    ``addresses`` — and ``addresses``; absent when the message is for no applicant).

    >>> template_context({"applicant": "x"}, sender={"name": "", "email": "bo@example.com"})
    Traceback (most recent call last):
    ...
    postroom.templating.TemplateError: The data may not have a key 'applicant': {{ applicant }} is the applicant.
    """
    if not isinstance(data, Mapping) or not all(isinstance(key, str) for key in data):
        raise TemplateError('The data must be a JSON object, such as {"role": "Data Engineer"}.', "data")
    try:
        size = len(json.dumps(data, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"The data must be JSON: {exc}.", "data") from None
    if size > MAX_DATA:
        raise TemplateError(f"The data may have at most {MAX_DATA:,} characters as JSON, not {size:,}.", "data")
    for key in _RESERVED:
        if key in data:
            raise TemplateError(f"The data may not have a key {key!r}: {{{{ {key} }}}} is the {key}.", "data")
    context: dict[str, Any] = dict(data)
    context["sender"] = {"name": str(sender.get("name") or ""), "email": str(sender.get("email") or "")}
    if applicant is not None:
        addresses = [str(a) for a in applicant.get("addresses") or ()]
        context["applicant"] = {
            "name": str(applicant.get("name") or ""),
            "email": str(applicant.get("email") or (addresses[0] if addresses else "")),
            "addresses": addresses,
        }
    return context


def check_layout(layout: str) -> None:
    """Refuse an HTML layout that does not compile or never places ``{{ body }}``."""
    _compile(_env(LAYOUT_LIMITS, autoescape=True), layout, "layout", needs="body")


def render_layout(layout: str, *, body: str, subject: str, sender_name: str, logo_url: str) -> str:
    """The HTML layout with the message in it. Autoescaped: ``body`` (sanitised HTML) goes in
    as it is, ``subject``, ``sender_name`` and ``logo_url`` escaped."""
    values = {"body": Markup(body), "subject": subject, "sender_name": sender_name, "logo_url": logo_url}
    env = _env(LAYOUT_LIMITS, autoescape=True)
    return _render(env, _compile(env, layout, "layout", needs="body"), "layout", values, values)


# -- rendering -------------------------------------------------------------------------------


class _MissingValue(UndefinedError):
    """A placeholder the data does not have; ``args[0]`` is its path (``applicant.phone``)."""


class _Node:
    """Data that knows where it is in the context, so a missing key can be named in full."""

    __slots__ = ()
    _path: str


class _Dict(dict[str, Any], _Node):
    __slots__ = ("_path",)


class _List(list[Any], _Node):
    __slots__ = ("_path",)


_Dict.__name__, _List.__name__ = "dict", "list"  # as errors name them: "... of 'dict' object is unsafe"


def _traced(value: Any, path: str = "") -> Any:
    """``value`` with every dict and list in it knowing its path."""
    traced: _Dict | _List
    if isinstance(value, Mapping):
        traced = _Dict((key, _traced(item, _path(path, key))) for key, item in value.items())
    elif isinstance(value, list | tuple):
        traced = _List(_traced(item, _path(path, i)) for i, item in enumerate(value))
    else:
        return value
    traced._path = path
    return traced


def _path(path: str, key: Any) -> str:
    """``applicant`` + ``name`` → ``applicant.name``; ``jobs`` + 0 → ``jobs[0]``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


class _Missing(StrictUndefined):
    """StrictUndefined whose error for a missing value carries the value's full path."""

    __slots__ = ()

    def __init__(
        self, hint: str | None = None, obj: Any = missing, name: Any = None, exc: type[Exception] = UndefinedError
    ) -> None:
        if hint is None and exc is UndefinedError:
            if obj is missing and isinstance(name, str):
                hint, exc = name, _MissingValue
            elif isinstance(obj, _Node):
                hint, exc = _path(obj._path, name), _MissingValue
        super().__init__(hint, obj, name, exc)  # type: ignore[arg-type]


def _check_sources(subject: str, body: str) -> None:
    if len(subject) > MAX_SUBJECT:
        raise TemplateError(
            f"The subject may have at most {MAX_SUBJECT:,} characters, not {len(subject):,}.", "subject"
        )
    if unsafe_header_text(subject):
        raise TemplateError("The subject must be one line, without control characters.", "subject")
    if len(body) > MAX_BODY_SOURCE:
        raise TemplateError(f"The body may have at most {MAX_BODY_SOURCE:,} characters, not {len(body):,}.", "body")


def _env(limits: Limits, *, autoescape: bool = False) -> Sandbox:
    return Sandbox(limits, undefined=_Missing, autoescape=autoescape, trim_blocks=True, lstrip_blocks=True)


def _compile(env: Sandbox, source: str, field: str, needs: str | None = None) -> Template:
    """The template, compiled; refused with the line of a syntax error, for other templates
    it would pull in, or when it never uses the name it ``needs``."""
    try:
        tree = env.parse(source, filename=_filename(field))
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            raise TemplateError(
                f"The {field} cannot include, import or extend other templates (line {node.lineno}).", field
            )
        if needs and needs not in meta.find_undeclared_variables(tree):
            raise TemplateError(f"The {field} must place the message with {{{{ {needs} }}}}.", field)
        code = env.compile(tree, field, _filename(field))
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"The {field} has a syntax error on line {exc.lineno}: {_sentence(exc.message)}.", field
        ) from None
    return env.template_class.from_code(env, code, env.make_globals(None))


def _render(env: Sandbox, template: Template, field: str, values: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    limit, out, size = env.limits.output, [], 0
    try:
        for chunk in template.generate(values):
            size += len(chunk)
            if size > limit:
                raise TemplateError(f"The {field} comes out longer than {limit:,} characters.", field)
            out.append(chunk)
    except TemplateError:
        raise
    except _MissingValue as exc:
        path = str(exc.args[0])
        if path.split(".")[0].split("[")[0] == "applicant" and "applicant" not in context:
            raise TemplateError(
                f"The {field} uses {{{{ {path} }}}}, but the message is not for an applicant.", field
            ) from None
        raise TemplateError(f"The {field} uses {{{{ {path} }}}}, which the data does not have.", field) from None
    except RecursionError:
        raise TemplateError(f"The {field} nests macros or loops too deeply.", field) from None
    except Exception as exc:  # any other error a template can cause: LimitExceeded, SecurityError, TypeError...
        detail = _sentence(str(exc)) or type(exc).__name__
        raise TemplateError(
            f"The {field} cannot be rendered{_line(exc.__traceback__, field)}: {detail}.", field
        ) from None
    return "".join(out)


def _filename(field: str) -> str:
    return f"<postroom {field}>"


def _line(tb: TracebackType | None, field: str) -> str:
    """`` (line N)`` for the template line the error happened on (Jinja rewrites the
    traceback so the template's frames carry its line numbers), else nothing."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _filename(field):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _sentence(message: str | None) -> str:
    return re.sub(r"\s+", " ", message or "").strip().rstrip(".")
