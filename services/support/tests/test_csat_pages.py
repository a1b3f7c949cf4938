"""The rating pages a customer's browser gets from the CSAT link: accessible, no script,
a GET never records, a POST records once."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.support.models import Ticket
from services.support.tests.conftest import AGENT_ID
from services.support.tests.test_csat_api import link, new_ticket, ratings
from shared.page_checks import page_problems
from shared.testing import outbox_events

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def checked_page(response: Any, status: int = 200) -> str:
    """The page's HTML, once it is shown to pass the structural and CSP checks."""
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'") and "script-src" not in policy
    assert response.headers["Cache-Control"].startswith("no-store")
    html = response.get_data(as_text=True)
    assert page_problems(html, policy) == []
    return html


def score_buttons(html: str) -> list[str]:
    return re.findall(r'<button type="submit" name="rating" value="(\d)">', html)


def test_the_link_opens_a_rating_page_with_five_score_buttons_and_changes_nothing(
    app, db, anonymous
):
    ticket_id = new_ticket(db)
    with db.session() as session:
        session.get(Ticket, ticket_id).subject = "Printer <b>on</b> fire"
    for _ in range(2):  # a mail scanner, then the customer
        html = checked_page(anonymous.get(link(app, ticket_id), headers=BROWSER))
    assert score_buttons(html) == ["1", "2", "3", "4", "5"]
    assert '<form method="post">' in html and 'name="comment"' in html
    assert "Printer &lt;b&gt;on&lt;/b&gt; fire" in html
    assert "ada@example.com" not in html and "Lovelace" not in html
    assert ratings(db) == [] and outbox_events(db) == []


def test_a_score_link_preselects_its_score_with_a_confirm_button_and_records_nothing(
    app, db, anonymous
):
    ticket_id = new_ticket(db)
    html = checked_page(anonymous.get(f"{link(app, ticket_id)}?rating=4", headers=BROWSER))
    radios = re.findall(
        r'<input type="radio" id="rating-(\d)" name="rating" value="\d"( checked)?', html
    )
    assert radios == [("1", ""), ("2", ""), ("3", ""), ("4", " checked"), ("5", "")]
    assert score_buttons(html) == [] and '<button type="submit">Send my rating</button>' in html
    assert ratings(db) == [] and outbox_events(db) == []
    assert anonymous.get(f"{link(app, ticket_id)}?rating=9", headers=BROWSER).status_code == 422


def test_the_posted_form_records_once_and_a_second_post_says_already_rated(app, db, anonymous):
    ticket_id = new_ticket(db)
    url = link(app, ticket_id)
    # from the page a score link opened: the browser posts back to that URL, query and all
    form = {"rating": "4", "comment": "Quick, thanks"}
    posted = anonymous.post(f"{url}?rating=4", data=form, headers=BROWSER)
    html = checked_page(posted)
    assert "Thank you" in html and "4 – Good" in html
    assert ratings(db) == [(ticket_id, 4, "Quick, thanks", AGENT_ID)]
    assert len(outbox_events(db, "ticket.csat_recorded")) == 1
    again = checked_page(anonymous.post(url, data={"rating": "1"}, headers=BROWSER), 409)
    assert "already been rated" in again
    assert "already been rated" in checked_page(anonymous.get(url, headers=BROWSER))
    assert ratings(db) == [(ticket_id, 4, "Quick, thanks", AGENT_ID)]
    assert len(outbox_events(db, "ticket.csat_recorded")) == 1


@pytest.mark.parametrize(
    ("form", "told"),
    [
        ({"rating": "9"}, "Please choose a score from 1 to 5."),
        ({"comment": "no score"}, "Please choose a score from 1 to 5."),
        ({"rating": "x"}, "Please choose a score from 1 to 5."),
        ({"rating": "3", "comment": "x" * 5001}, "Please shorten your comment"),
    ],
)
def test_a_bad_form_shows_the_form_again_and_records_nothing(app, db, anonymous, form, told):
    ticket_id = new_ticket(db)
    response = anonymous.post(link(app, ticket_id), data=form, headers=BROWSER)
    html = checked_page(response, 422)
    assert 'role="alert"' in html and told in html and '<form method="post">' in html
    if form.get("comment") == "no score":
        assert ">no score</textarea>" in html  # what the customer wrote is kept
    assert ratings(db) == [] and outbox_events(db) == []


def test_a_ticket_open_again_cannot_be_rated_from_the_page(app, db, anonymous):
    ticket_id = new_ticket(db, status="open")
    url = link(app, ticket_id)
    assert "Not ready to rate" in checked_page(anonymous.get(url, headers=BROWSER))
    refused = anonymous.post(url, data={"rating": "5"}, headers=BROWSER)
    assert "Not ready to rate" in checked_page(refused, 409)
    assert ratings(db) == []


def test_a_bad_link_shows_a_page_saying_so(app, db, anonymous):
    for response in (
        anonymous.get("/api/v1/csat/not-a-token", headers=BROWSER),
        anonymous.post("/api/v1/csat/not-a-token", data={"rating": "5"}, headers=BROWSER),
    ):
        assert "not valid" in checked_page(response, 404)


def test_api_clients_keep_getting_json(app, db, anonymous):
    ticket_id = new_ticket(db)
    url = link(app, ticket_id)
    shown = anonymous.get(url, headers={"Accept": "application/json"})
    assert shown.mimetype == "application/json" and shown.get_json()["can_rate"] is True
    rated = anonymous.post(url, json={"rating": 3}, headers={"Accept": "application/json"})
    assert rated.status_code == 201 and rated.get_json()["rating"] == 3
