"""Checks of a public page for tests: the structural rules axe-core applies, and the CSP.

`page_problems(html, policy)` lists what breaks them: no `lang`, no title, not exactly one
h1, a form control without a label, a button without a name, a duplicate id, a field group
without a legend, and anything the page's Content-Security-Policy would block or that
would need JavaScript (a script, an event handler attribute, a style attribute, an inline
style not allowed by its hash, an external resource). Empty: the page passes.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from html.parser import HTMLParser

LABELLED_BY_ATTRIBUTE = ("aria-label", "aria-labelledby")
NO_LABEL_NEEDED = {"hidden", "submit", "button", "reset", "image"}
RESOURCE_ATTRIBUTES = {"src", "srcset", "poster", "data"}


@dataclass
class _Page:
    lang: str | None = None
    title: str = ""
    h1: int = 0
    ids: list[str] = field(default_factory=list)
    label_for: set[str] = field(default_factory=set)
    controls: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (tag, attrs)
    buttons: list[str] = field(default_factory=list)  # their accessible names
    styles: list[str] = field(default_factory=list)
    legends_missing: int = 0
    problems: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = _Page()
        self.open: list[str] = []
        self.text: dict[str, list[str]] = {"title": [], "button": [], "style": []}
        self.in_label = 0
        self.fieldsets: list[bool] = []  # has a legend

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self._check_attributes(tag, values)
        if tag == "html":
            self.page.lang = values.get("lang")
        elif tag == "h1":
            self.page.h1 += 1
        elif tag == "label":
            self.in_label += 1
            if values.get("for"):
                self.page.label_for.add(values["for"])
        elif tag == "fieldset":
            self.fieldsets.append(False)
        elif tag == "legend" and self.fieldsets:
            self.fieldsets[-1] = True
        elif tag in ("input", "textarea", "select"):
            wrapped = {"wrapped": "yes"} if self.in_label else {}
            self.page.controls.append((tag, {**values, **wrapped}))
        elif tag == "script":
            self.page.problems.append("a <script> element (the CSP forbids scripts)")
        if tag in ("title", "button", "style"):
            self.text[tag] = []
            if tag == "button" and values.get("aria-label"):
                self.text[tag].append(values["aria-label"])
        if tag not in ("input", "meta", "link", "br", "img", "hr"):
            self.open.append(tag)

    def _check_attributes(self, tag: str, values: dict[str, str]) -> None:
        if "id" in values:
            self.page.ids.append(values["id"])
        for name, value in values.items():
            if name.startswith("on"):
                self.page.problems.append(f"an event handler {name} on <{tag}>")
            if name == "style":
                self.page.problems.append(f"a style attribute on <{tag}> (the CSP blocks it)")
            if name in RESOURCE_ATTRIBUTES or (tag == "link" and name == "href"):
                self.page.problems.append(f"a resource {value!r} on <{tag}>")
            if value.strip().lower().startswith("javascript:"):
                self.page.problems.append(f"a javascript: URL on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.in_label = max(0, self.in_label - 1)
        elif tag == "fieldset" and self.fieldsets and not self.fieldsets.pop():
            self.page.legends_missing += 1
        elif tag == "title":
            self.page.title = "".join(self.text["title"]).strip()
        elif tag == "button":
            self.page.buttons.append("".join(self.text["button"]).strip())
        elif tag == "style":
            self.page.styles.append("".join(self.text["style"]))
        if tag in self.open:
            while self.open and self.open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        for tag in ("title", "button", "style"):
            if tag in self.open:
                self.text[tag].append(data)


def _unlabelled(page: _Page) -> list[str]:
    missing = []
    for tag, values in page.controls:
        if tag == "input" and values.get("type", "text") in NO_LABEL_NEEDED:
            continue
        labelled = values.get("id") in page.label_for or "wrapped" in values
        if not labelled and not any(values.get(name) for name in LABELLED_BY_ATTRIBUTE):
            missing.append(f"<{tag} name={values.get('name')!r}> has no label")
    return missing


def _style_hash(css: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


def page_problems(html: str, policy: str) -> list[str]:
    """What keeps this page from passing the structural accessibility and CSP rules."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    page = reader.page
    problems = list(page.problems)
    if not page.lang:
        problems.append("<html> has no lang")
    if not page.title:
        problems.append("no <title>")
    if page.h1 != 1:
        problems.append(f"{page.h1} <h1> headings (one wanted)")
    problems += [
        f"duplicate id {i!r}" for i in sorted({i for i in page.ids if page.ids.count(i) > 1})
    ]
    problems += _unlabelled(page)
    problems += ["a button without a name" for name in page.buttons if not name]
    problems += ["a <fieldset> without a <legend>"] * page.legends_missing
    directives = dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";") if part.strip()
    )
    if directives.get("default-src") != "'none'" or "script-src" in directives:
        problems.append(f"the CSP allows more than styles: {policy!r}")
    problems += [
        "an inline <style> the CSP does not allow by its hash"
        for css in page.styles
        if _style_hash(css) not in directives.get("style-src", "").split()
    ]
    return problems
