"""The dashboard: every service's headline numbers in one answer, asked in parallel.

`GET /api/v1/dashboard` answers, for a period of days (`from`, `to`; by default the 30
days up to today, UTC):

- `pipeline`: open deals of the default pipeline now, their value and weighted value;
  `forecast`: open deals expected to close this month and the next five (sales'
  default), summed per currency; `win_rate`: deals won and lost in the period (sales);
- `tickets`: the open backlog now and the SLA compliance of the period; `csat`: the
  ratings of the period (support);
- `campaigns`: engagement rates of the campaigns launched in the period; `churn`: the
  churn rate of the period and customers at risk; `lifetime_value`: the average
  lifetime value of customers now, per currency (marketing);
- `unavailable` and `forbidden` as in the customer view (gateway/fanout.py).

A key a service does not (yet) give is null: the dashboard reads with `.get`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.fanout import Call, Fanout, Sections

DEFAULT_DAYS = 30
MAX_DAYS = 3650


@dataclass(frozen=True)
class Period:
    """Days from `first` to `last`, both included (UTC)."""

    first: date
    last: date

    @classmethod
    def ending(cls, last: date, days: int = DEFAULT_DAYS) -> Period:
        return cls(last - timedelta(days=days - 1), last)

    def view(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


def dashboard_calls(period: Period) -> dict[str, Call]:
    """The report calls; each service is given the period in the spelling it takes."""
    days = period.view()
    # Marketing's periods are [from, to): the day after `to` keeps `to` in.
    marketing = {"from": days["from"], "to": (period.last + timedelta(days=1)).isoformat()}
    return {
        "pipeline": Call("sales", "/api/v1/reports/pipeline"),
        "forecast": Call("sales", "/api/v1/reports/forecast"),
        "win_rate": Call("sales", "/api/v1/reports/win-rate", days),
        "support": Call("support", "/api/v1/reports/support", days),
        "marketing": Call("marketing", "/api/v1/reports/marketing", marketing),
    }


def compose_dashboard(fanout: Fanout, period: Period) -> dict[str, Any]:
    """The dashboard of `period` (see the module docstring)."""
    futures = {name: fanout.submit(call) for name, call in dashboard_calls(period).items()}
    answers = {name: fanout.result(future) for name, future in futures.items()}
    sections = Sections()
    sections.body["period"] = period.view()
    sections.add("pipeline", [answers["pipeline"]], pipeline_figures)
    sections.add("forecast", [answers["forecast"]], forecast_figures)
    sections.add("win_rate", [answers["win_rate"]], win_rate_figures)
    sections.add("tickets", [answers["support"]], ticket_figures)
    sections.add("csat", [answers["support"]], csat_figures)
    sections.add("campaigns", [answers["marketing"]], campaign_figures)
    sections.add("churn", [answers["marketing"]], churn_figures)
    sections.add("lifetime_value", [answers["marketing"]], lifetime_value_figures)
    return sections.finish()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def pipeline_figures(report: Any) -> dict[str, Any]:
    """Open deals of the default pipeline (none answered 404: an empty pipeline)."""
    totals = _dict(_dict(report).get("totals"))
    return {
        "pipeline_id": _dict(report).get("pipeline_id"),
        "open_deals": totals.get("count", 0),
        "value": totals.get("value", []),
        "weighted_value": totals.get("weighted_value", []),
    }


def forecast_figures(report: Any) -> dict[str, Any]:
    """The forecast's months summed: open deals expected to close, value, weighted value."""
    months = [_dict(month) for month in _dict(report).get("months") or []]
    return {
        "from": _dict(report).get("from"),
        "to": _dict(report).get("to"),
        "open_deals": sum(int(month.get("count") or 0) for month in months),
        "value": sum_money(month.get("value") for month in months),
        "weighted_value": sum_money(month.get("weighted_value") for month in months),
    }


def sum_money(lists: Any) -> list[dict[str, str]]:
    """Money lists (`[{amount, currency}]`) added up per currency, exactly."""
    totals: defaultdict[str, Decimal] = defaultdict(Decimal)
    for money_list in lists:
        for money in money_list or []:
            try:
                totals[money["currency"]] += Decimal(money["amount"])
            except (KeyError, TypeError, InvalidOperation):
                continue
    return [{"amount": str(totals[c]), "currency": c} for c in sorted(totals)]


def win_rate_figures(report: Any) -> dict[str, Any]:
    overall = _dict(_dict(report).get("overall"))
    return {name: overall.get(name) for name in ("won", "lost", "win_rate", "won_value")}


def ticket_figures(report: Any) -> dict[str, Any]:
    """The open backlog now and the period's SLA compliance."""
    backlog = _dict(_dict(report).get("backlog"))
    sla = _dict(_dict(report).get("sla"))
    return {
        "open": backlog.get("total"),
        "by_priority": backlog.get("by_priority"),
        "sla_compliance": {
            name: _dict(sla.get(name)).get("compliance")
            for name in ("first_response", "resolution")
        },
    }


def csat_figures(report: Any) -> dict[str, Any]:
    rated = _dict(_dict(report).get("csat"))
    return {"count": rated.get("count"), "average": rated.get("average")}


CAMPAIGN_FIGURES = ("open_rate", "click_rate", "bounce_rate", "unsubscribe_rate")


def campaign_figures(report: Any) -> dict[str, Any]:
    summary = _dict(report)
    return {
        "sent": summary.get("campaigns_sent"),
        "emails_sent": summary.get("sent"),
        **{name: summary.get(name) for name in CAMPAIGN_FIGURES},
    }


def churn_figures(report: Any) -> dict[str, Any]:
    summary = _dict(report)
    return {
        "rate": summary.get("churn_rate"),
        "customers_at_start": summary.get("customers_at_start"),
        "churned": summary.get("churned"),
        "at_risk": summary.get("at_risk"),
    }


def lifetime_value_figures(report: Any) -> dict[str, Any]:
    summary = _dict(report)
    return {
        "customers": summary.get("customers"),
        "average": summary.get("average_lifetime_value"),
    }
