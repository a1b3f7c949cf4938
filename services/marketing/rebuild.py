"""Fill the contact replica from the contacts service's API (a new replica, or one repaired).

`python -m services.marketing.rebuild` pages through `GET /api/v1/contacts` (oldest first, so
contacts created meanwhile come on later pages) with a read-only service token and upserts
each contact under the replica's rule: a row is only changed by a newer version, and erased
or merged contacts stay tombstones. The worker may keep consuming events meanwhile: both
paths take the same row locks and the same version rule. Engagement counters are not in the
contacts API; they come from events only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from services.marketing.contact_data import uuid_value
from services.marketing.replica import apply_contact
from shared.auth import Principal, issue_service_token
from shared.bus import PermanentError
from shared.config import Settings
from shared.db import Database

log = logging.getLogger(__name__)

PAGE_SIZE = 200
# Fetch a page: (url, headers, timeout in seconds) -> the decoded JSON answer.
Fetch = Callable[[str, Mapping[str, str], float], Any]


class RebuildError(RuntimeError):
    """The contacts service answered something that is not a page of contacts."""


@dataclass
class RebuildReport:
    """What a rebuild did."""

    seen: int = 0
    applied: int = 0
    unchanged: int = 0
    refused: int = 0


def http_fetch(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    """GET a URL and decode its JSON; an HTTP error status raises."""
    response = requests.get(url, headers=dict(headers), timeout=timeout)
    response.raise_for_status()
    return response.json()


def _headers(settings: Settings) -> dict[str, str]:
    """A fresh read-only service token per page (a long rebuild outlives one token)."""
    principal = Principal("service:marketing-rebuild", "viewer", None, kind="service")
    return {"Authorization": f"Bearer {issue_service_token(settings, principal)}"}


def _page_url(settings: Settings, cursor: str | None, page_size: int) -> str:
    params = {"limit": str(page_size), "sort": "created_at"}
    if cursor:
        params["cursor"] = cursor
    return f"{settings.service_urls['contacts'].rstrip('/')}/api/v1/contacts?{urlencode(params)}"


def _items(page: Any) -> tuple[list[Any], str | None]:
    """The contacts of a page and the next cursor, checked."""
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise RebuildError("the contacts list did not answer {items, next_cursor}")
    cursor = page.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise RebuildError("next_cursor is not a string")
    return page["items"], cursor


def _upsert(db: Database, items: list[Any], report: RebuildReport) -> None:
    """Apply one page's contacts in one transaction."""
    with db.session() as session:
        for item in items:
            report.seen += 1
            try:
                if not isinstance(item, dict):
                    raise PermanentError("a contact is not an object")
                version = item.get("version")
                if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                    raise PermanentError("a contact has no version")
                contact_id = uuid_value(item.get("id"), "id")
                applied = apply_contact(session, contact_id, version, item)
            except PermanentError as error:
                report.refused += 1
                log.warning("rebuild skipped a contact it cannot read: %s", error)
                continue
            if applied:
                report.applied += 1
            else:
                report.unchanged += 1


def rebuild_replica(
    db: Database, settings: Settings, fetch: Fetch = http_fetch, *, page_size: int = PAGE_SIZE
) -> RebuildReport:
    """Upsert every contact the contacts service lists (newer versions only); a report."""
    report, cursor = RebuildReport(), None
    while True:
        url = _page_url(settings, cursor, page_size)
        items, cursor = _items(fetch(url, _headers(settings), settings.http_timeout_seconds))
        _upsert(db, items, report)
        log.info("rebuild: %d contacts seen, %d applied", report.seen, report.applied)
        if not cursor:
            return report


def main() -> int:
    """Rebuild this environment's replica from its contacts service."""
    from services.marketing.app import make_database, make_settings
    from shared.logs import configure_logging

    settings = make_settings()
    configure_logging(settings.service, settings.log_level)
    db = make_database(settings)
    try:
        report = rebuild_replica(db, settings)
    finally:
        db.dispose()
    print(
        f"contact replica rebuilt: {report.seen} seen, {report.applied} applied, "
        f"{report.unchanged} unchanged (as new or newer here), {report.refused} refused"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
