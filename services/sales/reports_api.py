"""The sales reports HTTP API: pipeline, forecast, win rate, funnel, sales cycle.

Every report is a GET any authenticated role may read. Its query parameters are loaded
by a strict schema: unknown or repeated parameters, bad dates or months and ranges the
wrong way round are 422; an unknown pipeline is 404. An empty parameter counts as absent.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import ValidationError, fields, post_load, validate

from services.sales import reports, reports_outcomes
from shared.events import utcnow
from shared.schemas import StrictSchema
from shared.web import current_db, parse_args

reports_api = Blueprint("reports", __name__, url_prefix="/api/v1/reports")

FORECAST_MONTHS = 6  # the default forecast: this month and the next five
MAX_FORECAST_MONTHS = 60
HISTORY_MONTHS = 12  # the default range of the other reports: the last twelve months
MAX_RANGE_DAYS = 3660  # ten years, so a by-month answer stays a few hundred rows
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class MonthField(fields.Field):
    """A month written YYYY-MM, loaded as the date of its first day."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        match = _MONTH.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValidationError("Not a valid month; use YYYY-MM.")
        return date(int(match.group(1)), int(match.group(2)), 1)


class DayField(fields.Field):
    """A calendar day written YYYY-MM-DD (no other ISO 8601 spelling)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        try:
            if isinstance(value, str) and _DAY.match(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        raise ValidationError("Not a valid date; use YYYY-MM-DD.")


def _today() -> date:
    return utcnow().date()


class PipelineQuery(StrictSchema):
    pipeline_id = fields.UUID(load_default=None)
    owner_id = fields.UUID(load_default=None)


class ForecastQuery(PipelineQuery):
    first = MonthField(data_key="from", load_default=None)
    last = MonthField(data_key="to", load_default=None)

    @post_load
    def fill_months(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Default: this month and the next five; `to` alone ends a range from this month."""
        first = data["first"] or reports.month_start(_today())
        last = data["last"] or reports.add_months(first, FORECAST_MONTHS - 1)
        if last < first:
            raise ValidationError("Must not be before from.", "to")
        if reports.add_months(first, MAX_FORECAST_MONTHS) <= last:
            raise ValidationError(f"At most {MAX_FORECAST_MONTHS} months.", "to")
        return {**data, "first": first, "last": last}


class RangeQuery(StrictSchema):
    first = DayField(data_key="from", load_default=None)
    last = DayField(data_key="to", load_default=None)
    owner_id = fields.UUID(load_default=None)

    @post_load
    def fill_days(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Default: the twelve calendar months up to `to` (today), this one included."""
        last = data["last"] or _today()
        first = data["first"] or reports.add_months(last, 1 - HISTORY_MONTHS)
        if last < first:
            raise ValidationError("Must not be before from.", "to")
        if (last - first).days > MAX_RANGE_DAYS:
            raise ValidationError("The range is at most ten years.", "to")
        return {**data, "first": first, "last": last}


class WinRateQuery(RangeQuery):
    period = fields.String(load_default="month", validate=validate.OneOf(reports.PERIODS))


pipeline_query = PipelineQuery()
forecast_query = ForecastQuery()
range_query = RangeQuery()
win_rate_query = WinRateQuery()


@reports_api.get("/pipeline")
def pipeline() -> Response:
    params = parse_args(pipeline_query, drop_empty=True)
    with current_db().session() as session:
        chosen = reports.report_pipeline(session, params["pipeline_id"])
        return jsonify(reports.pipeline_report(session, chosen, params["owner_id"]))


@reports_api.get("/forecast")
def forecast() -> Response:
    params = parse_args(forecast_query, drop_empty=True)
    with current_db().session() as session:
        if params["pipeline_id"] is not None:
            reports.report_pipeline(session, params["pipeline_id"])  # 404 if unknown
        body = reports.forecast_report(
            session, params["first"], params["last"], params["pipeline_id"], params["owner_id"]
        )
    return jsonify(body)


@reports_api.get("/win-rate")
def win_rate() -> Response:
    params = parse_args(win_rate_query, drop_empty=True)
    with current_db().session() as session:
        body = reports_outcomes.win_rate_report(
            session, params["first"], params["last"], params["period"], params["owner_id"]
        )
    return jsonify(body)


@reports_api.get("/funnel")
def funnel() -> Response:
    params = parse_args(range_query, drop_empty=True)
    with current_db().session() as session:
        body = reports_outcomes.funnel_report(
            session, params["first"], params["last"], params["owner_id"]
        )
    return jsonify(body)


@reports_api.get("/sales-cycle")
def sales_cycle() -> Response:
    params = parse_args(range_query, drop_empty=True)
    with current_db().session() as session:
        body = reports_outcomes.sales_cycle_report(
            session, params["first"], params["last"], params["owner_id"]
        )
    return jsonify(body)
