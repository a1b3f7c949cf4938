"""What a view's own source says about its route, for the OpenAPI document.

The view (and up to two calls deep, the service's helpers it calls) is read, not run:
- `load_body(SomeSchema())` / `load_body(some_in, partial=True)`: the request body;
- `parse_args(SomeSchema())`: the query parameters;
- `parse_args(..., drop_empty=True)`: query parameters that may be sent empty;
- `list_params()`, `page_answer(...)`, `created(...)`, `created_with_etag(...)`,
  `no_content()`, `run_batch(..., 201)`, `read_batch(...)`, `expected_version()`: what
  the route takes and answers;
- `Response(..., mimetype="image/gif")`, `Response(status=302)`: its media type or status.
"""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema

# CPython 3.11's parser may fail ("AST constructor recursion depth mismatch") when two
# threads parse at once, as two apps of one process building their documents would.
_PARSING = threading.Lock()
# What a service's helper may do for its view and still say the same about the route.
TOLD_BY_HELPERS = frozenset(
    {
        "page_answer",
        "list_params",
        "expected_version",
        "created",
        "created_with_etag",
        "no_content",
        "run_batch",
        "read_batch",
    }
)


@dataclass
class ViewFacts:
    """What a view's source says about its request and answers."""

    body: Schema | None = None
    body_optional: bool = False
    query: Schema | None = None
    query_allows_empty: bool = False
    calls: set[str] = field(default_factory=set)
    media_types: list[str] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    idempotent: bool = False  # takes Idempotency-Key: set by the route (shared.idempotency)


def view_facts(view: Callable[..., Any]) -> ViewFacts:
    """Read a view's own body (not nested functions) for the calls listed in the module doc.

    A body or query schema loaded by a helper of the service (`_changes()`,
    `optional_body(WinSchema())`) is found too, up to two calls deep.
    """
    facts = ViewFacts()
    func = inspect.unwrap(view)
    _scan(func, {}, facts, _Scope(func.__module__, depth=0))
    return facts


@dataclass(frozen=True)
class _Scope:
    """Where a scan is: the view's module, and how many helper calls deep."""

    home: str
    depth: int

    def deeper(self) -> _Scope:
        return _Scope(self.home, self.depth + 1)

    def may_follow(self, module: str) -> bool:
        """The view's own module and its package's (a service's), never shared/ or libraries."""
        package = self.home.partition(".")[0]
        same_package = module.partition(".")[0] == package and package != "shared"
        return self.depth < 2 and (module == self.home or same_package)


def _scan(
    func: Callable[..., Any], bindings: dict[str, Any], facts: ViewFacts, scope: _Scope
) -> None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
        with _PARSING:
            tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef):
        return
    namespace = {**func.__globals__, **_closure_of(func), **bindings}
    calls = list(_own_calls(definition.body))
    names = [_called_name(call) for call in calls]
    for call, name in zip(calls, names, strict=True):
        if scope.depth == 0 or name in TOLD_BY_HELPERS:
            facts.calls.add(name)
        if name == "load_body" and facts.body is None and call.args:
            facts.body = _schema_of(call.args[0], namespace, _is_partial(call))
            facts.body_optional = "get_data" in names  # an empty body is accepted
        elif name == "parse_args" and facts.query is None and call.args:
            facts.query = _schema_of(call.args[0], namespace, False)
            facts.query_allows_empty = _keyword_is_true(call, "drop_empty")
        elif name == "run_batch" and len(call.args) > 3:
            _read_batch_status(call.args[3], facts)
        elif name == "Response" and scope.depth == 0:
            _read_response_call(call, namespace, facts)
        else:  # a helper may load the body, or answer for the view (`created_with_etag`)
            _scan_helper(call, namespace, facts, scope)


def _scan_helper(
    call: ast.Call, namespace: dict[str, Any], facts: ViewFacts, scope: _Scope
) -> None:
    """Follow a call into a plain function of the view's own code."""
    helper = _resolve(call.func, namespace)
    module = getattr(helper, "__module__", None) or ""
    if not inspect.isfunction(helper) or not scope.may_follow(module):
        return
    parameters = list(inspect.signature(helper).parameters)
    bindings = {
        name: value
        for name, arg in zip(parameters, call.args, strict=False)
        if (value := _schema_of(arg, namespace, False)) is not None
    }
    _scan(helper, bindings, facts, scope.deeper())


def _closure_of(func: Callable[..., Any]) -> dict[str, Any]:
    names = func.__code__.co_freevars
    cells = func.__closure__ or ()
    values = {}
    for name, cell in zip(names, cells, strict=False):
        try:
            values[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return values


def _own_calls(body: list[ast.stmt]) -> Iterable[ast.Call]:
    """Calls in source order, without descending into nested functions or classes."""
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, nested):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_partial(call: ast.Call) -> bool:
    return _keyword_is_true(call, "partial")


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def _read_batch_status(node: ast.expr, facts: ViewFacts) -> None:
    """`run_batch(inputs, apply, view, 201)`: 201 when every input succeeds (else 207)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        facts.statuses.add(node.value)


def _schema_of(node: ast.expr, namespace: dict[str, Any], partial: bool) -> Schema | None:
    """The schema an argument names: `SomeSchema()`, `module.SomeSchema()` or an instance."""
    target = node.func if isinstance(node, ast.Call) else node
    value = _resolve(target, namespace)
    try:
        if isinstance(value, type) and issubclass(value, Schema):
            value = value()
    except Exception:  # a schema that needs arguments: leave the body generic
        return None
    if not isinstance(value, Schema):
        return None
    if partial:
        value = copy.copy(value)
        value.partial = True
    return value


def _resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, namespace)
        # Only modules and classes: an attribute of `request` or `g` needs a live request.
        if inspect.ismodule(owner) or isinstance(owner, type):
            return getattr(owner, node.attr, None)
    return None


def _read_response_call(call: ast.Call, namespace: dict[str, Any], facts: ViewFacts) -> None:
    """`Response(..., mimetype="text/csv")`, `mimetype=SOME_CONSTANT`, `status=302`."""
    for keyword in call.keywords:
        if isinstance(keyword.value, ast.Constant):
            value = keyword.value.value
        else:
            value = _resolve(keyword.value, namespace)
        if keyword.arg == "mimetype" and isinstance(value, str):
            facts.media_types.append(value.partition(";")[0].strip())
        elif keyword.arg == "status" and isinstance(value, int) and not isinstance(value, bool):
            facts.statuses.add(value)
