"""The gateway's composed views over HTTP: the customer view, its export and the dashboard.

Each asks the services themselves (gateway/fanout.py), with the caller's credentials, so
each service applies its own rules; any authenticated role may read the view and the
dashboard, only an admin the subject access export.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import date
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.breaker import BREAKERS
from gateway.customer_view import compose_customer
from gateway.dashboard import MAX_DAYS, Period, compose_dashboard
from gateway.fanout import Fanout, ServiceClient
from gateway.proxy import HTTP_SESSION, upstream_headers
from gateway.subject_export import (
    EXPORT_RESPONSES,
    EXPORT_TIMEOUT_SECONDS,
    compose_export,
    export_response,
)
from shared.auth import require_role
from shared.events import utcnow
from shared.openapi import documented
from shared.subject_export import checked_contact_id
from shared.web import REQUEST_ID_HEADER, current_settings, invalid

views_api = Blueprint("gateway_views", __name__, url_prefix="/api/v1")

# What the services need of the caller's headers: who it is and which request this is.
FORWARDED_HEADERS = frozenset(
    {
        "authorization",  # an API key's call has a short-lived token here by now
        REQUEST_ID_HEADER.lower(),
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    }
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def service_client() -> ServiceClient:
    """A client for the services that speaks for the current caller."""
    settings = current_settings()
    headers = {
        name: value
        for name, value in upstream_headers().items()
        if name.lower() in FORWARDED_HEADERS
    }
    headers["Accept"] = "application/json"
    return ServiceClient(
        http=current_app.extensions[HTTP_SESSION],
        service_urls=settings.service_urls,
        headers=headers,
        breakers=current_app.extensions[BREAKERS],
        timeout=settings.view_timeout_seconds,
    )


@views_api.get("/customers/<uuid:contact_id>")
def customer(contact_id: uuid.UUID) -> Response:
    """One customer as every service sees it; `unavailable` names the services missing."""
    with Fanout(service_client()) as fanout:
        return jsonify(compose_customer(fanout, str(contact_id)))


@views_api.get("/customers/<contact_id>/export")
@documented(responses=EXPORT_RESPONSES)
def customer_export(contact_id: str) -> Response:
    """Everything every service holds on one person (admin only), as a JSON attachment."""
    require_role()  # no role but admin (gateway/permissions.py says so too)
    client = replace(service_client(), timeout=EXPORT_TIMEOUT_SECONDS)
    with Fanout(client) as fanout:
        return export_response(compose_export(fanout, checked_contact_id(contact_id)))


@views_api.get("/dashboard")
def dashboard() -> Response:
    """The headline numbers of every service for a period (`from`, `to`: YYYY-MM-DD)."""
    period = requested_period(request.args)
    with Fanout(service_client()) as fanout:
        return jsonify(compose_dashboard(fanout, period))


def requested_period(args: Any) -> Period:
    """`from` and `to` (both optional, days, inclusive); 422 when wrong."""
    unknown = sorted(set(args) - {"from", "to"})
    errors = {name: ["Unknown query parameter."] for name in unknown}
    days: dict[str, date | None] = {}
    for name in ("from", "to"):
        days[name] = _day(args.get(name) or "", name, errors)
    if errors:
        raise invalid(errors)
    last = days["to"] or utcnow().date()
    period = Period(days["from"], last) if days["from"] else Period.ending(last)
    if period.last < period.first:
        raise invalid({"to": ["Must not be before from."]})
    if (period.last - period.first).days >= MAX_DAYS:
        raise invalid({"to": [f"At most {MAX_DAYS} days."]})
    return period


def _day(value: str, name: str, errors: dict[str, list[str]]) -> date | None:
    if not value:
        return None
    try:
        if _DAY.match(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    errors[name] = ["Not a valid date; use YYYY-MM-DD."]
    return None
