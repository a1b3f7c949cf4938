"""The customer's rating pages, as a browser sees the CSAT link (`csat_api` routes to them).

- the rating form: the ticket's subject, an optional comment and the five scores as
  buttons, each posting the form with its score; or, when the mail's one-click link named
  a score (`?rating=4`), that score preselected among five labelled radio buttons and a
  button to confirm it. A GET never records anything: mail scanners follow links.
- the thank-you page after the POST; "already rated" for a second one (each ticket is
  rated once); "not ready to rate" while the ticket is open again; "not valid" for a bad,
  expired or foreign link.
Plain HTML forms that POST back: no JavaScript, a strict CSP (`shared.pages`).
"""

from __future__ import annotations

from typing import Any

from flask import Response

from services.support import csat
from services.support.models import Ticket
from shared.pages import Pages
from shared.web import current_db, not_found

pages = Pages("services.support")
SCORES = tuple(csat.SCORE_NAMES.items())
# What the customer is told when the form cannot be taken (the API's messages are for code).
PROBLEMS = {
    "rating": "Please choose a score from 1 to 5.",
    "comment": f"Please shorten your comment to at most {csat.MAX_COMMENT_CHARS} characters.",
}


def link_not_valid() -> Response:
    return pages.render("link_invalid.html", 404)


def public_view_of(ticket_id: str) -> dict[str, Any]:
    """What the page may show about the ticket (404 if it was deleted since)."""
    with current_db().session() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            raise not_found("Ticket", ticket_id)
        return csat.public_view(session, ticket)


def state_page(view: dict[str, Any], status: int = 200) -> Response | None:
    """The page of a ticket that cannot be rated now (rated already, or open again)."""
    if view["rated"]:
        return pages.render("csat_already_rated.html", status, subject=view["subject"])
    if not view["can_rate"]:
        return pages.render("csat_not_open.html", status, subject=view["subject"])
    return None


def rating_form(
    view: dict[str, Any],
    *,
    chosen: int | None = None,
    comment: str = "",
    errors: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """The rating form, or the page saying why the ticket cannot be rated now."""
    return state_page(view) or pages.render(
        "csat_form.html",
        status,
        subject=view["subject"],
        scores=SCORES,
        chosen=chosen if chosen in csat.SCORE_NAMES else None,
        comment=comment,
        problems=list(
            dict.fromkeys(PROBLEMS.get(name, PROBLEMS["rating"]) for name in errors or {})
        ),
        max_comment=csat.MAX_COMMENT_CHARS,
    )


def thanks(rating: int, subject: str | None) -> Response:
    return pages.render(
        "csat_thanks.html",
        rating=rating,
        rating_name=csat.SCORE_NAMES[rating],
        subject=subject,
    )


def already_rated() -> Response:
    """A second rating (409): each ticket is rated once."""
    return pages.render("csat_already_rated.html", 409, subject=None)


def number(value: str | None) -> int | None:
    """A score as the form sent it ("4"), or None."""
    return int(value) if value is not None and value.isdigit() and len(value) == 1 else None
