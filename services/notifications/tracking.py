"""Open and click tracking: signed links in outgoing HTML, and what following them records.

A message's links are stored when it is queued (`sending.queue_message`: one TrackedLink
row per distinct http(s) URL, as `html_links` finds them). `instrument_html` (called by the sender
just before a message goes out) points each of them at `{public_url}/t/c/{token}`, the
token naming the TrackedLink's id, and adds a 1x1 pixel `{public_url}/t/o/{token}.gif`
naming the message. Tokens are signed with the TRACKING_LINK key (`shared.keys`;
itsdangerous, one salt per kind). The click redirect leads only to a URL stored for an
existing message, within CRM_TRACKING_LINK_TTL_DAYS of its queueing (`followed_link`):
there is no open redirect, whatever the request says or whoever signed it.

Recording: the first open of a message sets `opened_at` and records `email.opened` (once
per message, even when two opens race: a conditional UPDATE decides who was first);
every open counts in `open_count`. Every click stores a Click row, counts in
`click_count` and records `email.clicked`. Both events describe the message as every
email.* event does (`sending.message_event_data`), plus `opened_at` or `url`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import update
from sqlalchemy.orm import Session

from services.notifications.html_links import rewrite_links
from services.notifications.models import Click, Message, TrackedLink, tracked_link_id
from services.notifications.sending import record_message_event
from shared.config import Settings
from shared.events import canonical_uuid, utcnow
from shared.keys import TRACKING_LINK, purpose_key

OPEN_SALT = "crm.tracking.open"
LINK_SALT = "crm.tracking.link"
LINK_TTL_DAYS = 365  # default of CRM_TRACKING_LINK_TTL_DAYS
MAX_TOKEN_CHARS = 4096
# One transparent 1x1 GIF (GIF89a).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _serializer(settings: Settings, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(purpose_key(settings.jwt_secret, TRACKING_LINK), salt=salt)


def _public_url(settings: Settings) -> str:
    return str(settings.extra["public_url"]).rstrip("/")


def link_ttl(settings: Settings) -> timedelta:
    """How long after its message was queued a tracked link still leads anywhere."""
    return timedelta(days=float(settings.extra.get("tracking_link_ttl_days", LINK_TTL_DAYS)))


def open_token(settings: Settings, message_id: str) -> str:
    """The signed token of a message's open pixel."""
    return _serializer(settings, OPEN_SALT).dumps(str(message_id))


def click_token(settings: Settings, link_id: str) -> str:
    """The signed token of one tracked link (a TrackedLink id, never a URL)."""
    return _serializer(settings, LINK_SALT).dumps(str(link_id))


def _signed_id(settings: Settings, salt: str, token: str) -> str | None:
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        return canonical_uuid(_serializer(settings, salt).loads(token))
    except BadData:
        return None


def message_of_open_token(settings: Settings, token: str) -> str | None:
    """The message an open token names; None when it is not one we signed."""
    return _signed_id(settings, OPEN_SALT, token)


def link_of_click_token(settings: Settings, token: str) -> str | None:
    """The tracked link a click token names; None when it is not one we signed."""
    return _signed_id(settings, LINK_SALT, token)


# --- a message's links ------------------------------------------------------------------


def followed_link(session: Session, link_id: str, ttl: timedelta) -> TrackedLink | None:
    """The tracked link, if its message still exists and it is younger than `ttl`."""
    link = session.get(TrackedLink, link_id)
    if link is None or session.get(Message, link.message_id) is None:
        return None
    return link if _aware(link.created_at) + ttl > utcnow() else None


def _aware(moment: datetime) -> datetime:
    """SQLite gives times back naive; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def instrument_html(settings: Settings, message_id: str, html: str) -> str:
    """The HTML with every tracked link rewritten and an open pixel added (before </body>)."""
    if not html:
        return html
    base = _public_url(settings)

    def link_for(url: str) -> str:
        return f"{base}/t/c/{click_token(settings, tracked_link_id(message_id, url))}"

    tracked = rewrite_links(html, link_for)
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


def record_click(session: Session, link: TrackedLink) -> None:
    """Store a click of a message's tracked link and record `email.clicked`."""
    message = session.get(Message, link.message_id)
    click = Click(message_id=link.message_id, url=link.url, clicked_at=utcnow())
    session.add(click)
    session.execute(
        update(Message)
        .where(Message.id == link.message_id)
        .values(click_count=Message.click_count + 1)
    )
    session.flush()
    record_message_event(
        session,
        "email.clicked",
        message,
        url=link.url,
        click_id=click.id,
        clicked_at=click.clicked_at,
    )
