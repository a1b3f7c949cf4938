"""Rendering email templates: stored ones by id or name, and inline content.

A template has a subject, a text body and an optional HTML body, each Jinja2 rendered in
the guarded sandbox of `template_sandbox` (no Python internals, bounded work). The HTML
body is autoescaped; the subject and the text body are not (they are not HTML), and the
rendered subject loses its line breaks, so a variable can't inject a mail header.

Every failure is a `TemplateProblem`, an ApiError: 404 for an unknown template, 422 for a
syntax error (with its line), a missing variable (naming it), something the sandbox
refuses or a render that grows too large. Routes let it answer; event handlers catch it.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.notifications.models import Template
from services.notifications.template_sandbox import (
    MAX_VALUE_CHARS,
    GuardedSandbox,
    RenderLimitExceeded,
    budgeted,
)
from shared.web import ApiError

log = logging.getLogger(__name__)

MAX_SOURCE_CHARS = 200_000
MAX_SUBJECT_SOURCE_CHARS = 1000
MAX_SUBJECT_CHARS = 1000  # what the delivery log stores
MAX_OUTPUT_CHARS = MAX_VALUE_CHARS
PARTS = ("subject", "body_text", "body_html")


class TemplateProblem(ApiError):
    """A template that does not exist (404) or can't be compiled or rendered (422)."""


def _unprocessable(part: str, message: str, detail: str) -> TemplateProblem:
    return TemplateProblem(422, "Unprocessable Entity", detail, {part: [message]})


@dataclass(frozen=True)
class Rendered:
    """A rendered email: what the sender needs, and the template it came from."""

    subject: str
    body_text: str
    body_html: str | None
    category: str = "transactional"
    template_id: str | None = None


@functools.lru_cache(maxsize=2)
def _environment(html: bool) -> GuardedSandbox:
    return GuardedSandbox(html=html)


@functools.lru_cache(maxsize=64)
def _compiled(source: str, html: bool) -> Any:
    """The compiled template of a source (cached: campaigns render one template often)."""
    return _environment(html).compile_bounded(source)


def syntax_error(source: str, *, html: bool = False) -> str | None:
    """Why `source` is not a valid template ("Line 3: ..."), or None when it is."""
    if len(source) > MAX_SOURCE_CHARS:
        return f"Longer than {MAX_SOURCE_CHARS} characters."
    try:
        _compiled(source, html)
    except TemplateSyntaxError as error:
        return f"Line {error.lineno}: {error.message}"
    except RecursionError:
        return "Nested too deeply."
    return None


def _template_of(part: str, source: str, html: bool) -> Any:
    problem = syntax_error(source, html=html)
    if problem is not None:
        raise _unprocessable(part, problem, f"The {part} is not a valid template: {problem}")
    return _compiled(source, html)


def _run(template: Any, variables: Mapping[str, Any]) -> str:
    """Render, refusing output over MAX_OUTPUT_CHARS as it streams out."""
    chunks, size = [], 0
    for chunk in template.generate(dict(variables)):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise RenderLimitExceeded(f"the output is larger than {MAX_OUTPUT_CHARS} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _render_problem(part: str, error: Exception) -> TemplateProblem:
    """The 422 of a failed render, naming the missing variable or what went wrong."""
    if isinstance(error, UndefinedError):
        return TemplateProblem(
            422,
            "Unprocessable Entity",
            f"A variable the {part} uses is missing: {error.message}",
            {"variables": [f"{error.message} (used by the {part})"]},
        )
    if isinstance(error, RenderLimitExceeded):
        return _unprocessable(part, f"Too much: {error}.", f"The {part} does too much: {error}")
    if isinstance(error, SecurityError):
        return _unprocessable(part, str(error), f"The {part} does something unsafe: {error}")
    if isinstance(error, RecursionError):
        return _unprocessable(part, "Nested too deeply.", f"The {part} recurses too deeply")
    message = f"{type(error).__name__}: {error}"
    return _unprocessable(part, message, f"The {part} could not be rendered: {message}")


def _render_part(part: str, source: str, variables: Mapping[str, Any], html: bool) -> str:
    """One part rendered; every failure of the template's own code is a 422."""
    template = _template_of(part, source, html)
    try:
        return budgeted(lambda: _run(template, variables))
    except Exception as error:  # the template's own code failed (1/0, "a" + 1...): its fault
        raise _render_problem(part, error) from None


def one_line(subject: str) -> str:
    """The subject without line breaks (a header must stay one line), trimmed."""
    return " ".join(line.strip() for line in subject.splitlines() if line.strip())


def render_source(
    subject: str,
    body_text: str,
    body_html: str | None,
    variables: Mapping[str, Any] | None,
    *,
    category: str = "transactional",
    template_id: str | None = None,
) -> Rendered:
    """Render inline content (a subject and bodies with Jinja2 variables); 422 on failure."""
    if len(subject) > MAX_SUBJECT_SOURCE_CHARS:
        limit = f"Longer than {MAX_SUBJECT_SOURCE_CHARS} characters."
        raise _unprocessable("subject", limit, f"The subject is too long: {limit}")
    values = dict(variables or {})
    rendered_subject = one_line(_render_part("subject", subject, values, False))
    if len(rendered_subject) > MAX_SUBJECT_CHARS:
        limit = f"Longer than {MAX_SUBJECT_CHARS} characters once rendered."
        raise _unprocessable("subject", limit, f"The subject is too long: {limit}")
    return Rendered(
        subject=rendered_subject,
        body_text=_render_part("body_text", body_text, values, False),
        body_html=None if body_html is None else _render_part("body_html", body_html, values, True),
        category=category,
        template_id=template_id,
    )


def find_template(session: Session, template_ref: str) -> Template | None:
    """The template a reference names: its id, else its name."""
    ref = str(template_ref).strip()
    try:
        template = session.get(Template, str(uuid.UUID(ref)))
    except ValueError:
        template = None
    if template is None:
        template = session.scalars(select(Template).where(Template.name == ref)).first()
    return template


def render_template(template: Template, variables: Mapping[str, Any] | None) -> Rendered:
    """Render a stored template with variables; 422 on failure."""
    return render_source(
        template.subject,
        template.body_text,
        template.body_html,
        variables,
        category=template.category,
        template_id=template.id,
    )


def render(session: Session, template_ref: str, variables: Mapping[str, Any] | None) -> Rendered:
    """Render the template named by `template_ref` (an id or a name); 404 if unknown."""
    template = find_template(session, template_ref)
    if template is None:
        raise TemplateProblem(404, "Not Found", f"Template {template_ref} does not exist")
    return render_template(template, variables)
