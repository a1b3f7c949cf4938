"""Each service's own broker user: the RabbitMQ permissions it needs, and no more.

The write regex of a user's topic permission on the events exchange is exactly its routing
keys (shared.producers), so the broker refuses a `contact.erased` from sales' user with
ACCESS_REFUSED. Compose makes the users with `python -m shared.broker_users` (the
management API); Kubernetes with the Messaging Topology Operator's User, Permission and
TopicPermission objects (deploy/k8s/base/rabbitmq-users.yaml); the tests with
`rabbitmqctl import_definitions` of `rabbitmq_definitions`.

Left open: a service's user may write to the default exchange (its retries and `crm dlq
replay` go through it) and to the DLX, and neither is a topic exchange, so those
credentials can still put a message straight into another service's queue. The
consumers' source check stays the last line there; closing it needs a retry exchange per
service (new queue arguments, so a queue migration).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from shared.producers import INTEGRATION, PUBLISHES, broker_write_pattern

SERVICE_SOURCES = tuple(source for source in PUBLISHES if source != INTEGRATION)


@dataclass(frozen=True)
class BrokerPermissions:
    """A broker user's RabbitMQ permissions (regexes on resource names) in its vhost, and
    its topic permissions on the events exchange (regexes on routing keys)."""

    configure: str
    write: str
    read: str
    exchange: str
    topic_write: str
    topic_read: str = ".*"  # binding its queue to any key reveals nothing it may not see


def broker_permissions(source: str, prefix: str = "") -> BrokerPermissions:
    """What `source`'s broker user needs, and no more, to run its real topology.

    A service declares both exchanges and its queues (configure), binds and consumes its
    own queues (read), publishes its routing keys to the events exchange, retries through
    the default exchange and dead-letters through the DLX (write). An integration only
    publishes its keys.
    """
    events, dlx = re.escape(f"{prefix}crm.events"), re.escape(f"{prefix}crm.dlx")
    topic_write = broker_write_pattern(source)
    if source == INTEGRATION:
        return BrokerPermissions("^$", f"^{events}$", "^$", f"{prefix}crm.events", topic_write)
    queues = re.escape(f"{prefix}{source}.events") + r"(\.dlq|\.retry\.[0-9]+ms)?"
    return BrokerPermissions(
        configure=f"^({events}|{dlx}|{queues})$",
        write=f"^({events}|{dlx}|amq\\.default|{queues})$",
        read=f"^({events}|{dlx}|{queues})$",
        exchange=f"{prefix}crm.events",
        topic_write=topic_write,
    )


def rabbitmq_definitions(
    vhost: str, users: Mapping[str, tuple[str, str]], prefix: str = ""
) -> dict[str, Any]:
    """RabbitMQ definitions (`rabbitmqctl import_definitions`) making `vhost` and, per
    source, its user {source: (name, password)} with exactly its permissions."""
    definitions: dict[str, Any] = {"vhosts": [{"name": vhost}], "users": [], "permissions": []}
    definitions["topic_permissions"] = []
    for source, (name, password) in users.items():
        allowed = broker_permissions(source, prefix)
        definitions["users"].append({"name": name, "password": password, "tags": ""})
        definitions["permissions"].append(
            {"user": name, "vhost": vhost}
            | {key: getattr(allowed, key) for key in ("configure", "write", "read")}
        )
        definitions["topic_permissions"].append(
            {"user": name, "vhost": vhost, "exchange": allowed.exchange}
            | {"write": allowed.topic_write, "read": allowed.topic_read}
        )
    return definitions


def _put(api: str, path: str, body: dict[str, Any]) -> None:
    import requests

    parts = urlsplit(api)
    base = parts._replace(netloc=f"{parts.hostname}" + (f":{parts.port}" if parts.port else ""))
    auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    answer = requests.put(f"{base.geturl().rstrip('/')}{path}", json=body, auth=auth, timeout=10)
    answer.raise_for_status()


def create_service_users(api: str, environ: Mapping[str, str]) -> list[str]:
    """Make (or update) each service's user named in its `<SERVICE>_AMQP_URL` through the
    management API at `api` (http://admin:password@host:15672); the names made."""
    made = []
    for source in SERVICE_SOURCES:
        url = urlsplit(environ.get(f"{source.upper()}_AMQP_URL", ""))
        if not url.username:
            continue
        name, vhost = unquote(url.username), unquote(url.path.lstrip("/") or "/")
        allowed = broker_permissions(source)
        where = f"{quote(vhost, safe='')}/{quote(name, safe='')}"
        _put(
            api,
            f"/api/users/{quote(name, safe='')}",
            {"password": unquote(url.password or ""), "tags": ""},
        )
        _put(
            api,
            f"/api/permissions/{where}",
            {key: getattr(allowed, key) for key in ("configure", "write", "read")},
        )
        _put(
            api,
            f"/api/topic-permissions/{where}",
            {
                "exchange": allowed.exchange,
                "write": allowed.topic_write,
                "read": allowed.topic_read,
            },
        )
        made.append(name)
    return made


def main(environ: Mapping[str, str] = os.environ, attempts: int = 30) -> None:
    """Compose's one-shot `broker-users`: make the users once the management API answers."""
    import requests

    api = environ.get("CRM_RABBITMQ_ADMIN_URL", "")
    if not api:
        sys.exit("set CRM_RABBITMQ_ADMIN_URL (http://admin:password@rabbitmq:15672)")
    for attempt in range(1, attempts + 1):
        try:
            made = create_service_users(api, environ)
            break
        except requests.ConnectionError:  # the broker is up, its management plugin not yet
            if attempt == attempts:
                raise
            time.sleep(2)
    print("broker users:", ", ".join(made) or "none")  # a one-shot's only output


if __name__ == "__main__":
    main()
