"""Public open and click tracking: `GET /t/o/{token}.gif` and `GET /t/c/{token}`.

Outside /api: anyone holding a mail may follow its links, so nothing here needs a login
and nothing here trusts the request beyond the signed token:
- the pixel always answers the same GIF (a bad token records nothing, but says nothing);
- the click redirect goes only to the URL signed in its token. An unsigned or tampered
  token, or any query parameter (`?url=...`: our links never carry one), is a 404
  problem, never a redirect. A valid token whose message is unknown still redirects
  (the customer's link must work) but records nothing.
A database failure while recording is logged, and the customer still gets the pixel or
the page they asked for. HEAD requests (link scanners) are answered without recording.
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
    """Redirect (302) to the URL the token signs, recording the click (`email.clicked`)."""
    if request.args or request.query_string:
        raise _invalid_link()
    target = tracking.target_of_click_token(current_settings(), token)
    if target is None:
        raise _invalid_link()
    message_id, url = target
    _record("click", lambda session: tracking.record_click(session, message_id, url))
    response = Response(status=302)
    response.headers["Location"] = url if url.isascii() else iri_to_uri(url)
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
