"""Who may publish each event type: the trust boundary of the event bus.

One table, event type -> the `source`s allowed to publish it, taken from what each
service records in its outbox (`record_event`/`outbox_row` calls; a test keeps the two in
step). The consumer (`shared.bus`) dead-letters an event whose source may not publish its
type, before any handler sees it: a forged `contact.erased` or `email.requested` changes
nothing. The broker enforces the same table on routing keys (`broker_write_pattern`, the
RabbitMQ topic permission of each service's user), so a service cannot even send another
service's types; the source check covers a permitted publisher that lies about its name.

`integration` is the source of outside systems publishing as broker users of their own:
only the few types below, validated like any other input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from shared.events import Envelope

INTEGRATION = "integration"

# Per service, every event type it records in its outbox.
PUBLISHES: Mapping[str, frozenset[str]] = {
    "gateway": frozenset({"user.created", "user.updated", "user.deleted"}),
    "contacts": frozenset(
        {
            "company.created",
            "company.updated",
            "company.deleted",
            "contact.created",
            "contact.updated",
            "contact.deleted",
            "contact.merged",
            "contact.erased",
            "custom_field.created",
            "custom_field.updated",
            "custom_field.deleted",
            "interaction.logged",
            "note.created",
            "note.updated",
            "note.deleted",
        }
    ),
    "sales": frozenset(
        {
            "deal.created",
            "deal.updated",
            "deal.stage_changed",
            "deal.won",
            "deal.lost",
            "deal.reopened",
            "deal.deleted",
            "lead.created",
            "lead.updated",
            "lead.status_changed",
            "lead.qualified",
            "lead.converted",
            "lead.deleted",
            "pipeline.created",
            "pipeline.updated",
            "pipeline.deleted",
            "task.created",
            "task.updated",
            "task.completed",
            "task.reopened",
            "task.deleted",
        }
    ),
    "support": frozenset(
        {
            "sla_policy.created",
            "sla_policy.updated",
            "sla_policy.deleted",
            "ticket.created",
            "ticket.updated",
            "ticket.assigned",
            "ticket.status_changed",
            "ticket.commented",
            "ticket.resolved",
            "ticket.reopened",
            "ticket.deleted",
            "ticket.sla_warning",
            "ticket.sla_breached",
            "ticket.csat_recorded",
        }
    ),
    "marketing": frozenset(
        {
            "campaign.launched",
            "campaign.sent",
            "contact.tag_requested",
            "email.requested",
            "subscription.changed",
            "task.requested",
        }
    ),
    "notifications": frozenset(
        {
            "email.sent",
            "email.failed",
            "email.bounced",
            "email.opened",
            "email.clicked",
            "task.reminder_due",
            "webhook.disabled",
        }
    ),
    # Web forms of other tools (lead scoring) and outside bounce processors (suppression).
    INTEGRATION: frozenset({"form.submitted", "email.bounced"}),
}


def _by_type(publishes: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for source, event_types in publishes.items():
        for event_type in event_types:
            table.setdefault(event_type, set()).add(source)
    return {event_type: frozenset(sources) for event_type, sources in table.items()}


# Event type -> the sources allowed to publish it. A type not here has no producer.
PRODUCERS: Mapping[str, frozenset[str]] = _by_type(PUBLISHES)


def allowed_producers(event_type: str) -> frozenset[str]:
    """The sources that may publish this event type (empty: nobody)."""
    return PRODUCERS.get(event_type, frozenset())


def source_refusal(envelope: Envelope, routing_key: str | None = None) -> str | None:
    """Why this envelope may not be trusted; None when its source may publish its type.

    `routing_key` is the key it was published under to the events exchange (the one the
    broker authorised for the publisher): it must be the envelope's type, or a user allowed
    one harmless key could carry any type past the broker's check.
    """
    if routing_key is not None and routing_key != envelope.type:
        return f"a {envelope.type} event published under the routing key {routing_key!r}"
    allowed = allowed_producers(envelope.type)
    if envelope.source in allowed:
        return None
    expected = ", ".join(sorted(allowed)) or "nobody"
    return f"source {envelope.source!r} may not publish {envelope.type} (only {expected})"


def broker_write_pattern(source: str) -> str:
    """The RabbitMQ topic-permission write regex: exactly the routing keys of `source`."""
    keys = sorted(PUBLISHES.get(source, ()))
    if not keys:
        return "^$"  # publishes nothing (an empty alternation would match every key)
    return "^(" + "|".join(re.escape(key) for key in keys) + ")$"
