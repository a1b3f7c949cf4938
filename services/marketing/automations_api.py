"""The automations HTTP API.

`/api/v1/automations` {id, name, description, trigger {event_type, conditions,
inactive_days (contact.inactive only)}, actions [...], action (the first one, as API.md
names it; give `action` or `actions`), delay_seconds, enabled, version, created_at,
updated_at}: list (paged, ?enabled=, ?event_type=, ?q=, ?sort=), create (201, Location,
ETag; Idempotency-Key honoured), get (ETag), PATCH (If-Match), DELETE (204, If-Match).
`GET /automations/{id}/runs`: its run log, newest first (paged, ?status=).

An unknown trigger type is a 422 naming the allowed ones; a condition on an unknown field,
with an unfit operator or value, is a 422 naming it (the language: automation_conditions.py);
an `add_to_list` naming no static segment is a 422. Every role reads; marketing and admin
change. The rules are in automations.py.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint
from marshmallow import ValidationError, fields, post_load, validate, validates_schema
from sqlalchemy import select

from services.marketing import automations
from services.marketing.automation_conditions import condition_errors
from services.marketing.models import AutomationRule, AutomationRun
from shared.auth import require_role
from shared.pagination import SortKey, list_params, page_answer, paginate, parse_sort
from shared.schemas import FilterGroupSchema, JsonBoolean, StrictSchema
from shared.search import words_condition
from shared.web import (
    created_with_etag,
    current_db,
    expected_version,
    load_body,
    no_content,
    parse_args,
    with_etag,
)

automations_api = Blueprint("automations", __name__, url_prefix="/api/v1")
BASE = "/automations"
RULE_SORTS = {
    "name": SortKey("name", AutomationRule.name),
    "created_at": SortKey("created_at", AutomationRule.created_at),
    "updated_at": SortKey("updated_at", AutomationRule.updated_at),
}
RUN_SORT = [SortKey("created_at", AutomationRun.created_at, descending=True)]
NOT_BLANK = validate.Regexp(r"^\s*\S", error="Cannot be blank.")
ONE_LINE = validate.Regexp(r"^[^\r\n]*$", error="Cannot contain line breaks.")
MAX_DELAY = 365 * 24 * 3600
MAX_VARIABLES_CHARS = 20_000
TRIGGER_HELP = f"Unknown trigger; one of: {', '.join(automations.TRIGGER_TYPES)}."


def _small(value: Any) -> None:
    if len(json.dumps(value)) > MAX_VARIABLES_CHARS:
        raise ValidationError(f"At most {MAX_VARIABLES_CHARS} characters of JSON.")


# --- schemas ----------------------------------------------------------------------------


class ConditionsSchema(StrictSchema):
    """API.md's filter groups: OR of groups, AND of the filters in each."""

    filter_groups = fields.List(
        fields.Nested(FilterGroupSchema), required=True, validate=validate.Length(max=10)
    )


class TriggerSchema(StrictSchema):
    """An event type (or contact.inactive with inactive_days) and conditions."""

    event_type = fields.String(
        required=True, validate=validate.OneOf(automations.TRIGGER_TYPES, error=TRIGGER_HELP)
    )
    conditions = fields.Nested(ConditionsSchema, allow_none=True, load_default=None)
    inactive_days = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=3650)
    )

    @validates_schema
    def valid_conditions(self, data: dict[str, Any], **_: Any) -> None:
        """Every condition names a known field, an operator it takes and a value that fits."""
        inactive = data["event_type"] == automations.INACTIVE
        if data.get("inactive_days") is not None and not inactive:
            raise ValidationError("Only a contact.inactive trigger takes it.", "inactive_days")
        errors = condition_errors(data.get("conditions"), data["event_type"])
        if errors:
            raise ValidationError(errors, "conditions")


class TemplateActionSchema(StrictSchema):
    """send_template / notify_owner: a notifications template and its variables."""

    type = fields.String(required=True)
    template = fields.String(
        required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK, ONE_LINE]
    )
    variables = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)))

    @validates_schema
    def small_variables(self, data: dict[str, Any], **_: Any) -> None:
        if "variables" in data:
            try:
                _small(data["variables"])
            except ValidationError as error:
                raise ValidationError(error.messages, "variables") from None


class AddTagActionSchema(StrictSchema):
    type = fields.String(required=True)
    tags = fields.List(
        fields.String(validate=[validate.Length(min=1, max=100), NOT_BLANK]),
        required=True,
        validate=validate.Length(min=1, max=50),
    )


class CreateTaskActionSchema(StrictSchema):
    type = fields.String(required=True)
    title = fields.String(required=True, validate=[validate.Length(min=1, max=300), NOT_BLANK])
    due_in_days = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=3650)
    )


class AddToListActionSchema(StrictSchema):
    type = fields.String(required=True)
    segment_id = fields.UUID(required=True)


ACTION_SCHEMAS = {
    "send_template": TemplateActionSchema(),
    "notify_owner": TemplateActionSchema(),
    "add_tag": AddTagActionSchema(),
    "create_task": CreateTaskActionSchema(),
    "add_to_list": AddToListActionSchema(),
}


