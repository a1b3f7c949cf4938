"""Rendering templates: the sandbox, strict variables, escaping, and bounded work."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.notifications.models import Template
from services.notifications.templates import (
    MAX_SOURCE_CHARS,
    Rendered,
    TemplateProblem,
    render,
    render_source,
    syntax_error,
)


def problem_of(body: str, variables: dict[str, Any] | None = None) -> TemplateProblem:
    with pytest.raises(TemplateProblem) as caught:
        render_source("Hello", body, None, variables or {})
    assert caught.value.status == 422
    return caught.value


def test_rendering_fills_subject_text_and_html():
    rendered = render_source(
        "Hi {{ name }}",
        "Dear {{ name }}, {% for item in items %}{{ item }};{% endfor %}",
        "<p>{{ name }}</p>",
        {"name": "Ada", "items": ["a", "b"]},
    )
    assert rendered == Rendered("Hi Ada", "Dear Ada, a;b;", "<p>Ada</p>", "transactional", None)


def test_html_is_autoescaped_but_text_and_subject_are_not():
    rendered = render_source(
        "{{ v }}", "{{ v }}", '<a title="{{ v }}">{{ v }}</a>', {"v": '<b>"Tom & Jerry"</b>'}
    )
    assert rendered.subject == '<b>"Tom & Jerry"</b>'
    assert rendered.body_text == '<b>"Tom & Jerry"</b>'
    assert "<b>" not in rendered.body_html
    assert "&lt;b&gt;&#34;Tom &amp; Jerry&#34;&lt;/b&gt;" in rendered.body_html


def test_line_breaks_never_reach_the_subject():
    rendered = render_source(
        "Hi {{ name }}", "x", None, {"name": "Ada\r\nBcc: victim@example.com\n"}
    )
    assert rendered.subject == "Hi Ada Bcc: victim@example.com"
    assert "\n" not in rendered.subject and "\r" not in rendered.subject


def test_a_missing_variable_is_a_422_naming_it():
    problem = problem_of("Dear {{ first_name }}")
    assert "first_name" in problem.detail
    assert "first_name" in problem.errors["variables"][0]
    nested = problem_of("{{ contact.city }}", {"contact": {}})
    assert "city" in nested.errors["variables"][0]


def test_a_missing_variable_in_the_subject_is_named_too():
    with pytest.raises(TemplateProblem) as caught:
        render_source("Hi {{ who }}", "x", None, {})
    assert "'who' is undefined" in caught.value.detail and "subject" in caught.value.detail


def test_optional_variables_can_be_tested_and_defaulted():
    rendered = render_source(
        "s", "{{ nick|default('friend') }}{% if title is defined %}!{% endif %}", None, {}
    )
    assert rendered.body_text == "friend"


def test_null_prints_as_nothing():
    assert render_source("s", "[{{ phone }}]", None, {"phone": None}).body_text == "[]"


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__['os'] }}",
        "{{ dict.mro() }}",
        "{% set f = 'x'.format %}{{ f.__globals__ }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ items.append(1) }}",
        "{{ self._TemplateReference__context }}",
    ],
)
def test_sandbox_escapes_are_refused(escape):
    problem = problem_of(escape, {"x": 1, "items": []})
    assert problem.errors and "<class" not in problem.detail


def test_nothing_outside_the_template_is_reachable():
    for name in ("config", "request", "os", "lipsum", "__builtins__"):
        assert name in problem_of("{{ " + name + " }}").errors["variables"][0]


@pytest.mark.parametrize(
    "bomb",
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'a' * 100000000 }}",
        "{{ 'a'.center(1000000000) }}",
        "{{ 'a'|center(1000000000) }}",
        "{{ 10 ** 1000000 }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ range(100000)|map('center', 9999)|join }}",
        "{{ ('x' * 10000).join(range(100000)|map('string')) }}",
        "{{ ('a\n' * 100000)|indent(9999) }}",
        "{% set ns = namespace(x='ab') %}{% for i in range(60) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{% set x %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endset %}",
        "{% for i in range(100000) %}{{ big }}{% endfor %}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    ],
)
def test_runaway_templates_are_refused_quickly(bomb):
    started = time.monotonic()
    problem_of(bomb, {"big": "y" * 500_000})
    assert time.monotonic() - started < 5


def test_output_over_the_limit_is_a_422():
    problem = problem_of("{% for i in range(3) %}{{ big }}{% endfor %}", {"big": "y" * 400_000})
    assert "larger than" in problem.detail or "more than" in problem.detail


def test_template_errors_are_422_not_500():
    assert "ZeroDivisionError" in problem_of("{{ 1 / 0 }}").detail
    assert problem_of("{{ 'a' + 1 }}").status == 422
    assert problem_of("{% include 'other' %}").status == 422


def test_syntax_errors_name_the_line():
    assert syntax_error("Hello\n{{ name }") == "Line 2: unexpected '}'"
    assert syntax_error("{{ x|no_such_filter }}").startswith("Line 1:")
    assert syntax_error("Hello {{ name }}") is None
    assert "Longer than" in syntax_error("x" * (MAX_SOURCE_CHARS + 1))
    with pytest.raises(TemplateProblem) as caught:
        render_source("s", "{% for %}", None, {})
    assert caught.value.errors["body_text"][0].startswith("Line 1:")


def test_a_long_rendered_subject_is_refused():
    with pytest.raises(TemplateProblem) as caught:
        render_source("{{ s }}", "x", None, {"s": "y" * 1001})
    assert "subject" in caught.value.errors


def test_render_finds_a_stored_template_by_id_or_name(db):
    with db.session() as session:
        session.add(
            Template(
                id="5f6c4f7e-2a0b-4f43-9d8e-6d2c0a1b3c4d",
                name="welcome",
                subject="Welcome {{ name }}",
                body_text="Hi {{ name }}",
                body_html=None,
                category="marketing",
            )
        )
    with db.session() as session:
        by_name = render(session, "welcome", {"name": "Ada"})
        by_id = render(session, "5f6c4f7e-2a0b-4f43-9d8e-6d2c0a1b3c4d", {"name": "Ada"})
        assert by_name == by_id
        assert by_name.subject == "Welcome Ada" and by_name.category == "marketing"
        assert by_name.template_id == "5f6c4f7e-2a0b-4f43-9d8e-6d2c0a1b3c4d"
        with pytest.raises(TemplateProblem) as caught:
            render(session, "nope", {})
        assert caught.value.status == 404
