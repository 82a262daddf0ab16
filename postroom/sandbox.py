"""A Jinja2 sandbox that a hostile template can neither escape nor use to hang or exhaust a worker.

Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` already refuses private
attributes (``__class__``, ``__globals__``) and changes to lists and dicts. :class:`Sandbox`
adds bounds, each a :class:`Limits` field; going past one raises :class:`LimitExceeded` with
a sentence for a person:

* ``range()`` gives at most ``range`` items;
* every loop iteration, call and filter is a *step*; a render takes at most ``steps`` of them
  and at most ``seconds`` (checked at every step);
* no value a template builds (a text, a list) may weigh more than ``value`` characters, and
  the work is checked *before* it is done where one operation could build a huge value at once
  (``'a' * 10**9``, ``'x'|center(10**9)``, ``'%999999999d' % 1``, ``big|replace('a', big)``);
* a number may have at most ``bits`` bits (``10**10**10`` is refused before Python tries);
* everything a render builds, output included, adds up to at most ``work`` characters.

Attributes of plain values are allow-listed: text has its harmless methods (``upper``,
``split``, ``startswith``...), never ``format``, ``ljust`` or ``replace`` (the filters
of the same name are bounded); numbers have none.

>>> env = Sandbox(Limits())
>>> env.from_string("{{ name|upper }}").render(name="ann")
'ANN'
>>> try:
...     env.from_string("{% for i in range(10**9) %}{% endfor %}").render()
... except LimitExceeded as exc:
...     print(exc)
range() may give at most 10,000 items, not 1,000,000,000
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import FILTERS
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace, pass_environment, pass_eval_context

__all__ = ["LimitExceeded", "Limits", "Sandbox"]


@dataclass(frozen=True)
class Limits:
    """How far one render may go (module docstring)."""

    output: int = 256 * 1024  # characters of output
    value: int = 256 * 1024  # characters (or items) in one value a template builds
    work: int = 16 * 1024 * 1024  # characters built by the whole render, output included
    range: int = 10_000  # items of one range()
    steps: int = 100_000  # loop iterations, calls and filters
    bits: int = 4096  # of one integer
    seconds: float = 2.0


class LimitExceeded(Exception):
    """A render went past one of its :class:`Limits`; ``str()`` says which, for a person."""


# the methods of plain values a template may call; everything else on them is refused
_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "isalnum", "isalpha", "isascii", "isdecimal",
        "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower", "lstrip", "partition",
        "removeprefix", "removesuffix", "rfind", "rpartition", "rsplit", "rstrip", "split", "splitlines",
        "startswith", "strip", "swapcase", "title", "upper", "striptags", "unescape",
    }
)  # fmt: skip
_DICT_METHODS = frozenset({"items", "keys", "values", "get"})
_SEQUENCE_METHODS = frozenset({"count", "index"})

# a printf-style conversion: %%, or %[(key)][flags][width][.precision]
_PRINTF = re.compile(r"%%|%(?:\([^)]*\))?[#0+ -]*(\*|\d+)?(?:\.(\*|\d*))?")


def weight(value: Any, cap: int) -> int:
    """About how many characters ``str(value)`` has (a text its length, a list or dict the
    weight of its items), counted only until it passes ``cap``, so the count stays cheap.

    >>> weight("abc", 100), weight(["abc", {"k": "v"}], 100), weight(["x" * 50] * 9, 100) > 100
    (3, 15, True)
    """
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            if total <= cap:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            if total <= cap:
                stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
        if total > cap:
            break
    return total


class _BoundedCode(CodeGenerator):
    """Compiles every loop to draw its items through :meth:`Sandbox.loop_items` (one step
    each), every ``~`` to :meth:`Sandbox.bounded_join`, and charges literal template text
    to the render's work each time it is output (in a loop, a macro or a ``{% set %}`` block)."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not getattr(node, "_bounded", False):
            items = nodes.Call(nodes.EnvironmentAttribute("loop_items"), [node.iter], [], None, None)
            node.iter = items.set_lineno(node.iter.lineno)
            node._bounded = True  # type: ignore[attr-defined]
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:  # as CodeGenerator.visit_Concat chooses
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.bounded_join({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        literal = sum(len(child.data) for child in node.nodes if isinstance(child, nodes.TemplateData))
        if literal:
            self.writeline(f"environment.charge_text({literal})", node)
        super().visit_Output(node, frame)


@pass_environment
def _finalize(environment: Sandbox, value: Any) -> Any:
    """Every ``{{ value }}`` is weighed before it becomes text (so ``{{ [big] * n }}`` is
    refused before Python writes it out) and charged to the render's work."""
    environment.charge(value)
    return value


class Sandbox(ImmutableSandboxedEnvironment):
    """An immutable Jinja2 sandbox with :class:`Limits`; use one per render (it counts)."""

    code_generator_class = _BoundedCode
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limits: Limits, **options: Any) -> None:
        super().__init__(optimized=False, finalize=_finalize, **options)
        self.limits = limits
        self.steps = 0
        self.work = 0
        self.deadline = time.monotonic() + limits.seconds
        self.globals.clear()  # no lipsum(); range() bounded
        self.globals.update(range=self._range, dict=dict, cycler=Cycler, joiner=Joiner, namespace=Namespace)
        bounded: dict[str, Callable[..., Any]] = {
            "center": self._center,
            "indent": self._indent,
            "replace": self._replace,
            "join": self._join,
            "wordwrap": self._wordwrap,
            "format": self._format,
            "batch": self._batch,
            "slice": self._slice,
        }
        self.filters = {name: self._counted(bounded.get(name, f)) for name, f in FILTERS.items()}

    # -- counting ------------------------------------------------------------------------

    def step(self) -> None:
        """One loop iteration, call or filter; past ``steps`` or ``seconds``: LimitExceeded."""
        self.steps += 1
        if self.steps > self.limits.steps:
            raise LimitExceeded(f"a template may take at most {self.limits.steps:,} steps (loop iterations and calls)")
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"a template may take at most {self.limits.seconds:g} seconds to render")

    def grow(self, size: int) -> None:
        """Refuse to build a value of ``size`` characters or items if that is past ``value``."""
        if size > self.limits.value:
            raise LimitExceeded(f"a template may build texts and lists of at most {self.limits.value:,} characters")

    def charge(self, value: Any) -> None:
        """Weigh a value the template built, refuse it if too big, and add it to the work."""
        size = weight(value, self.limits.value)
        self.grow(size)
        self.charge_text(size)

    def charge_text(self, size: int) -> None:
        self.work += size
        if self.work > self.limits.work:
            raise LimitExceeded(f"a template may build at most {self.limits.work:,} characters in all")

    def loop_items(self, items: Iterable[Any]) -> _Counted:
        return _Counted(items, self)

    def bounded_join(self, join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        """``a ~ b ~ c``, weighed before the parts become text."""
        self.grow(sum(weight(part, self.limits.value) for part in parts))
        result = join(parts)
        self.charge(result)
        return result

    # -- the sandbox's hooks -------------------------------------------------------------

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in _STR_METHODS
        if isinstance(obj, (int, float, complex, bytes, bytearray)):
            return False
        if isinstance(obj, dict):
            return attr in _DICT_METHODS
        if isinstance(obj, (list, tuple)):
            return attr in _SEQUENCE_METHODS
        return True

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return None  # no str.format at all (its widths cannot be bounded beforehand): is_safe_attribute refuses it

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:  # data first: {{ job.items }} is the data's "items"
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            self.charge(value)
        return value

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.step()
        if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (self.loop_items(args[0]), *args[1:])
        result = super().call(context, obj, *args, **kwargs)
        self.charge(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.step()
        if operator == "*":
            self._check_product(left, right)
        elif operator == "**":
            self._check_power(left, right)
        elif operator == "+" and not isinstance(left, (int, float)):
            self.grow(weight(left, self.limits.value) + weight(right, self.limits.value))
        elif operator == "%" and isinstance(left, str):
            self._check_printf(left, right)
        result = super().call_binop(context, operator, left, right)
        self.charge(result)
        return result

    def _check_product(self, left: Any, right: Any) -> None:
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > self.limits.bits:
                raise LimitExceeded(f"a template may compute numbers of at most {self.limits.bits:,} bits")
            return
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and times > 0 and isinstance(seq, (str, list, tuple)):
            self.grow(weight(seq, self.limits.value // times + 1) * times)

    def _check_power(self, base: Any, exponent: Any) -> None:
        ints = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
        if ints and base.bit_length() * exponent > self.limits.bits:
            raise LimitExceeded(f"a template may compute numbers of at most {self.limits.bits:,} bits")

    def _check_printf(self, text: str, values: Any) -> None:
        """``'%10s' % x`` and ``|format``: the widths and values, before Python pads."""
        size = len(text) + weight(values, self.limits.value)
        for match in _PRINTF.finditer(text):
            for number in match.groups():
                if number == "*":
                    raise LimitExceeded("a template may not use '*' widths in %-formatting")
                if number:
                    size += int(number) if len(number) <= 9 else self.limits.value + 1
        self.grow(size)

    def _range(self, *args: int) -> range:
        items = range(*args)
        if len(items) > self.limits.range:
            raise LimitExceeded(f"range() may give at most {self.limits.range:,} items, not {len(items):,}")
        return items

    # -- filters ---------------------------------------------------------------------------

    def _counted(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """A filter that counts as a step, weighs what it is given and charges what it builds."""

        def bounded(*args: Any, **kwargs: Any) -> Any:
            self.step()
            self.grow(sum(weight(a, self.limits.value) for a in (*args, *kwargs.values())))
            result = f(*args, **kwargs)
            self.charge(result)
            return result

        bounded.__name__ = getattr(f, "__name__", "filter")
        if hasattr(f, "jinja_pass_arg"):  # the context, eval context or environment it is given
            bounded.jinja_pass_arg = f.jinja_pass_arg  # type: ignore[attr-defined]
        return bounded

    def _center(self, value: Any, width: int = 80) -> str:
        if isinstance(width, int):
            self.grow(width)
        return str(FILTERS["center"](value, width))

    def _indent(self, s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        text, pad = str(s), width if isinstance(width, int) else len(str(width))
        self.grow(len(text) + (text.count("\n") + 1) * max(pad, 0))
        return str(FILTERS["indent"](s, width, first, blank))

    @pass_eval_context
    def _replace(self, eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> str:
        text, old_s, new_s = str(s), str(old), str(new)
        found = len(text) + 1 if not old_s else text.count(old_s)
        if isinstance(count, int) and count >= 0:
            found = min(found, count)
        self.grow(len(text) + found * (len(new_s) - len(old_s)))
        return str(FILTERS["replace"](eval_ctx, s, old, new, count))

    @pass_eval_context
    def _join(self, eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        items = list(value)
        self.grow(weight(items, self.limits.value) + max(len(items) - 1, 0) * len(str(d)))
        return str(FILTERS["join"](eval_ctx, items, d, attribute))

    @pass_environment
    def _wordwrap(
        self,
        environment: Any,
        s: str,
        width: int = 79,
        break_long_words: bool = True,
        wrapstring: str | None = None,
        break_on_hyphens: bool = True,
    ) -> str:
        # wrapped with "\n" first: the lines hold no line break, so each "\n" is one wrapstring
        plain = str(FILTERS["wordwrap"](environment, s, width, break_long_words, "\n", break_on_hyphens))
        wrap = environment.newline_sequence if wrapstring is None else str(wrapstring)
        self.grow(len(plain) + plain.count("\n") * (len(wrap) - 1))
        return plain if wrap == "\n" else plain.replace("\n", wrap)

    def _format(self, value: Any, *args: Any, **kwargs: Any) -> str:
        self._check_printf(str(value), kwargs or args)
        return str(FILTERS["format"](value, *args, **kwargs))

    def _batch(self, value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
        if isinstance(linecount, int) and linecount > self.limits.range:
            raise LimitExceeded(f"batch() may make rows of at most {self.limits.range:,} items")
        return FILTERS["batch"](value, linecount, fill_with)  # type: ignore[no-any-return]

    def _slice(self, value: Iterable[Any], slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
        if isinstance(slices, int) and slices > self.limits.range:
            raise LimitExceeded(f"slice() may make at most {self.limits.range:,} slices")
        return FILTERS["slice"](value, slices, fill_with)  # type: ignore[no-any-return]


class _Counted:
    """What a loop iterates: the items, one step each; keeps ``len`` for ``loop.length``."""

    __slots__ = ("_items", "_sandbox")

    def __init__(self, items: Iterable[Any], sandbox: Sandbox) -> None:
        self._items = items
        self._sandbox = sandbox

    def __len__(self) -> int:
        return len(self._items)  # type: ignore[arg-type]  # TypeError without one: LoopContext copes

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self._sandbox.step()
            yield item
