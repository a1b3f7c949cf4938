"""Open and click tracking: instrumented HTML, the pixel, the redirect, and no open redirect."""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications import tracking
from services.notifications.models import Click, Message
from shared.testing import outbox_events

CONTACT = "00000000-0000-4000-8000-0000000000c1"
CAMPAIGN = "00000000-0000-4000-8000-0000000000d1"
PUBLIC = "https://crm.example.com"


@pytest.fixture
def settings(app: Any) -> Any:
    base = app.extensions["crm.settings"]
    return base.with_overrides(extra={**base.extra, "public_url": PUBLIC + "/"})


def new_message(db: Any, **fields: Any) -> str:
    """A message in the delivery log, as the sender leaves it after sending."""
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
        session.add(Message(id=message_id, **values))
    return message_id


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
    targets = [
        tracking.target_of_click_token(settings, path_of(link).removeprefix("/t/c/"))
        for link in links
    ]
    assert targets == [
        (message_id, "https://shop.example.com/a?x=1&y=2"),
        (message_id, "http://example.org/b"),
        (message_id, "https://c.example.com/c"),
    ]
    assert "class='b'" in tracked and ">A</a>" in tracked


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
    assert tracking.target_of_click_token(settings, token)[1] == "https://real.example.com"


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
    message_id = new_message(db)
    click = tracking.click_token(settings, message_id, "https://example.com")
    assert anonymous.get(f"/t/o/{click}.gif").status_code == 200
    unknown = tracking.open_token(settings, str(uuid.uuid4()))
    assert anonymous.get(f"/t/o/{unknown}.gif").status_code == 200
    assert (
        anonymous.head(f"/t/o/{tracking.open_token(settings, message_id)}.gif").status_code == 200
    )
    assert message(db, message_id).open_count == 0
    assert outbox_events(db) == []


# --- the click redirect ---------------------------------------------------------------------


def test_a_click_redirects_to_the_signed_url_and_publishes_each_time(anonymous, db, settings):
    message_id = new_message(db)
    url = "https://shop.example.com/sale?item=42&ref=mail"
    link = f"/t/c/{tracking.click_token(settings, message_id, url)}"
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
    message_id = new_message(db)
    tracked = tracking.instrument_html(
        settings, message_id, '<a href="https://example.com/ü?q=1">x</a>'
    )
    link = path_of(re.search(r'href="([^"]+)"', tracked).group(1))
    response = anonymous.get(link)
    assert response.status_code == 302
    assert response.headers["Location"] == "https://example.com/%C3%BC?q=1"
    assert clicks(db) == [(message_id, "https://example.com/ü?q=1")]


def tampered(token: str) -> str:
    payload, signature = token.rsplit(".", 1)
    return f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"


@pytest.mark.parametrize(
    "kind", ["unsigned", "tampered", "url_parameter", "open_token", "other_secret"]
)
def test_no_open_redirect(anonymous, db, settings, kind):
    message_id = new_message(db)
    good = tracking.click_token(settings, message_id, "https://example.com")
    evil = "https://evil.example.net/phish"
    paths = {
        "unsigned": f"/t/c/{evil}",
        "tampered": f"/t/c/{tampered(good)}",
        "url_parameter": f"/t/c/{good}?url={evil}",
        "open_token": f"/t/c/{tracking.open_token(settings, message_id)}",
        "other_secret": "/t/c/"
        + tracking.click_token(settings.with_overrides(jwt_secret="x" * 40), message_id, evil),
    }
    response = anonymous.get(paths[kind])
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "Location" not in response.headers
    assert clicks(db) == [] and outbox_events(db) == []


def test_a_click_of_an_unknown_message_still_redirects_but_records_nothing(anonymous, db, settings):
    url = "https://example.com/page"
    response = anonymous.get(f"/t/c/{tracking.click_token(settings, str(uuid.uuid4()), url)}")
    assert response.status_code == 302 and response.headers["Location"] == url
    assert clicks(db) == [] and outbox_events(db) == []


def test_a_signed_target_that_is_not_http_is_refused(anonymous, settings):
    token = tracking.click_token(settings, str(uuid.uuid4()), "javascript:alert(1)")
    assert anonymous.get(f"/t/c/{token}").status_code == 404


def test_tracking_needs_no_login(anonymous, settings):
    token = tracking.click_token(settings, str(uuid.uuid4()), "https://example.com")
    assert anonymous.get(f"/t/c/{token}").status_code == 302
