"""Open and click tracking: instrumented HTML, the pixel, the redirect to stored links only."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeSerializer

from services.notifications import html_links, tracking
from services.notifications.mail_handlers import handlers
from services.notifications.models import Click, Message, TrackedLink, tracked_link_id
from services.notifications.sending import queue_message, record_links
from shared.events import utcnow
from shared.keys import PURPOSES, TRACKING_LINK, purpose_key
from shared.testing import handle_event, make_event, outbox_events

CONTACT = "00000000-0000-4000-8000-0000000000c1"
CAMPAIGN = "00000000-0000-4000-8000-0000000000d1"
PUBLIC = "https://crm.example.com"


@pytest.fixture
def settings(app: Any) -> Any:
    base = app.extensions["crm.settings"]
    return base.with_overrides(extra={**base.extra, "public_url": PUBLIC + "/"})


def new_message(db: Any, **fields: Any) -> str:
    """A message in the delivery log, as the sender leaves it after sending, with the links
    of its HTML stored as queueing stores them."""
    message_id = str(uuid.uuid4())
    values = {
        "to_address": "Ada@Example.com",
        "to_key": "ada@example.com",
        "from_address": "crm@example.com",
        "subject": "News",
        "body_text": "Hi",
        "category": "marketing",
        "contact_id": CONTACT,
        "campaign_id": CAMPAIGN,
        "status": "sent",
        **fields,
    }
    with db.session() as session:
        row = Message(id=message_id, **values)
        session.add(row)
        session.flush()
        record_links(session, row)
    return message_id


def linking(db: Any, settings: Any, *urls: str, **fields: Any) -> tuple[str, list[str]]:
    """A sent message linking to `urls`, and the paths of its click links as it went out."""
    body = "".join(f'<a href="{url}">link</a>' for url in urls)
    message_id = new_message(db, body_html=f"<html><body>{body}</body></html>", **fields)
    tracked = tracking.instrument_html(settings, message_id, message(db, message_id).body_html)
    return message_id, [path_of(url) for url in re.findall(r'href="([^"]+)"', tracked)]


def click_path(settings: Any, message_id: str, url: str) -> str:
    """The click link of `url` in the message, whether it was stored or not."""
    return f"/t/c/{tracking.click_token(settings, tracked_link_id(message_id, url))}"


def stored_links(db: Any) -> list[tuple[str, str]]:
    with db.engine.connect() as connection:
        rows = connection.execute(sa.select(TrackedLink.message_id, TrackedLink.url))
        return sorted(tuple(row) for row in rows)


def message(db: Any, message_id: str) -> Message:
    with db.session() as session:
        found = session.get(Message, message_id)
        session.expunge(found)
        return found


def clicks(db: Any) -> list[tuple[str, str]]:
    with db.engine.connect() as connection:
        rows = connection.execute(sa.select(Click.message_id, Click.url).order_by(Click.clicked_at))
        return [tuple(row) for row in rows]


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC + "/t/")
    return url.removeprefix(PUBLIC)


# --- instrument_html ------------------------------------------------------------------------


def test_every_http_link_is_rewritten_to_a_signed_click(settings):
    message_id = str(uuid.uuid4())
    html = (
        '<html><body><a href="https://shop.example.com/a?x=1&amp;y=2">A</a> '
        "<A class='b' HREF='http://example.org/b'>B</A> <a href=https://c.example.com/c>C</a>"
        "</body></html>"
    )
    tracked = tracking.instrument_html(settings, message_id, html)
    links = re.findall(r'href="([^"]+)"', tracked, flags=re.IGNORECASE)
    assert len(links) == 3
    named = [
        tracking.link_of_click_token(settings, path_of(link).removeprefix("/t/c/"))
        for link in links
    ]
    urls = ["https://shop.example.com/a?x=1&y=2", "http://example.org/b", "https://c.example.com/c"]
    assert named == [tracked_link_id(message_id, url) for url in urls]
    assert html_links.links_in(html) == urls  # what queueing stores
    assert "class='b'" in tracked and ">A</a>" in tracked


def test_a_message_has_at_most_max_links_tracked_links(settings, monkeypatch):
    monkeypatch.setattr(html_links, "MAX_LINKS", 2)
    html = "".join(f'<a href="https://example.com/{n % 3}">x</a>' for n in range(6))
    assert html_links.links_in(html) == ["https://example.com/0", "https://example.com/1"]
    tracked = tracking.instrument_html(settings, str(uuid.uuid4()), html)
    assert tracked.count("/t/c/") == 4 and tracked.count('href="https://example.com/2"') == 2


def test_the_open_pixel_goes_before_the_end_of_the_body(settings):
    message_id = str(uuid.uuid4())
    tracked = tracking.instrument_html(settings, message_id, "<html><body><p>Hi</p></body></html>")
    pixel = re.search(r'<img src="([^"]+)" width="1" height="1"', tracked)
    assert pixel is not None and tracked.endswith("</body></html>")
    token = path_of(pixel.group(1)).removeprefix("/t/o/").removesuffix(".gif")
    assert tracking.message_of_open_token(settings, token) == message_id
    fragment = tracking.instrument_html(settings, message_id, "<p>No body tag</p>")
    assert fragment.startswith("<p>No body tag</p><img ")


def test_other_links_and_non_links_are_left_alone(settings):
    html = (
        '<a href="mailto:help@example.com">m</a><a href="tel:+4412">t</a><a href="#top">#</a>'
        '<a href="/relative">r</a><a name="anchor">n</a><a href="javascript:alert(1)">j</a>'
        '<!-- <a href="https://in.comment">c</a> -->'
        "<script>var s = \"<a href='https://in.script'>\";</script>"
        '<link href="https://fonts.example.com/css"><img src="https://img.example.com/x.png">'
    )
    tracked = tracking.instrument_html(settings, str(uuid.uuid4()), html)
    assert tracked.startswith(html)
    assert tracked.count("/t/c/") == 0 and tracked.count("/t/o/") == 1


def test_only_the_href_value_changes(settings):
    html = '<a title="href=https://fake.example.com" data-x=\'>\' href="https://real.example.com">x</a>'
    tracked = tracking.instrument_html(settings, str(uuid.uuid4()), html)
    assert tracked.startswith('<a title="href=https://fake.example.com" data-x=\'>\' href="')
    token = re.search(r'href="[^"]+/t/c/([^"]+)"', tracked).group(1)
    assert html_links.links_in(html) == ["https://real.example.com"]
    assert tracking.link_of_click_token(settings, token) is not None


def test_empty_html_stays_empty(settings):
    assert tracking.instrument_html(settings, str(uuid.uuid4()), "") == ""


# --- the open pixel -------------------------------------------------------------------------


def test_the_pixel_is_a_real_uncached_gif(anonymous, settings):
    response = anonymous.get(f"/t/o/{tracking.open_token(settings, str(uuid.uuid4()))}.gif")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert response.data.startswith(b"GIF89a") and response.data[6:10] == b"\x01\x00\x01\x00"
    assert "no-store" in response.headers["Cache-Control"]


def test_the_first_open_publishes_once_and_every_open_counts(anonymous, db, settings):
    message_id = new_message(db)
    pixel = f"/t/o/{tracking.open_token(settings, message_id)}.gif"
    for _ in range(4):
        assert anonymous.get(pixel).status_code == 200
    opened = message(db, message_id)
    assert opened.opened_at is not None and opened.open_count == 4
    events = outbox_events(db, "email.opened")
    assert len(events) == 1
    data = events[0][1]
    assert data["message_id"] == message_id and data["to"] == "Ada@Example.com"
    assert (data["contact_id"], data["campaign_id"]) == (CONTACT, CAMPAIGN)
    assert data["category"] == "marketing"


def test_opens_racing_publish_once(app, db, settings):
    message_id = new_message(db)
    pixel = f"/t/o/{tracking.open_token(settings, message_id)}.gif"
    start = threading.Barrier(6)
    statuses: list[int] = []

    def open_it() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.get(pixel).status_code)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert len(outbox_events(db, "email.opened")) == 1
    assert message(db, message_id).open_count == 6


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJ4IjoxfQ.forged", "x" * 5000])
def test_a_bad_open_token_still_answers_the_gif_but_records_nothing(anonymous, db, token):
    message_id = new_message(db)
    response = anonymous.get(f"/t/o/{token}.gif")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert message(db, message_id).open_count == 0
    assert outbox_events(db) == []


def test_tokens_of_another_kind_or_message_record_nothing(anonymous, db, settings):
    message_id, [click] = linking(db, settings, "https://example.com")
    assert anonymous.get(click.replace("/t/c/", "/t/o/") + ".gif").status_code == 200
    unknown = tracking.open_token(settings, str(uuid.uuid4()))
    assert anonymous.get(f"/t/o/{unknown}.gif").status_code == 200
    assert (
        anonymous.head(f"/t/o/{tracking.open_token(settings, message_id)}.gif").status_code == 200
    )
    assert message(db, message_id).open_count == 0
    assert outbox_events(db) == []


# --- the click redirect ---------------------------------------------------------------------


def test_queueing_a_message_stores_the_links_of_its_html(db):
    html = (
        '<a href="https://shop.example.com/a">A</a><a href="mailto:x@example.com">m</a>'
        '<a href="https://shop.example.com/a">again</a><a href="http://example.org/b">B</a>'
    )
    with db.session() as session:
        queued = queue_message(
            session,
            message_id=None,
            to="ada@example.com",
            subject="Hi",
            body_text="Hi",
            body_html=html,
        )
        plain = queue_message(
            session, message_id=None, to="ada@example.com", subject="Hi", body_text="Hi"
        )
        queued_id, plain_id = queued.id, plain.id
    assert stored_links(db) == [
        (queued_id, "http://example.org/b"),
        (queued_id, "https://shop.example.com/a"),
    ]
    assert plain_id not in {message_id for message_id, _ in stored_links(db)}


def test_a_click_redirects_to_the_stored_url_and_publishes_each_time(anonymous, db, settings):
    url = "https://shop.example.com/sale?item=42&amp;ref=mail"
    message_id, [link] = linking(db, settings, url)
    url = url.replace("&amp;", "&")
    for _ in range(2):
        response = anonymous.get(link)
        assert response.status_code == 302
        assert response.headers["Location"] == url
        assert "no-store" in response.headers["Cache-Control"]
    assert clicks(db) == [(message_id, url), (message_id, url)]
    assert message(db, message_id).click_count == 2
    events = outbox_events(db, "email.clicked")
    assert len(events) == 2
    data = events[0][1]
    assert (data["message_id"], data["url"], data["to"]) == (message_id, url, "Ada@Example.com")
    assert (data["contact_id"], data["campaign_id"]) == (CONTACT, CAMPAIGN)
    assert outbox_events(db, "email.opened") == []


def test_instrumented_links_work_end_to_end(anonymous, settings, db):
    message_id, [link] = linking(db, settings, "https://example.com/ü?q=1")
    response = anonymous.get(link)
    assert response.status_code == 302
    assert response.headers["Location"] == "https://example.com/%C3%BC?q=1"
    assert clicks(db) == [(message_id, "https://example.com/ü?q=1")]


def test_a_scanners_head_request_follows_but_records_nothing(anonymous, db, settings):
    message_id, [link] = linking(db, settings, "https://example.com/")
    response = anonymous.head(link)
    assert response.status_code == 302 and response.headers["Location"] == "https://example.com/"
    assert clicks(db) == [] and message(db, message_id).click_count == 0


def tampered(token: str) -> str:
    payload, signature = token.rsplit(".", 1)
    return f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"


EVIL = "https://evil.example.net/phish"


def forged_clicks(settings: Any, message_id: str, good: str) -> dict[str, str]:
    """Click paths an attacker might try, each with the message's real id at hand."""
    link_id = tracked_link_id(message_id, EVIL)
    other_keys = [settings.jwt_secret, *(purpose_key(settings.jwt_secret, p) for p in PURPOSES)]
    return {
        "unsigned": "/t/c/evil.example.net",
        "tampered": tampered(good),
        "url_parameter": f"{good}?url={EVIL}",
        "open_token": f"/t/c/{tracking.open_token(settings, message_id)}",
        "other_secret": click_path(settings.with_overrides(jwt_secret="x" * 40), message_id, EVIL),
        # genuinely signed, but the message never linked there
        "not_stored": click_path(settings, message_id, EVIL),
        "unknown_link": f"/t/c/{tracking.click_token(settings, str(uuid.uuid4()))}",
        # a URL in the token, as tokens once were, signed with the right key
        "url_in_token": "/t/c/"
        + URLSafeSerializer(
            purpose_key(settings.jwt_secret, TRACKING_LINK), salt="crm.tracking.click"
        ).dumps([message_id, EVIL]),
        **{
            f"key_{index}": "/t/c/" + URLSafeSerializer(key, salt=tracking.LINK_SALT).dumps(link_id)
            for index, key in enumerate(other_keys)
            if key != purpose_key(settings.jwt_secret, TRACKING_LINK)
        },
    }


