"""The small public HTML pages customers reach from an email (rating, unsubscribing).

A page is a jinja2 template in its service's `templates/` folder that extends
`shared/templates/page.html`: autoescaped, `lang` set, one stylesheet inlined and allowed
by its hash. So each page is served with a Content-Security-Policy that allows no script
and no resource at all (`default-src 'none'`), forms posting only back to where they came
from, and works without JavaScript: plain forms, POST. Pages are never cached or indexed.

Which answer a request gets: a browser says it prefers text/html (`wants_html`); an API
client (Accept: application/json, `*/*` or nothing) keeps getting JSON.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from flask import Response, request
from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"
LANG = "en"
NO_STORE = "no-store, no-cache, must-revalidate, private"


@cache
def page_css() -> str:
    """The one stylesheet of every page, inlined in it."""
    return (TEMPLATES / "page.css").read_text(encoding="utf-8")


@cache
def content_security_policy() -> str:
    """No script, no resource, no frame; only the page's own inline style (by its hash)."""
    digest = base64.b64encode(hashlib.sha256(page_css().encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def wants_html() -> bool:
    """Whether the client prefers an HTML page to JSON (a browser does; API clients don't)."""
    accepted = request.accept_mimetypes
    return accepted.best_match(["application/json", "text/html"]) == "text/html" and (
        accepted["text/html"] > accepted["application/json"]
    )


class Pages:
    """The page templates of one service (its `templates/` folder, then the shared ones)."""

    def __init__(self, package: str) -> None:
        self.environment = Environment(
            loader=ChoiceLoader([PackageLoader(package), PackageLoader("shared")]),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        """The page as an answer: text/html, strict CSP, never cached or indexed."""
        page = self.environment.get_template(template).render(
            lang=LANG, page_css=Markup(page_css()), **context
        )
        response = Response(page, status=status, mimetype="text/html")
        return page_headers(response)


def page_headers(response: Response) -> Response:
    """The headers every public page (and its JSON twin) carries."""
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    return response
