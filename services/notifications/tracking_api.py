"""Public open and click tracking: `GET /t/o/{token}.gif` and `GET /t/c/{token}`.

Outside /api: anyone holding a mail may follow its links, so nothing here needs a login
and nothing here trusts the request beyond the signed token:
- the pixel always answers the same GIF (a bad token records nothing, but says nothing);
- the click redirect goes only to a link stored for an existing message (the token names
  the stored link, never a URL), within CRM_TRACKING_LINK_TTL_DAYS. An unsigned,
  tampered or foreign token, a link never stored, one of an erased or deleted message, an
  expired one, or any query parameter (`?url=...`: our links never carry one), is a 404
  problem, never a redirect.
A database failure while recording an open is logged, and the customer still gets the
pixel; a click needs the database to know where it leads (503 while it is down). HEAD
requests (link scanners) are answered without recording.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from werkzeug.urls import iri_to_uri

from services.notifications import tracking
from shared.web import ApiError, current_db, current_settings

log = logging.getLogger(__name__)

tracking_api = Blueprint("tracking", __name__, url_prefix="/t")
NO_STORE = "no-store, no-cache, must-revalidate, private"


def _record(what: str, record: Callable[[Session], bool]) -> None:
    """Record a tracking hit in its own transaction; a failure is logged, not raised."""
    if request.method != "GET":
        return
    try:
        with current_db().session() as session:
            record(session)
    except SQLAlchemyError:
        log.exception("could not record a %s", what)


@tracking_api.get("/o/<token>.gif")
def open_pixel(token: str) -> Any:
    """The 1x1 open pixel; the first open of a message publishes `email.opened`."""
    message_id = tracking.message_of_open_token(current_settings(), token)
    if message_id is not None:
        _record("open", lambda session: tracking.record_open(session, message_id))
    response = Response(tracking.PIXEL_GIF, mimetype="image/gif")
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Pragma"] = "no-cache"
    return response


def _invalid_link() -> ApiError:
    return ApiError(404, "Not Found", "This link is not valid")


@tracking_api.get("/c/<token>")
def click(token: str) -> Any:
    """Redirect (302) to the stored URL the token names, recording the click (`email.clicked`)."""
    settings = current_settings()
    link_id = tracking.link_of_click_token(settings, token)
    if request.args or request.query_string or link_id is None:
        raise _invalid_link()
    try:
        with current_db().session() as session:
            link = tracking.followed_link(session, link_id, tracking.link_ttl(settings))
            if link is None:
                raise _invalid_link()
            url = link.url
            if request.method == "GET":
                tracking.record_click(session, link)
    except SQLAlchemyError:
        log.exception("could not follow a tracked link")
        raise ApiError(503, "Service Unavailable", "Please try again in a moment") from None
    response = Response(status=302)
    response.headers["Location"] = url if url.isascii() else iri_to_uri(url)
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
