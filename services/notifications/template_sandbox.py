"""The Jinja2 environment templates render in: a sandbox that also bounds the work done.

Templates are written by staff but render data from customers and other services, and a
render runs inside an API request or an event handler, so one template must not be able
to reach Python internals, change its variables, or take the process down:

- Jinja2's immutable sandbox refuses `_`-attributes and internals (`''.__class__`) and
  the methods that mutate lists and dicts;
- `StrictUndefined`: a missing variable raises (the caller makes it a 422 naming it);
- a render has a budget (`RenderBudget`): loop iterations, calls, attribute lookups and
  operators each spend a step (at most MAX_STEPS, within MAX_RENDER_SECONDS), and every
  value they make is charged by its size (at most MAX_MADE_CHARS in all);
- operations that could allocate a huge value in one go are checked before they run:
  no single value over MAX_VALUE_CHARS, no padding width or repeat over MAX_WIDTH, no
  number over MAX_INT_BITS.

The budget lives in a context variable, so one environment serves every thread.
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_STEPS = 1_000_000
MAX_RENDER_SECONDS = 2.0
MAX_VALUE_CHARS = 1_000_000
MAX_MADE_CHARS = 10_000_000
MAX_WIDTH = 10_000
MAX_INT_BITS = 4096
# Filters the transformer puts into every template (names a template can't write).
COUNTED, CONCAT, CHARGED = "_crm_counted", "_crm_concat", "_crm_charged"
_PRINTF_WIDE = re.compile(r"%[#0 +\-]*(?:\*|\d{5,})|%[#0 +\-]*\d*\.(?:\*|\d{5,})")
_FORMAT_WIDE = re.compile(r"\d{5,}|\{")


class RenderLimitExceeded(SecurityError):
    """A render tried to do more work, or make a bigger value, than a template may."""


class RenderBudget:
    """What one render may still spend: steps, time, and characters of values made."""

    def __init__(self) -> None:
        self.steps_left = MAX_STEPS
        self.chars_left = MAX_MADE_CHARS
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def spend(self, chars: int = 0) -> None:
        """Take one step (and `chars` characters); raise when the budget is gone."""
        self.steps_left -= 1
        self.chars_left -= chars
        if self.steps_left < 0:
            raise RenderLimitExceeded(f"the template takes more than {MAX_STEPS} steps")
        if self.chars_left < 0:
            raise RenderLimitExceeded(f"the template makes more than {MAX_MADE_CHARS} characters")
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(f"the template runs longer than {MAX_RENDER_SECONDS}s")


_budget: ContextVar[RenderBudget | None] = ContextVar("template_render_budget", default=None)


def budgeted(function: Callable[[], str]) -> str:
    """Run one render with a fresh budget."""
    token = _budget.set(RenderBudget())
    try:
        return function()
    finally:
        _budget.reset(token)


def _spend(chars: int = 0) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.spend(chars)


def _too_big(what: str) -> RenderLimitExceeded:
    return RenderLimitExceeded(f"{what} would be larger than {MAX_VALUE_CHARS} characters")


def estimate_size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters `value` prints as; counting stops past `limit`."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, dict):
            total += 2 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 * len(item)
            stack.extend(item)
        else:
            total += 8
    return total


def charge(value: Any) -> Any:
    """Charge a value just made to the budget; refuse one too large to keep."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise RenderLimitExceeded(f"a number would be larger than {MAX_INT_BITS} bits")
        _spend()
        return value
    size = estimate_size(value)
    if size > MAX_VALUE_CHARS:
        raise _too_big("a value")
    _spend(size)
    return value


# --- checks made before an operation that could allocate a lot at once ------------------


def _check_width(value: Any) -> None:
    if isinstance(value, int) and value > MAX_WIDTH:
        raise RenderLimitExceeded(f"a width or count over {MAX_WIDTH}")
    if isinstance(value, str) and len(value) > MAX_WIDTH:
        raise RenderLimitExceeded(f"a width over {MAX_WIDTH} characters")


def _check_printf(template: Any) -> None:
    if isinstance(template, str) and _PRINTF_WIDE.search(template):
        raise RenderLimitExceeded(f"a %-format width over {MAX_WIDTH} (or '*')")


def _check_format(template: str) -> None:
    try:
        specs = [spec for _, _, spec, _ in string.Formatter().parse(template) if spec]
    except ValueError:
        return  # malformed: str.format itself will refuse it
    if any(_FORMAT_WIDE.search(spec) for spec in specs):
        raise RenderLimitExceeded(f"a format width over {MAX_WIDTH} (or a nested field)")


def _check_replace(text: Any, old: Any = "", new: Any = "", count: Any = -1) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    if len(text) + hits * (len(new) - len(old)) > MAX_VALUE_CHARS:
        raise _too_big("a replacement")


def _check_repeat(left: Any, right: Any) -> None:
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
            if len(sequence) * times > MAX_VALUE_CHARS:
                raise _too_big("a repetition")
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise RenderLimitExceeded(f"a product over {MAX_INT_BITS} bits")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if max(base.bit_length(), 1) * exponent > MAX_INT_BITS:
            raise RenderLimitExceeded(f"a power over {MAX_INT_BITS} bits")


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def _joined_size(items: list[Any], separator: Any) -> int:
    gaps = max(len(items) - 1, 0) * (len(separator) if isinstance(separator, str) else 0)
    return gaps + sum(estimate_size(item) for item in items)