class ActionField(fields.Field):
    """One action, checked by the schema of its `type`."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError("An action is an object with a type.")
        schema = ACTION_SCHEMAS.get(value.get("type"))  # type: ignore[arg-type]
        if schema is None:
            types = ", ".join(automations.ACTION_TYPES)
            raise ValidationError({"type": [f"Unknown action; one of: {types}."]})
        return schema.load(value)


class RulePatchSchema(StrictSchema):
    """The fields a rule has; a PATCH gives any of them (`action` or `actions`)."""

    name = fields.String(validate=[validate.Length(min=1, max=200), NOT_BLANK])
    description = fields.String(allow_none=True, validate=validate.Length(max=1000))
    trigger = fields.Nested(TriggerSchema)
    actions = fields.List(
        ActionField(), validate=validate.Length(min=1, max=automations.MAX_ACTIONS)
    )
    action = ActionField()
    delay_seconds = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_DELAY))
    enabled = JsonBoolean()

    @validates_schema
    def one_way_to_give_actions(self, data: dict[str, Any], **_: Any) -> None:
        if "action" in data and "actions" in data:
            raise ValidationError("Give `action` or `actions`, not both.", "action")

    @post_load
    def action_as_actions(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "action" in data:
            data["actions"] = [data.pop("action")]
        return data


rule_patch_in = RulePatchSchema()


class RuleInSchema(RulePatchSchema):
    """A new rule: a name, a trigger and its actions; disabled unless `enabled`."""

    id = fields.UUID(load_default=None)
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])
    trigger = fields.Nested(TriggerSchema, required=True)

    @validates_schema
    def has_actions(self, data: dict[str, Any], **_: Any) -> None:
        if "action" not in data and "actions" not in data:
            raise ValidationError("A rule needs an action (or a list of actions).", "actions")


rule_in_in = RuleInSchema()


class RuleListArgsSchema(StrictSchema):
    enabled = fields.Boolean()
    event_type = fields.String(validate=validate.OneOf(automations.TRIGGER_TYPES))
    q = fields.String(validate=validate.Length(max=200))
    sort = fields.String()
    limit = fields.String()
    cursor = fields.String()


rule_list_query = RuleListArgsSchema()


class RunListArgsSchema(StrictSchema):
    status = fields.String(validate=validate.OneOf(automations.RUN_STATUSES))
    limit = fields.String()
    cursor = fields.String()


run_list_query = RunListArgsSchema()


# --- HTTP -------------------------------------------------------------------------------


def writer() -> None:
    """Marketing and admins change automations; else 403."""
    require_role("marketing")


@automations_api.get(BASE)
def list_rules() -> Any:
    """Rules, newest first (or ?sort=), filtered by ?enabled=, ?event_type=, ?q=, paged."""
    args = parse_args(rule_list_query)
    limit, cursor = list_params()
    sort = parse_sort(args.get("sort"), RULE_SORTS, "-created_at")
    statement = select(AutomationRule)
    if "enabled" in args:
        statement = statement.where(AutomationRule.enabled.is_(args["enabled"]))
    if "event_type" in args:
        statement = statement.where(AutomationRule.event_type == args["event_type"])
    statement = statement.where(
        words_condition(args.get("q"), AutomationRule.name, AutomationRule.description)
    )
    with current_db().session() as session:
        rows, next_cursor = paginate(
            session, statement, sort, AutomationRule.id, limit=limit, cursor=cursor
        )
        return page_answer([automations.rule_view(row) for row in rows], next_cursor)


@automations_api.post(BASE)
def create() -> Any:
    """Create a rule (201, Location, ETag)."""
    writer()
    data = load_body(rule_in_in)
    with current_db().session() as session:
        body = automations.rule_view(automations.create_rule(session, data))
    return created_with_etag(body, f"/api/v1{BASE}/{body['id']}")


@automations_api.get(f"{BASE}/<uuid:rule_id>")
def get(rule_id: Any) -> Any:
    """One rule, its version as ETag."""
    with current_db().session() as session:
        return with_etag(automations.rule_view(automations.get_rule(session, rule_id)))


@automations_api.patch(f"{BASE}/<uuid:rule_id>")
def update(rule_id: Any) -> Any:
    """Change a rule (If-Match honoured)."""
    writer()
    changes, version = load_body(rule_patch_in), expected_version()
    with current_db().session() as session:
        rule = automations.get_rule(session, rule_id, for_update=True)
        automations.update_rule(session, rule, changes, expected_version=version)
        return with_etag(automations.rule_view(rule))


@automations_api.delete(f"{BASE}/<uuid:rule_id>")
def delete(rule_id: Any) -> Any:
    """Delete a rule and its run log (204, If-Match honoured)."""
    writer()
    version = expected_version()
    with current_db().session() as session:
        rule = automations.get_rule(session, rule_id, for_update=True)
        automations.delete_rule(session, rule, expected_version=version)
    return no_content()


@automations_api.get(f"{BASE}/<uuid:rule_id>/runs")
def runs(rule_id: Any) -> Any:
    """The rule's runs, newest first: {id, trigger_key, contact_id, status, reason, ...}."""
    args = parse_args(run_list_query)
    limit, cursor = list_params()
    statement = select(AutomationRun).where(AutomationRun.rule_id == str(rule_id))
    if "status" in args:
        statement = statement.where(AutomationRun.status == args["status"])
    with current_db().session() as session:
        automations.get_rule(session, rule_id)
        rows, next_cursor = paginate(
            session, statement, RUN_SORT, AutomationRun.id, limit=limit, cursor=cursor
        )
        return page_answer([automations.run_view(row) for row in rows], next_cursor)
