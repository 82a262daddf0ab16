"""User templates: placeholders come out as the data says, a missing one is named, a syntax error
names its line, and a hostile template neither escapes the sandbox nor hangs or floods a worker —
it fails at once with one sentence naming the field."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

import postroom.sandbox
import postroom.templating
from postroom.templating import TemplateError, check_layout, check_template, render_template, template_context

SENDER = {"name": "Bo Chen", "email": "bo@example.com"}
APPLICANT = {"name": "Zoë Martin", "addresses": ["zoe@example.org", "zoe.m@example.net"]}


def context(data: dict[str, Any] | None = None, *, applicant: dict[str, Any] | None = APPLICANT) -> dict[str, Any]:
    return template_context(data or {}, sender=SENDER, applicant=applicant)


def body_error(body: str, data: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render_template("Hello", body, context(data))
    assert caught.value.field == "body"
    return caught.value


def test_doctests() -> None:
    assert doctest.testmod(postroom.templating).failed == 0
    assert doctest.testmod(postroom.sandbox).failed == 0


@pytest.mark.parametrize(
    ("subject", "body", "data", "want_subject", "want_body"),
    [
        ("Your interview, {{ applicant.name }}", "Hi {{ applicant.name }}", {}, "Your interview, Zoë Martin",
         "Hi Zoë Martin"),
        ("Hi", "Write to {{ applicant.email }}", {}, "Hi", "Write to zoe@example.org"),  # the first address
        ("Hi", "{{ applicant.addresses|join(', ') }}", {}, "Hi", "zoe@example.org, zoe.m@example.net"),
        ("Hi", "{{ sender.name }} <{{ sender.email }}>", {}, "Hi", "Bo Chen <bo@example.com>"),
        ("{{ role }} at {{ company.name }}", "{{ slots[1] }}", {"role": "SRE", "company": {"name": "Acme"},
         "slots": ["Mon", "Tue"]}, "SRE at Acme", "Tue"),
        ("Hi", "{% for s in slots %}\n- {{ loop.index }}/{{ loop.length }} {{ s }}\n{% endfor %}",
         {"slots": ["Mon 10:00", "Tue 14:00"]}, "Hi", "- 1/2 Mon 10:00\n- 2/2 Tue 14:00\n"),
        ("Hi", "{% if phone is defined %}Call {{ phone }}{% else %}Mail us{% endif %}", {}, "Hi", "Mail us"),
        ("Hi", "{{ phone|default('no phone') }}", {}, "Hi", "no phone"),
        ("Hi", "{{ job.items }} {{ job.count }}", {"job": {"items": 3, "count": "four"}}, "Hi", "3 four"),  # data first
        ("Hi", "{{ '%05.1f'|format(score) }} {{ name|upper }} {{ name.split()[0] }}",
         {"score": 7.25, "name": "ann lee"}, "Hi", "007.2 ANN LEE ann"),
        ("Hi", "{{ '<script>' }} **{{ x }}**", {"x": "<b>"}, "Hi", "<script> **<b>**"),  # escaped later, as HTML
        ("  Hi {{ n }}  ", "x", {"n": 1}, "Hi 1", "x"),
        ("Hi", "{% set total = a * b %}{{ total }} {{ 2 ** 10 }} {{ 'ab' * 3 }}", {"a": 6, "b": 7}, "Hi",
         "42 1024 ababab"),
    ],
)  # fmt: skip
def test_placeholders_come_out_as_the_data_says(
    subject: str, body: str, data: dict[str, Any], want_subject: str, want_body: str
) -> None:
    rendered = render_template(subject, body, context(data))
    assert (rendered.subject, rendered.markdown) == (want_subject, want_body)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("Call {{ applicant.phone }}", "{{ applicant.phone }}"),
        ("Hi {{ first_name }}", "{{ first_name }}"),
        ("{{ company.address.city }}", "{{ company.address }}"),
        ("{{ slots[5] }}", "{{ slots[5] }}"),
        ("{{ jobs[0].salary }}", "{{ jobs[0].salary }}"),
        ("{{ jobs[0]['start date'] }}", "{{ jobs[0]['start date'] }}"),
        ("{{ first_name|upper }}", "{{ first_name }}"),
        ("{% if first_name %}x{% endif %}", "{{ first_name }}"),
        ("{% for s in missing_list %}{{ s }}{% endfor %}", "{{ missing_list }}"),
    ],
)
def test_a_missing_placeholder_is_named_and_nothing_renders(body: str, named: str) -> None:
    data = {"company": {"name": "Acme"}, "slots": ["Mon"], "jobs": [{"title": "SRE"}]}
    error = body_error(body, data)
    assert str(error) == f"The body uses {named}, which the data does not have."


def test_a_missing_subject_placeholder_names_the_subject() -> None:
    with pytest.raises(TemplateError) as caught:
        render_template("Your {{ role }} interview", "Hi", context())
    assert caught.value.field == "subject"
    assert str(caught.value) == "The subject uses {{ role }}, which the data does not have."


def test_the_applicant_used_without_an_applicant_says_so() -> None:
    with pytest.raises(TemplateError) as caught:
        render_template("Hi", "Dear {{ applicant.name }}", context(applicant=None))
    assert str(caught.value) == "The body uses {{ applicant }}, but the message is not for an applicant."


@pytest.mark.parametrize(
    ("body", "line", "detail"),
    [
        ("Hello\n{% if x %}\n{{ y }\n", 3, "unexpected '}'"),
        ("{% for x in xs %}\nno end\n", 2, "Unexpected end of template"),
        ("a\nb\nc\nd\n{{ x|no_such_filter }}", 5, "No filter named 'no_such_filter'"),
        ("{% endif %}", 1, "Encountered unknown tag 'endif'"),
        ("{{ 'unclosed }}", 1, "unexpected char"),
    ],
)
def test_a_syntax_error_is_refused_naming_its_line(body: str, line: int, detail: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template("Hello", body)
    assert caught.value.field == "body"
    assert str(caught.value).startswith(f"The body has a syntax error on line {line}: {detail}")
    with pytest.raises(TemplateError, match=f"on line {line}"):
        render_template("Hello", body, context())


def test_a_subject_syntax_error_names_the_subject() -> None:
    with pytest.raises(TemplateError) as caught:
        check_template("Your {{ role ", "fine")
    assert caught.value.field == "subject"
    assert str(caught.value).startswith("The subject has a syntax error on line 1")


def test_a_runtime_error_names_its_line() -> None:
    assert str(body_error("ok\n\n{{ 1 / zero }}", {"zero": 0})) == (
        "The body cannot be rendered (line 3): division by zero."
    )


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "attribute '__class__' of 'str' object is unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__()[100].__init__.__globals__ }}", "'__class__' of 'str'"),
        ("{{ cycler.__init__.__globals__ }}", "attribute '__init__' of 'type' object is unsafe"),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "attribute '__init__' of 'type' object is unsafe"),
        ("{{ joiner.__init__.__globals__ }}", "attribute '__init__' of 'type' object is unsafe"),
        ("{{ namespace.__init__.__globals__ }}", "attribute '__init__' of 'type' object is unsafe"),
        ("{{ self.__init__.__globals__ }}", "attribute '__init__' of 'TemplateReference' object is unsafe"),
        ("{{ self._TemplateReference__context }}", "'_TemplateReference__context' of 'TemplateReference'"),
        ("{{ applicant.__class__ }}", "attribute '__class__' of 'dict' object is unsafe"),
        ("{{ applicant|attr('__class__') }}", "attribute '__class__' of 'dict' object is unsafe"),
        ("{{ (applicant|attr('__class__')).__base__.__subclasses__() }}", "'__class__' of 'dict' object is unsafe"),
        ("{{ ''['__class__'] }}", "attribute '__class__' of 'str' object is unsafe"),
        ("{{ slots.__len__() }}", "attribute '__len__' of 'list' object is unsafe"),
        ("{{ request }}{{ config }}{{ lipsum.__globals__ }}", "The body uses {{ request }}, which the data"),
        ("{{ '{0.__class__}'.format(1) }}", "attribute 'format' of 'str' object is unsafe"),
        ("{{ '{0.__class__}'.format_map({}) }}", "attribute 'format_map' of 'str' object is unsafe"),
        ("{% set x = slots.append(1) %}", "attribute 'append' of 'list' object is unsafe"),  # data cannot change
        ("{% set x = applicant.update({'name': 'x'}) %}", "attribute 'update' of 'dict' object is unsafe"),
        ("{% set x = applicant.pop('name') %}", "attribute 'pop' of 'dict' object is unsafe"),
        ("{{ (1).to_bytes(8, 'big') }}", "attribute 'to_bytes' of 'int' object is unsafe"),
        ("{{ 'x'.encode('utf-8') }}", "attribute 'encode' of 'str' object is unsafe"),
    ],
)
def test_sandbox_escapes_are_refused(body: str, refused: str) -> None:
    assert refused in str(body_error(body, {"slots": ["Mon"]}))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{% for i in range(10**9) %}{% endfor %}", "range() may give at most 10,000 items, not 1,000,000,000"),
        ("{% for i in range(0, 10**12, 7) %}x{% endfor %}", "range() may give at most 10,000 items"),
        ("{{ 'a' * 10**9 }}", "texts and lists of at most 262,144 characters"),
        ("{{ [0] * 10**9 }}", "texts and lists of at most 262,144 characters"),
        ("{{ 10**9 * 'a' }}", "texts and lists of at most 262,144 characters"),
        ("{{ 2 ** (10 ** 9) }}", "numbers of at most 4,096 bits"),
        ("{% set n = 10 ** 1000 %}{{ n * n * n * n * n }}", "numbers of at most 4,096 bits"),
        ("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", "100,000 steps"),
        ("{% for c in 'ab' * 100000 %}{% endfor %}", "100,000 steps"),
        ("{% for i in range(10000) recursive %}{% if loop.depth < 5 %}{{ loop(range(10000)) }}{% endif %}"
         "{% endfor %}", "100,000 steps"),
        ("{% macro f() %}{% endmacro %}{% for i in range(10000) %}{% for j in range(10000) %}{{ f() }}{% endfor %}"
         "{% endfor %}", "100,000 steps"),
        ("{{ 'x'|center(10**9) }}", "at most 262,144 characters"),
        ("{{ 'x'|indent(10**6) }}", "at most 262,144 characters"),
        ("{{ '%999999999d' % 1 }}", "at most 262,144 characters"),
        ("{{ '%*d' % (10**9, 1) }}", "'*' widths"),
        ("{{ '%999999999d'|format(1) }}", "at most 262,144 characters"),
        ("{{ '%.999999999f'|format(1.5) }}", "at most 262,144 characters"),
        ("{% set a = 'x' * 200000 %}{{ a|replace('x', a) }}", "at most 262,144 characters"),
        ("{% set a = 'x' * 200000 %}{{ a|wordwrap(1, wrapstring=a) }}", "at most 262,144 characters"),
        ("{% set a = 'x' * 200000 %}{{ [a, a]|join }}", "at most 262,144 characters"),
        ("{% set a = 'x' * 200000 %}{{ a ~ a }}", "at most 262,144 characters"),
        ("{% set a = 'x' * 200000 %}{{ a + a }}", "at most 262,144 characters"),
        ("{% set a = 'x' * 200000 %}{{ [a, a, a] }}", "at most 262,144 characters"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
         "at most 262,144 characters"),
        ("{% set a = 'x' * 100000 %}{% set out %}{% for i in range(10000) %}{{ a }}{% endfor %}{% endset %}",
         "at most 16,777,216 characters in all"),
        ("{% set out %}{% for i in range(10000) %}{% for j in range(9) %}" + "y" * 4000
         + "{% endfor %}{% endfor %}{% endset %}", "at most 16,777,216 characters in all"),
        ("{{ range(10)|batch(10**9, 0)|list }}", "batch() may make rows of at most 10,000 items"),
        ("{{ range(10)|slice(10**9)|list }}", "slice() may make at most 10,000 slices"),
        ("{{ 'a'.ljust(10**9) }}", "unsafe"),
        ("{{ 'a'.zfill(10**9) }}", "unsafe"),
        ("{{ 'a'.center(10**9) }}", "unsafe"),
        ("{{ 'a\tb'.expandtabs(10**9) }}", "unsafe"),
        ("{{ '{:>999999999}'.format(1) }}", "unsafe"),
        ("{{ lipsum(10**6) }}", "{{ lipsum }}"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nests macros or loops too deeply"),
    ],
)  # fmt: skip
def test_runaway_templates_fail_at_once_saying_why(body: str, why: str) -> None:
    assert why in str(body_error(body))


def test_the_output_is_capped() -> None:
    fits = "{% for i in range(250) %}{{ 'x' * 1000 }}{% endfor %}"
    assert len(render_template("Hi", fits, context()).markdown) == 250_000
    too_long = "{% for i in range(300) %}{{ 'x' * 1000 }}{% endfor %}"
    assert str(body_error(too_long)) == "The body comes out longer than 262,144 characters."


def test_limits_are_per_render() -> None:
    """A template that takes most of the steps renders every time, not once per worker."""
    busy = "{% for i in range(5000) %}{% for j in range(9) %}{% endfor %}{% endfor %}done"  # 55,000 steps
    for _ in range(3):
        assert render_template("Hi", busy, context()).markdown == "done"


@pytest.mark.parametrize(
    "value",
    ["Hi\r\nBcc: eve@example.com", "Hi\nBcc: eve@example.com", "Hi\rX", "a\x00b", "a\u2028b", "a\x85b", "a\tb"],
)
def test_a_subject_that_comes_out_with_a_line_break_is_refused(value: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_template("Your interview {{ slot }}", "body", context({"slot": value}))
    assert caught.value.field == "subject"
    assert "line break or another control character" in str(caught.value)


@pytest.mark.parametrize("subject", ["Hi\nBcc: eve@example.com", "Hi\r\n", "Hi {{ x }}\rY", "a\x00"])
def test_a_subject_template_on_two_lines_is_refused_when_saved(subject: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(subject, "body")
    assert (caught.value.field, str(caught.value)) == (
        "subject",
        "The subject must be one line, without control characters.",
    )


@pytest.mark.parametrize(
    ("subject", "body", "field", "says"),
    [
        ("x" * 1001, "b", "subject", "The subject may have at most 1,000 characters, not 1,001."),
        ("s", "b" * (64 * 1024 + 1), "body", "The body may have at most 65,536 characters, not 65,537."),
        ("s", "{% include 'other' %}", "body", "The body cannot include, import or extend other templates (line 1)."),
        ("s", "x\n{% extends 'base' %}", "body", "The body cannot include, import or extend other templates (line 2)."),
        ("s", "{% import 'm' as m %}", "body", "The body cannot include, import or extend other templates (line 1)."),
        ("{% from 'm' import x %}", "b", "subject",
         "The subject cannot include, import or extend other templates (line 1)."),
    ],
)  # fmt: skip
def test_check_template_refuses_what_could_never_render(subject: str, body: str, field: str, says: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(subject, body)
    assert (caught.value.field, str(caught.value)) == (field, says)


def test_check_template_accepts_a_good_template_without_any_data() -> None:
    check_template("Your interview, {{ applicant.name }}", "Hi {{ applicant.name }},\n\n{{ anything.at.all }}")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"applicant": "x"}, "The data may not have a key 'applicant': {{ applicant }} is the applicant."),
        ({"sender": {}}, "The data may not have a key 'sender': {{ sender }} is the sender."),
        (["not", "an", "object"], 'The data must be a JSON object, such as {"role": "Data Engineer"}.'),
        ({1: "x"}, 'The data must be a JSON object, such as {"role": "Data Engineer"}.'),
        ({"when": object()}, "The data must be JSON: Object of type object is not JSON serializable."),
        ({"big": "x" * 300_000}, "The data may have at most 262,144 characters as JSON, not 300,011."),
    ],
)
def test_data_that_cannot_fill_a_template_is_refused(data: Any, says: str) -> None:
    with pytest.raises(TemplateError) as caught:
        template_context(data, sender=SENDER)
    assert (caught.value.field, str(caught.value)) == ("data", says)


def test_template_context_gives_sender_and_applicant() -> None:
    ctx = template_context({"role": "SRE"}, sender=SENDER, applicant={"name": "Ann", "addresses": ["a@x.org"]})
    assert ctx == {
        "role": "SRE",
        "sender": {"name": "Bo Chen", "email": "bo@example.com"},
        "applicant": {"name": "Ann", "email": "a@x.org", "addresses": ["a@x.org"]},
    }
    assert "applicant" not in template_context({}, sender=SENDER)


def test_a_layout_must_place_the_body() -> None:
    with pytest.raises(TemplateError) as caught:
        check_layout("<html><body>{{ subject }}</body></html>")
    assert (caught.value.field, str(caught.value)) == ("layout", "The layout must place the message with {{ body }}.")
    with pytest.raises(TemplateError, match="The layout has a syntax error on line 2"):
        check_layout("<html>\n{{ body }</html>")
    check_layout("<html><body>{{ body }}</body></html>")
