"""The producer table: what each service records in its outbox, and who may publish what."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared.events import EVENT_TYPE_PATTERN
from shared.producers import (
    INTEGRATION,
    PRODUCERS,
    PUBLISHES,
    broker_write_pattern,
    source_refusal,
)
from shared.testing import make_event

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "contacts", "sales", "support", "marketing", "notifications")
# Types a service records under a name built at run time: deals._close's f"deal.{status}".
BUILT_AT_RUN_TIME = {"sales": {"deal.won", "deal.lost"}}
TYPE = re.compile(EVENT_TYPE_PATTERN)


def _is_recording(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return "record" in name or name.endswith("outbox_row") or name.endswith("event_row")


def _type_literals(node: ast.AST) -> set[str]:
    values = [node.value] if isinstance(node, ast.Constant) else []
    if isinstance(node, ast.IfExp):  # "task.completed" if done else "task.reopened"
        return _type_literals(node.body) | _type_literals(node.orelse)
    return {value for value in values if isinstance(value, str) and TYPE.match(value)}


def recorded_types(service: str) -> set[str]:
    """Every event type literal a service's code hands to an outbox-recording call, or
    assigns to an `event_type` it records later, or names in an `Alert` of its sweep."""
    package = ROOT / ("gateway" if service == "gateway" else f"services/{service}")
    found: set[str] = set()
    for path in package.rglob("*.py"):
        if {"tests", "migrations"} & set(path.relative_to(package).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and (_is_recording(node) or _named(node, "Alert")):
                for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                    found |= _type_literals(argument)
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "event_type"
                for target in node.targets
            ):
                found |= _type_literals(node.value)
    return found | BUILT_AT_RUN_TIME.get(service, set())


def _named(call: ast.Call, name: str) -> bool:
    return isinstance(call.func, ast.Name) and call.func.id == name


@pytest.mark.parametrize("service", SERVICES)
def test_the_table_names_exactly_what_each_service_records_in_its_outbox(service: str) -> None:
    assert recorded_types(service) == PUBLISHES[service]


def test_integrations_may_publish_only_a_few_documented_types() -> None:
    assert PUBLISHES[INTEGRATION] == {"form.submitted", "email.bounced"}


def test_no_integration_may_publish_what_erases_or_sends_mail() -> None:
    assert PRODUCERS["contact.erased"] == {"contacts"}
    assert PRODUCERS["email.requested"] == {"marketing"}


def test_a_source_may_publish_only_its_own_types() -> None:
    assert source_refusal(make_event("deal.won", {}, source="sales")) is None
    refusal = source_refusal(make_event("contact.erased", {}, source="sales"))
    assert refusal == "source 'sales' may not publish contact.erased (only contacts)"
    nobody = source_refusal(make_event("thing.invented", {}, source="sales"))
    assert nobody == "source 'sales' may not publish thing.invented (only nobody)"
    assert source_refusal(make_event("email.bounced", {}, source=INTEGRATION)) is None


@pytest.mark.parametrize("service", [*SERVICES, INTEGRATION])
def test_the_broker_write_pattern_matches_exactly_the_services_routing_keys(
    service: str,
) -> None:
    pattern = re.compile(broker_write_pattern(service))
    for event_type in PRODUCERS:
        assert bool(pattern.match(event_type)) == (event_type in PUBLISHES[service]), event_type
    assert not pattern.match("dealXwon")  # the dot is a dot, not any character
    assert not pattern.match("deal.won.extra") and not pattern.match("")


def test_a_source_that_publishes_nothing_may_write_no_routing_key() -> None:
    assert broker_write_pattern("nobody") == "^$"
    assert not re.match("^$", "deal.won")


def test_an_event_published_under_another_types_routing_key_is_refused() -> None:
    # marketing may send email.requested: that key must not carry a contact.erased
    forged = make_event("contact.erased", {}, source="contacts")
    refusal = source_refusal(forged, routing_key="email.requested")
    assert refusal == "a contact.erased event published under the routing key 'email.requested'"
    assert source_refusal(forged, routing_key="contact.erased") is None
    assert source_refusal(forged, routing_key=None) is None  # a retry, via the default exchange
