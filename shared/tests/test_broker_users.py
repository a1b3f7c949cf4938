"""Each service's broker user: its permissions and how Compose makes it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared import broker_users
from shared.broker_users import broker_permissions, create_service_users


def test_a_services_user_may_touch_only_its_own_queues_and_the_two_exchanges() -> None:
    allowed = broker_permissions("sales", prefix="run-1.")
    configure = re.compile(allowed.configure)
    for name in ("run-1.sales.events", "run-1.sales.events.dlq", "run-1.sales.events.retry.200ms"):
        assert configure.match(name) and re.match(allowed.read, name), name
    for name in ("run-1.crm.events", "run-1.crm.dlx"):
        assert configure.match(name) and re.match(allowed.write, name), name
    for name in ("run-1.contacts.events", "sales.events", "run-1.sales.events.x", "amq.default"):
        assert not configure.match(name), name
    assert re.match(allowed.write, "amq.default")  # its retries and replays go through it
    assert allowed.exchange == "run-1.crm.events"


def test_an_integration_may_only_publish_its_routing_keys() -> None:
    allowed = broker_permissions("integration")
    assert (allowed.configure, allowed.read) == ("^$", "^$")
    assert re.match(allowed.write, "crm.events") and not re.match(allowed.write, "amq.default")
    assert re.match(allowed.topic_write, "form.submitted")
    assert not re.match(allowed.topic_write, "contact.erased")


def test_compose_makes_the_user_of_each_services_url_through_the_management_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(
        broker_users, "_put", lambda api, path, body: calls.append((api, path, body))
    )
    environ = {
        "SALES_AMQP_URL": "amqp://sales:p%40ss@rabbitmq:5672/%2F",
        "CRM_AMQP_URL": "amqp://crm:crm@rabbitmq:5672/%2F",  # the admin's: not a user to make
    }
    assert create_service_users("http://crm:crm@rabbitmq:15672", environ) == ["sales"]
    allowed = broker_permissions("sales")
    assert [path for _, path, _ in calls] == [
        "/api/users/sales",
        "/api/permissions/%2F/sales",
        "/api/topic-permissions/%2F/sales",
    ]
    assert calls[0][2] == {"password": "p@ss", "tags": ""}
    assert calls[1][2] == {
        "configure": allowed.configure,
        "write": allowed.write,
        "read": allowed.read,
    }
    assert calls[2][2] == {
        "exchange": "crm.events",
        "write": allowed.topic_write,
        "read": allowed.topic_read,
    }
