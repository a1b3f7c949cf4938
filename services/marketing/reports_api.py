"""The marketing reports over HTTP, under `/api/v1/reports/marketing`.

- `GET /reports/marketing`: the summary of a period (campaigns, rates, churn, customers
  at risk, average lifetime value).
- `GET /reports/marketing/campaigns`: each campaign launched in the period (or every one
  with `?status=`), with its stats; paged (`limit`, `cursor`), newest first.
- `GET /reports/marketing/engagement`: emails sent, opened, clicked, bounced and
  unsubscribed per `interval` (day, the default; week; month).
- `GET /reports/marketing/churn`: customers at the start, how many churned, the rate.
- `GET /reports/marketing/at-risk`: customers inactive for more than `inactive_days`
  (default 90) or with a breached ticket; paged (`limit`, `cursor`).

Any authenticated role may read them. `from` and `to` are ISO 8601 date-times with a
time zone (converted to UTC) or dates (midnight UTC); by default the 30 days up to now.
Unknown or repeated parameters, bad values, `to` not after `from`, a range over ten years
or over MAX_BUCKETS buckets are 422 problems naming the parameter; an empty parameter
counts as absent. services/marketing/reports.py and reports_customers.py say what each
figure counts.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import ValidationError, fields, post_load, validate

from services.marketing import campaigns, reports, reports_customers
from services.marketing.models import Campaign, Contact
from shared.events import utcnow
from shared.pagination import SortKey, list_params, page_answer, paginate
from shared.schemas import StrictSchema
from shared.web import current_db, parse_args

reports_api = Blueprint("marketing_reports", __name__, url_prefix="/api/v1/reports/marketing")

DEFAULT_DAYS = 30
DEFAULT_INACTIVE_DAYS = 90
MAX_INACTIVE_DAYS = 3660
MAX_RANGE = timedelta(days=3660)  # ten years
MAX_BUCKETS = 400  # a bit over a year by day
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CAMPAIGN_ORDER = [SortKey("created_at", Campaign.created_at, descending=True)]


class MomentField(fields.Field):
    """An ISO 8601 date-time with a time zone, or a date (its midnight, UTC); as UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            if isinstance(value, str) and _DAY.match(value):
                day = date.fromisoformat(value)
                return datetime(day.year, day.month, day.day, tzinfo=UTC)
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise ValidationError("Not a valid date-time; use ISO 8601, e.g. 2026-11-01T00:00:00Z.")
        if moment.tzinfo is None:
            raise ValidationError("Give the time zone (Z for UTC).")
        return moment.astimezone(UTC)


def _now() -> datetime:
    return utcnow()


class PeriodQuery(StrictSchema):
    first = MomentField(data_key="from", load_default=None)
    last = MomentField(data_key="to", load_default=None)

    @post_load
    def fill_period(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Default: the 30 days up to `to` (now)."""
        return {**data, **period_of(data)}


def period_of(data: dict[str, Any]) -> dict[str, datetime]:
    """`first` and `last` filled in and checked: `to` after `from`, at most ten years."""
    last = data["last"] or _now()
    first = data["first"] or last - timedelta(days=DEFAULT_DAYS)
    if last <= first:
        raise ValidationError("Must be after from.", "to")
    if last - first > MAX_RANGE:
        raise ValidationError("The range is at most ten years.", "to")
    return {"first": first, "last": last}


def inactive_days_field() -> fields.Integer:
    return fields.Integer(
        load_default=DEFAULT_INACTIVE_DAYS,
        strict=False,
        validate=validate.Range(min=1, max=MAX_INACTIVE_DAYS),
    )


class SummaryQuery(PeriodQuery):
    inactive_days = inactive_days_field()


class CampaignsQuery(PeriodQuery):
    status = fields.String(load_default=None, validate=validate.OneOf(campaigns.STATUSES))
    limit = fields.String()
    cursor = fields.String()


class EngagementQuery(StrictSchema):
    first = MomentField(data_key="from", load_default=None)
    last = MomentField(data_key="to", load_default=None)
    interval = fields.String(load_default="day", validate=validate.OneOf(reports.INTERVALS))

    @post_load
    def fill_period(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The period, split in at most MAX_BUCKETS buckets."""
        period = period_of(data)
        bounds = reports.bucket_bounds(period["first"], period["last"], data["interval"])
        if len(bounds) - 1 > MAX_BUCKETS:
            raise ValidationError(
                f"At most {MAX_BUCKETS} buckets: choose a longer interval or a shorter range.",
                "interval",
            )
        return {**data, **period}


class AtRiskQuery(StrictSchema):
    inactive_days = inactive_days_field()
    limit = fields.String()
    cursor = fields.String()


summary_query = SummaryQuery()
campaigns_query = CampaignsQuery()
engagement_query = EngagementQuery()
churn_query = PeriodQuery()
at_risk_query = AtRiskQuery()


@reports_api.get("")
def summary() -> Response:
    """Campaigns sent and their rates, churn, customers at risk, average lifetime value."""
    params = parse_args(summary_query, drop_empty=True)
    with current_db().session() as session:
        body = reports.summary_report(
            session, params["first"], params["last"], params["inactive_days"], _now()
        )
    return jsonify(body)


@reports_api.get("/campaigns")
def campaign_report() -> Response:
    """The campaigns launched in the period (or every one in `status`) with their stats."""
    params = parse_args(campaigns_query, drop_empty=True)
    limit, cursor = list_params()
    statement = reports.campaigns_statement(params["first"], params["last"], params["status"])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, CAMPAIGN_ORDER, Campaign.id, limit=limit, cursor=cursor
        )
        body = page_answer([reports.campaign_line(row) for row in rows], next_cursor)
    return jsonify({"from": params["first"], "to": params["last"], **body})


@reports_api.get("/engagement")
def engagement() -> Response:
    """Emails sent, opened, clicked, bounced, unsubscribed per day, week or month."""
    params = parse_args(engagement_query, drop_empty=True)
    with current_db().session() as session:
        body = reports.engagement_report(
            session, params["first"], params["last"], params["interval"]
        )
    return jsonify(body)


@reports_api.get("/churn")
def churn() -> Response:
    """Customers at `from`, how many of them churned by `to`, and the rate."""
    params = parse_args(churn_query, drop_empty=True)
    with current_db().session() as session:
        body = reports_customers.churn_report(session, params["first"], params["last"])
    return jsonify(body)


@reports_api.get("/at-risk")
def at_risk() -> Response:
    """Customers inactive for more than `inactive_days`, or with a breached ticket."""
    params = parse_args(at_risk_query, drop_empty=True)
    limit, cursor = list_params()
    now, days = _now(), params["inactive_days"]
    statement = reports_customers.at_risk_statement(now, days)
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session,
            statement,
            reports_customers.at_risk_sort(),
            Contact.id,
            limit=limit,
            cursor=cursor,
        )
        items = [reports_customers.at_risk_line(row, now, days) for row in rows]
    return jsonify({"inactive_days": days, "as_of": now, **page_answer(items, next_cursor)})
