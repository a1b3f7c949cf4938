"""The lead-scoring HTTP API: rules, and the threshold and behaviour points settings.

Every rule change rescores the open leads in the same transaction; the answer carries
`X-Leads-Rescored`, how many leads' scores changed.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from services.sales import scoring
from services.sales.lead_schemas import ScoringRuleInSchema, ScoringSettingsSchema, rule_view
from services.sales.models import ScoringRule
from shared.auth import require_role
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.web import (
    created_with_etag,
    current_db,
    expected_version,
    invalid,
    load_body,
    no_content,
    with_etag,
)

scoring_api = Blueprint("scoring", __name__, url_prefix="/api/v1/lead-scoring-rules")

rule_in = ScoringRuleInSchema()
settings_in = ScoringSettingsSchema()

RULE_SORTS = {
    "created_at": SortKey("created_at", ScoringRule.created_at),
    "updated_at": SortKey("updated_at", ScoringRule.updated_at),
    "name": SortKey("name", ScoringRule.name),
    "points": SortKey("points", ScoringRule.points),
}
RESCORED_HEADER = "X-Leads-Rescored"


def _may_change_scoring() -> None:
    require_role("sales")


def _rescored(response: Response, count: int) -> Response:
    response.headers[RESCORED_HEADER] = str(count)
    return response


def _active_filter(raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw.lower() not in ("true", "false"):
        raise invalid({"active": ["Use true or false."]})
    return raw.lower() == "true"


@scoring_api.get("")
def list_rules() -> Any:
    unknown = set(request.args) - {"active", "field", "sort", "limit", "cursor"}
    if unknown:
        raise invalid({name: ["Unknown query parameter."] for name in sorted(unknown)})
    limit, cursor = list_params()
    sort = parse_sort(request.args.get("sort"), RULE_SORTS, "created_at")
    statement = select(ScoringRule)
    active = _active_filter(request.args.get("active"))
    if active is not None:
        statement = statement.where(ScoringRule.active.is_(active))
    if request.args.get("field"):
        statement = statement.where(ScoringRule.field == request.args["field"])
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, ScoringRule.id, limit=limit, cursor=cursor
        )
        return page_answer([rule_view(rule) for rule in rows], next_cursor)


@scoring_api.post("")
def create_rule() -> Any:
    _may_change_scoring()
    data = load_body(rule_in)
    with current_db().session() as session:
        rule, rescored = scoring.create_rule(session, data)
        body = rule_view(rule)
    response = created_with_etag(body, f"/api/v1/lead-scoring-rules/{body['id']}")
    return _rescored(response, rescored)


@scoring_api.get("/<uuid:rule_id>")
def get_rule(rule_id: Any) -> Any:
    with current_db().session() as session:
        return with_etag(rule_view(scoring.get_rule(session, str(rule_id))))


@scoring_api.patch("/<uuid:rule_id>")
def update_rule(rule_id: Any) -> Any:
    _may_change_scoring()
    changes = load_body(rule_in, partial=True)
    with current_db().session() as session:
        rule, rescored = scoring.update_rule(session, str(rule_id), changes, expected_version())
        body = rule_view(rule)
    return _rescored(with_etag(body), rescored)


@scoring_api.delete("/<uuid:rule_id>")
def delete_rule(rule_id: Any) -> Any:
    _may_change_scoring()
    with current_db().session() as session:
        rescored = scoring.delete_rule(session, str(rule_id), expected_version())
    return _rescored(no_content(), rescored)


@scoring_api.get("/settings")
def get_settings() -> Any:
    with current_db().session() as session:
        return jsonify(scoring.scoring_settings(session))


@scoring_api.route("/settings", methods=["PUT", "PATCH"])
def change_settings() -> Any:
    _may_change_scoring()
    changes = load_body(settings_in)
    with current_db().session() as session:
        return jsonify(scoring.change_settings(session, changes))
