"""The support report over HTTP: `GET /api/v1/reports/support`.

Any authenticated role may read it. Query parameters: `from` and `to` (YYYY-MM-DD, UTC
days, both included; by default the last three calendar months, this one included, up
to today), `assignee_id` (a UUID) and `period` (`month`, the default, or `week`).
Unknown or repeated parameters, bad dates, a range the wrong way round or too long are
422 problems; an empty parameter counts as absent. services/support/reports.py says
what each figure counts.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import ValidationError, fields, post_load, validate

from services.support import reports
from shared.events import utcnow
from shared.schemas import StrictSchema
from shared.web import current_db, parse_args

reports_api = Blueprint("support_reports", __name__, url_prefix="/api/v1/reports")

DEFAULT_MONTHS = 3
# Long enough for any honest question, short enough that by_period stays a few hundred rows.
MAX_RANGE_DAYS = {"month": 3660, "week": 731}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class DayField(fields.Field):
    """A calendar day written YYYY-MM-DD (no other ISO 8601 spelling)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        try:
            if isinstance(value, str) and _DAY.match(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        raise ValidationError("Not a valid date; use YYYY-MM-DD.")


def _now() -> datetime:
    return utcnow()


def months_before(day: date, months: int) -> date:
    """The first day of the month `months` before `day`'s month."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


class SupportReportQuery(StrictSchema):
    first = DayField(data_key="from", load_default=None)
    last = DayField(data_key="to", load_default=None)
    assignee_id = fields.UUID(load_default=None)
    period = fields.String(load_default="month", validate=validate.OneOf(("month", "week")))

    @post_load
    def fill_days(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Default: the three calendar months up to `to` (today), this one included."""
        last = data["last"] or _now().date()
        first = data["first"] or months_before(last, DEFAULT_MONTHS - 1)
        if last < first:
            raise ValidationError("Must not be before from.", "to")
        limit = MAX_RANGE_DAYS[data["period"]]
        if (last - first).days >= limit:
            raise ValidationError(f"At most {limit} days by {data['period']}.", "to")
        return {**data, "first": first, "last": last}


support_report_query = SupportReportQuery()


@reports_api.get("/support")
def support_report() -> Response:
    """Backlog, SLA compliance, handling times and CSAT: overall, by agent, by period."""
    params = parse_args(support_report_query, drop_empty=True)
    scope = reports.Scope(
        first=params["first"],
        last=params["last"],
        period=params["period"],
        assignee_id=params["assignee_id"],
        now=_now(),
    )
    with current_db().session() as session:
        body = reports.support_report(session, scope)
    return jsonify(body)
