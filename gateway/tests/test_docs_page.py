"""The docs page (`/docs`): Swagger UI from its pinned package, served by the gateway itself.

Nothing on the page comes from another host (it works offline), every file it loads is
answered here with its type, and its Content-Security-Policy allows the gateway only.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from gateway.docs_api import SWAGGER_UI_DIR

TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class Links(HTMLParser):
    """Every URL a page loads or names: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append((tag, value))


def page_links(client: FlaskClient) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(client.get("/docs").get_data(as_text=True))
    return parser.urls


def policy(client: FlaskClient) -> dict[str, list[str]]:
    header = client.get("/docs").headers["Content-Security-Policy"]
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


def test_the_docs_page_is_html_that_starts_swagger_ui_on_the_document(client):
    response = client.get("/docs")

    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'data-document="/api/v1/openapi.json"' in page
    scripts = [url for tag, url in page_links(client) if tag == "script"]
    assert [urlsplit(url).path for url in scripts] == [
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/docs-init.js",
    ]
    assert "<script>" not in page and "<style" not in page and "style=" not in page


def test_the_docs_page_names_no_other_host(client):
    page = client.get("/docs").get_data(as_text=True)

    assert "://" not in page and "cdn" not in page.lower()
    for _tag, url in page_links(client):
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/docs/static/"), url
    start = client.get("/docs/static/docs-init.js").get_data(as_text=True)
    assert "://" not in start


def test_every_file_the_page_loads_is_served_here_with_its_type(client):
    links = page_links(client)
    assert {tag for tag, _url in links} == {"link", "script"}

    for _tag, url in links:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.mimetype == TYPES[Path(urlsplit(url).path).suffix], url
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "max-age=" in answer.headers["Cache-Control"]


def test_swagger_ui_is_the_pinned_packages_own_file(client):
    bundle = SWAGGER_UI_DIR / "swagger-ui-bundle.js"
    [url] = [url for _tag, url in page_links(client) if "swagger-ui-bundle.js" in url]

    assert client.get(url).data == bundle.read_bytes()


def test_the_pages_policy_allows_the_gateway_itself_only(client):
    directives = policy(client)

    assert directives["default-src"] == ["'self'"]
    for name in ("script-src", "style-src", "connect-src", "font-src"):
        assert directives.get(name, ["'self'"]) == ["'self'"], name
    assert directives["img-src"] == ["'self'", "data:"]  # the style sheet's own icons
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"] and directives["base-uri"] == ["'none'"]
    sources = {source for values in directives.values() for source in values}
    assert sources <= {"'self'", "'none'", "data:"}, sources


@pytest.mark.parametrize(
    "path",
    [
        "/docs/static/index.html",
        "/docs/static/swagger-initializer.js",  # the package's petstore example
        "/docs/static/oauth2-redirect.html",
        "/docs/static/swagger-ui-bundle.js.map",
        "/docs/static/docs_api.py",
    ],
)
def test_nothing_else_of_the_package_or_the_gateway_is_served(client, path):
    answer = client.get(path)

    assert answer.status_code == 404 and answer.mimetype == "application/problem+json"


def test_no_path_leaves_the_static_directory(client):
    for path in ("/docs/static/..%2fdocs_api.py", "/docs/static/%2e%2e/app.py"):
        assert client.get(path).status_code == 400, path


def test_the_swagger_ui_served_reads_the_documents_openapi_version():
    # Swagger UI 4 refuses an OpenAPI 3.1 document ("does not specify a valid version
    # field"): the page loads and shows nothing but that. 5.0 reads 3.1.
    from gateway.docs_api import SWAGGER_UI_VERSION
    from shared.openapi import OPENAPI_VERSION

    if OPENAPI_VERSION.startswith("3.1"):
        assert int(SWAGGER_UI_VERSION.split(".")[0]) >= 5, SWAGGER_UI_VERSION