def assert_not_found(response: Any, kind: str = "") -> None:
    assert response.status_code == 404, kind
    assert response.mimetype == "application/problem+json", kind
    assert "Location" not in response.headers, kind


def test_no_open_redirect(anonymous, db, settings):
    message_id, [good] = linking(db, settings, "https://example.com")
    for kind, path in forged_clicks(settings, message_id, good).items():
        assert_not_found(anonymous.get(path), kind)
    assert clicks(db) == [] and outbox_events(db) == []
    assert anonymous.get(good).status_code == 302


def test_the_links_of_an_erased_or_deleted_message_lead_nowhere(anonymous, db, settings):
    erased, [erased_link] = linking(db, settings, "https://example.com/a")
    deleted, [deleted_link] = linking(db, settings, "https://example.com/b", contact_id=None)
    event = make_event("contact.erased", {"id": CONTACT}, aggregate_id=CONTACT)
    handle_event(db, handlers(None), event)  # type: ignore[arg-type]
    with db.session() as session:
        session.execute(sa.delete(Click))
        session.execute(sa.delete(Message).where(Message.id == deleted))
    assert stored_links(db) == []
    for link in (erased_link, deleted_link):
        assert_not_found(anonymous.get(link))
    assert clicks(db) == []


def test_links_expire_after_the_configured_days(app, anonymous, db, settings):
    message_id, [link] = linking(db, settings, "https://example.com/")

    def queued_days_ago(days: float) -> None:
        with db.session() as session:
            session.execute(
                sa.update(TrackedLink).values(created_at=utcnow() - timedelta(days=days))
            )

    queued_days_ago(364)
    assert anonymous.get(link).status_code == 302  # default: a year
    queued_days_ago(366)
    assert_not_found(anonymous.get(link))
    base = app.extensions["crm.settings"]
    app.extensions["crm.settings"] = base.with_overrides(
        extra={**base.extra, "tracking_link_ttl_days": 7}
    )
    queued_days_ago(6)
    assert anonymous.get(link).status_code == 302
    queued_days_ago(8)
    assert_not_found(anonymous.get(link))
    assert len(clicks(db)) == 2


def test_tracking_needs_no_login(anonymous, db, settings):
    _message_id, [link] = linking(db, settings, "https://example.com")
    assert anonymous.get(link).status_code == 302