def _materialized_join(items: Any, separator: Any) -> list[Any]:
    """The items of a join as a list, refused when the joined text would be too big."""
    listed = list(items)
    if _joined_size(listed, separator) > MAX_VALUE_CHARS:
        raise _too_big("a join")
    return listed


def _str_method_args(
    owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """A string method's arguments, checked so its result stays small (joins listed)."""
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(_argument(args, kwargs, 0, "width"))
    elif name == "expandtabs":
        _check_width(_argument(args, kwargs, 0, "tabsize"))
    elif name == "replace":
        _check_replace(owner, *args[:3])
    elif name == "join" and args:
        return (_materialized_join(args[0], owner), *args[1:])
    elif name in ("format", "format_map"):
        _check_format(owner)
    return args


def _check_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = _argument(args, kwargs, 0, "s"), _argument(args, kwargs, 1, "width")
    _check_width(width)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    if isinstance(text, str) and len(text) + (text.count("\n") + 1) * pad > MAX_VALUE_CHARS:
        raise _too_big("an indentation")
    return args


def _check_wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = _argument(args, kwargs, 1, "s"), _argument(args, kwargs, 2, "width")
    wrap = _argument(args, kwargs, 4, "wrapstring")
    if isinstance(text, str) and isinstance(wrap, str) and isinstance(width, int) and width > 0:
        if len(text) + (len(text) // width + 1) * len(wrap) > MAX_VALUE_CHARS:
            raise _too_big("a word wrap")
    return args


def _check_replace_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    _check_replace(*args[1:5])  # (eval_ctx, s, old, new, count)
    return args


def _join_filter_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) < 2 or isinstance(args[1], str):
        return args
    separator = _argument(args, kwargs, 2, "d") or ""
    return (args[0], _materialized_join(args[1], separator), *args[2:])


def _checked(check: Callable[[Any], None], index: int, name: str) -> Callable[..., Any]:
    def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        check(_argument(args, kwargs, index, name))
        return args

    return run


# Filter name -> its arguments checked (and a join's items listed), as Jinja passes them
# (eval_ctx or environment first for some).
_FILTER_ARGS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "center": _checked(_check_width, 1, "width"),
    "batch": _checked(_check_width, 1, "linecount"),
    "slice": _checked(_check_width, 1, "slices"),
    "format": _checked(_check_printf, 0, "value"),
    "replace": _check_replace_filter,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "join": _join_filter_args,
}


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that checks its input and arguments and charges its result."""
    checked_args = _FILTER_ARGS.get(name)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        for value in (*args, *kwargs.values()):
            if estimate_size(value) > MAX_VALUE_CHARS:
                raise _too_big(f"the input of the filter {name!r}")
        if checked_args is not None:
            args = checked_args(args, kwargs)
        result = function(*args, **kwargs)
        return result if isinstance(result, Iterator) else charge(result)

    return functools.update_wrapper(guarded, function)  # keeps Jinja's pass_* marker


# --- filters the transformer inserts -------------------------------------------------


def _counted(iterable: Iterable[Any], text_per_turn: int = 0) -> Iterator[Any]:
    """A loop's iterable: each turn is a step, charged with the text its body writes."""
    for item in iterable:
        _spend(text_per_turn)
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, items: list[Any]) -> str:
    """`a ~ b`, with the joined size checked before it is made."""
    if estimate_size(items) > MAX_VALUE_CHARS:
        raise _too_big("a concatenation")
    _spend()
    return markup_join(items) if eval_ctx.autoescape else str_join(items)


class _BoundWork(NodeTransformer):
    """Rewrites a parsed template so loops, `~` and `{{ }}` go through the budget."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        """Each turn of the loop spends a step and the text its body writes."""
        node = self.generic_visit(node)
        text = sum(
            len(data.data) for item in node.body for data in item.find_all(nodes.TemplateData)
        )
        node.iter = nodes.Filter(
            node.iter, COUNTED, [nodes.Const(text)], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        """`a ~ b ~ c` is checked for size before it is joined."""
        node = self.generic_visit(node)
        items = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(items, CONCAT, [], [], None, None, lineno=node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        """Every `{{ value }}` is charged for what it prints (inside macros and sets too)."""
        node = self.generic_visit(node)
        node.nodes = [
            item
            if isinstance(item, nodes.TemplateData)
            else nodes.Filter(item, CHARGED, [], [], None, None, lineno=item.lineno)
            for item in node.nodes
        ]
        return node


def _blank_none(value: Any) -> Any:
    """`{{ contact.phone }}` of a null prints nothing, not "None"."""
    return "" if value is None else value


class GuardedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, strict about undefined names, with a budget on every render."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, html: bool) -> None:
        super().__init__(
            autoescape=html,
            undefined=StrictUndefined,
            finalize=_blank_none,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
        self.globals.pop("lipsum", None)
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.filters.update({COUNTED: _counted, CONCAT: _concat, CHARGED: charge})

    def compile_bounded(self, source: str) -> Any:
        """A Template of `source` whose loops, joins and output spend the budget."""
        tree = _BoundWork().visit(self.parse(source))
        tree.set_environment(self)
        return self.template_class.from_code(self, self.compile(tree), self.make_globals(None))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call is a step; string methods are checked first, results charged."""
        _spend()
        target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = _str_method_args(owner, getattr(target, "__name__", ""), args, kwargs)
        return charge(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """`*`, `**`, `+` and `%` are checked before and charged after."""
        _spend()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_printf(left)
        return charge(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _spend()
        return super().getitem(obj, argument)
