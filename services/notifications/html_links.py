"""The http(s) links of an HTML body: found, and rewritten, the same way every time.

One parse serves both ends of click tracking: `links_in` lists the URLs a message's links
lead to when it is queued (they are stored as its tracked links), and `rewrite_links`
points the same links at the click redirect when it goes out. Both walk the body in the
same order and take at most MAX_LINKS distinct URLs, so a rewritten link always names one
that was stored; links past the limit are left as they are (not tracked).
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

MAX_URL_CHARS = 2000  # what a tracked link and a click store
MAX_LINKS = 200  # distinct tracked URLs per message
# One attribute of a start tag, its value quoted, unquoted or absent (as HTML parses it).
_ATTRIBUTE = re.compile(
    r"""\s*(?P<name>[^\s/>"'=]+)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s>"'=<`]+))?|\s*/""",
)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\s/>]*")
_UNSAFE_IN_URL = re.compile(r"[\s\x00-\x1f\x7f]")


def is_trackable(url: str) -> bool:
    """An absolute http(s) URL without spaces or control characters, short enough to store."""
    if len(url) > MAX_URL_CHARS or _UNSAFE_IN_URL.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


class _AnchorFinder(HTMLParser):
    """Finds where each `<a ...>` start tag is in the source (not inside comments, scripts)."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[int, str]] = []
        self._line_starts = [0, *(found.end() for found in re.finditer("\n", source))]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            line, column = self.getpos()
            self.anchors.append((self._line_starts[line - 1] + column, self.get_starttag_text()))

    handle_startendtag = handle_starttag


def _rewritten_tag(tag: str, link_for: Callable[[str], str | None]) -> str:
    """The start tag with its first href pointed at `link_for(url)` (if http(s) and not None)."""
    name = _TAG_NAME.match(tag)
    position = name.end() if name else len(tag)
    while position < len(tag):
        found = _ATTRIBUTE.match(tag, position)
        if found is None or found.end() == position:
            return tag
        if found.group("name") and found.group("name").lower() == "href":
            raw = found.group("value")
            if raw is None:
                return tag
            quoted = raw[0] in "\"'"
            url = html_lib.unescape(raw[1:-1] if quoted else raw).strip()
            replacement = link_for(url) if is_trackable(url) else None
            if replacement is None:
                return tag
            start, end = found.span("value")
            return f'{tag[:start]}"{replacement}"{tag[end:]}'
        position = found.end()
    return tag


def _limited(link_for: Callable[[str], str]) -> Callable[[str], str | None]:
    """`link_for` for the first MAX_LINKS distinct URLs met; None (left alone) after that."""
    seen: set[str] = set()

    def limited(url: str) -> str | None:
        if url not in seen:
            if len(seen) >= MAX_LINKS:
                return None
            seen.add(url)
        return link_for(url)

    return limited


def rewrite_links(source: str, link_for: Callable[[str], str]) -> str:
    """The HTML with each tracked link's href replaced by `link_for(url)`."""
    finder = _AnchorFinder(source)
    finder.feed(source)
    finder.close()
    replace = _limited(link_for)
    pieces, done = [], 0
    for start, tag in finder.anchors:
        if start < done or source[start : start + len(tag)] != tag:
            continue  # the parser saw it differently than the text reads: leave it be
        pieces.extend((source[done:start], _rewritten_tag(tag, replace)))
        done = start + len(tag)
    pieces.append(source[done:])
    return "".join(pieces)


def links_in(source: str | None) -> list[str]:
    """The distinct URLs `rewrite_links` would track in this HTML, in order of appearance."""
    found: dict[str, None] = {}
    if source:
        rewrite_links(source, lambda url: found.setdefault(url) or url)
    return list(found)
