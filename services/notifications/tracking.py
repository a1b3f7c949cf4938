"""Open and click tracking: signed links in outgoing HTML, and what following them records.

`instrument_html` (called by the sender just before a message goes out) points every
http(s) link of an HTML body at `{public_url}/t/c/{token}` and adds a 1x1 pixel
`{public_url}/t/o/{token}.gif`. A token is signed with the service's secret
(itsdangerous, one salt per kind), so the click redirect can only ever lead to a URL this
service signed for that message: there is no open redirect, whatever the request says.

Recording: the first open of a message sets `opened_at` and records `email.opened` (once
per message, even when two opens race: a conditional UPDATE decides who was first);
every open counts in `open_count`. Every click stores a Click row, counts in
`click_count` and records `email.clicked`. Both events describe the message as every
email.* event does (`sending.message_event_data`), plus `opened_at` or `url`.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import update
from sqlalchemy.orm import Session

from services.notifications.models import Click, Message
from services.notifications.sending import record_message_event
from shared.config import Settings
from shared.events import canonical_uuid, utcnow
from shared.keys import TRACKING_LINK, purpose_key

OPEN_SALT = "crm.tracking.open"
CLICK_SALT = "crm.tracking.click"
MAX_URL_CHARS = 2000  # what a Click row stores
MAX_TOKEN_CHARS = 4096
# One transparent 1x1 GIF (GIF89a).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# One attribute of a start tag, its value quoted, unquoted or absent (as HTML parses it).
_ATTRIBUTE = re.compile(
    r"""\s*(?P<name>[^\s/>"'=]+)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s>"'=<`]+))?|\s*/""",
)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\s/>]*")
_UNSAFE_IN_URL = re.compile(r"[\s\x00-\x1f\x7f]")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _serializer(settings: Settings, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(purpose_key(settings.jwt_secret, TRACKING_LINK), salt=salt)


def _public_url(settings: Settings) -> str:
    return str(settings.extra["public_url"]).rstrip("/")


def open_token(settings: Settings, message_id: str) -> str:
    """The signed token of a message's open pixel."""
    return _serializer(settings, OPEN_SALT).dumps(str(message_id))


def click_token(settings: Settings, message_id: str, url: str) -> str:
    """The signed token of one link of a message."""
    return _serializer(settings, CLICK_SALT).dumps([str(message_id), url])


def message_of_open_token(settings: Settings, token: str) -> str | None:
    """The message an open token names; None when it is not one we signed."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        return canonical_uuid(_serializer(settings, OPEN_SALT).loads(token))
    except BadData:
        return None


def target_of_click_token(settings: Settings, token: str) -> tuple[str, str] | None:
    """(message id, url) a click token signs; None when it is not one we signed."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        value = _serializer(settings, CLICK_SALT).loads(token)
    except BadData:
        return None
    if not (isinstance(value, list) and len(value) == 2):
        return None
    message_id, url = canonical_uuid(value[0]), value[1]
    if message_id is None or not isinstance(url, str) or not is_trackable(url):
        return None
    return message_id, url


def is_trackable(url: str) -> bool:
    """An absolute http(s) URL without spaces or control characters, short enough to store."""
    if len(url) > MAX_URL_CHARS or _UNSAFE_IN_URL.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


# --- instrumenting a body ---------------------------------------------------------------


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


def _rewritten_tag(tag: str, link_for: Callable[[str], str]) -> str:
    """The start tag with its first href pointed at the tracked link (if it is http(s))."""
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
            if not is_trackable(url):
                return tag
            start, end = found.span("value")
            return f'{tag[:start]}"{link_for(url)}"{tag[end:]}'
        position = found.end()
    return tag


def _rewrite_links(source: str, link_for: Callable[[str], str]) -> str:
    finder = _AnchorFinder(source)
    finder.feed(source)
    finder.close()
    pieces, done = [], 0
    for start, tag in finder.anchors:
        if start < done or source[start : start + len(tag)] != tag:
            continue  # the parser saw it differently than the text reads: leave it be
        pieces.extend((source[done:start], _rewritten_tag(tag, link_for)))
        done = start + len(tag)
    pieces.append(source[done:])
    return "".join(pieces)


def instrument_html(settings: Settings, message_id: str, html: str) -> str:
    """The HTML with every http(s) link tracked and an open pixel added (before </body>)."""
    if not html:
        return html
    base = _public_url(settings)

    def link_for(url: str) -> str:
        return f"{base}/t/c/{click_token(settings, message_id, url)}"

    tracked = _rewrite_links(html, link_for)
    pixel = (
        f'<img src="{base}/t/o/{open_token(settings, message_id)}.gif" width="1" height="1" '
        'alt="" style="border:0;width:1px;height:1px" />'
    )
    ends = list(_BODY_END.finditer(tracked))
    if not ends:
        return tracked + pixel
    cut = ends[-1].start()
    return tracked[:cut] + pixel + tracked[cut:]


# --- recording --------------------------------------------------------------------------


def record_open(session: Session, message_id: str) -> bool:
    """Count an open of a message; the first one records `email.opened`. False if unknown."""
    if session.get(Message, message_id) is None:
        return False
    now = utcnow()
    first = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.opened_at.is_(None))
        .values(opened_at=now)
    ).rowcount
    session.execute(
        update(Message).where(Message.id == message_id).values(open_count=Message.open_count + 1)
    )
    if first:
        message = session.get(Message, message_id, populate_existing=True)
        record_message_event(session, "email.opened", message, opened_at=now)
    return True


def record_click(session: Session, message_id: str, url: str) -> bool:
    """Store a click of a message's link and record `email.clicked`. False if unknown."""
    message = session.get(Message, message_id)
    if message is None:
        return False
    click = Click(message_id=message_id, url=url, clicked_at=utcnow())
    session.add(click)
    session.execute(
        update(Message).where(Message.id == message_id).values(click_count=Message.click_count + 1)
    )
    session.flush()
    record_message_event(
        session, "email.clicked", message, url=url, click_id=click.id, clicked_at=click.clicked_at
    )
    return True
