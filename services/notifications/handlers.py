"""Events the notifications service reacts to: each part of the service brings its own.

- `mail_handlers`: `email.requested` (send on anyone's behalf) and the contact replica
  that gives addresses and names (`contact.created|updated|merged|erased`).
- `suppressions`: consent (`subscription.changed`) and hard bounces (`email.bounced`).
- `notices`: ticket acknowledgement and CSAT request, to the customer.
- `assignments`: "assigned to you" to staff (`ticket.assigned`, deal and lead owner changes).
- `users`: the staff replica (`user.created|updated|deleted` from the gateway).
- `reminders`: task reminders, scheduled from `task.*`.
- `webhooks`: every event (ALL_EVENTS) fanned out to the matching webhooks.

A handler that needs a contact not known here yet keeps its event waiting (`waiting`); the
contact's own event then handles it again through this same table.
"""

from __future__ import annotations

from services.notifications import (
    assignments,
    mail_handlers,
    notices,
    reminders,
    suppressions,
    users,
    waiting,
    webhooks,
)
from shared.bus import Handler
from shared.config import Settings, service_settings

PARTS = (mail_handlers, suppressions, notices, assignments, users, reminders, webhooks)


def handlers(settings: Settings | None = None) -> dict[str, Handler]:
    """Every event type this service consumes, with its handler (one owner per type)."""
    settings = settings or service_settings("notifications")
    merged: dict[str, Handler] = {}
    for part in PARTS:
        for event_type, handler in part.handlers(settings).items():
            if event_type in merged:
                raise RuntimeError(f"two notifications handlers for {event_type}")
            merged[event_type] = handler
    return waiting.resuming(merged)
