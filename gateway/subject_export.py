"""The subject access export: everything every service holds on one person, in one document.

`GET /api/v1/customers/{contact_id}/export` (admin only, here and in every service) asks
each service for its export of the person (shared/subject_export.py) and answers

    {"contact_id", "exported_at",
     "contacts": {contact, company, notes, interactions, merged_ids},
     "sales": {leads, deals, tasks}, "support": {tickets (comments, csat), csat},
     "marketing": {contact, segments, subscriptions, consent_ledger, suppressions,
                   campaigns, lifecycle_stages, automation_runs},
     "notifications": {address, messages, suppressions, webhook_deliveries, reminders},
     "unavailable": [the services that did not answer]}

as an attachment. The contacts service is asked first: it is the source of the person
(404 when it does not know them, 503 when it does not answer) and of their email, which
the others get too, as they also keep records by address. The others are asked in
parallel; a service that does not answer has a null section and is named in
`unavailable`, never silently left out. Reminders belong to tasks, so notifications is
asked for them with the task ids of the sales export once that arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from flask import Response, jsonify

from gateway.fanout import FORBIDDEN, NOT_FOUND, OK, Answer, Call, Fanout
from shared.auth import forbidden
from shared.events import utcnow
from shared.openapi import GENERIC_JSON, PROBLEM_JSON
from shared.subject_export import export_path
from shared.web import ApiError, not_found

log = logging.getLogger(__name__)

SOURCE = "contacts"
OTHERS = ("sales", "support", "marketing", "notifications")
# A whole person's records may take a service a while to read and send: far longer than
# the customer view's few latest items.
EXPORT_TIMEOUT_SECONDS = 60.0
EXPORT_RESPONSES = {
    "200": {
        "description": "The document, as an attachment; `unavailable` names missing services",
        "content": GENERIC_JSON,
    },
    "503": {
        "description": "The contacts service, the source of the person, did not answer",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
}
# Task ids per reminders call: a query string of 50 ids stays well inside a request line.
TASKS_PER_CALL = 50


def export_call(service: str, contact_id: str, email: str | None = None) -> Call:
    """The call for one service's export of the person (with their email when known)."""
    return Call(service, export_path(service, contact_id), {"email": email} if email else {})


def reminder_calls(contact_id: str, sales: Answer) -> Iterator[Call]:
    """The calls for the reminders of the person's tasks, TASKS_PER_CALL ids each."""
    tasks = sales.body.get("tasks") if sales.ok and isinstance(sales.body, dict) else None
    task_ids = [task["id"] for task in tasks or [] if isinstance(task, dict) and "id" in task]
    path = f"{export_path('notifications', contact_id)}/reminders"
    for start in range(0, len(task_ids), TASKS_PER_CALL):
        chunk = task_ids[start : start + TASKS_PER_CALL]
        yield Call("notifications", path, {"task_ids": ",".join(chunk)})


def checked_source(answer: Answer, contact_id: str) -> dict[str, Any]:
    """The contacts service's export, or the error that ends the export: 404, 403 or 503."""
    if answer.outcome == NOT_FOUND:
        raise not_found("Contact", contact_id)
    if answer.outcome == FORBIDDEN:
        raise forbidden("The caller may not export this person")
    body = answer.body
    if (
        answer.outcome != OK
        or not isinstance(body, dict)
        or not isinstance(body.get("contact"), dict)
    ):
        raise ApiError(503, "Service Unavailable", "The contacts service is unavailable")
    return body


def compose_export(fanout: Fanout, contact_id: str) -> dict[str, Any]:
    """The export document of one person (raises as `checked_source` says)."""
    source = fanout.result(fanout.submit(export_call(SOURCE, contact_id)))
    contact = checked_source(source, contact_id)["contact"]
    # A merged-away id finds the contact it lives under: the others know that one.
    person_id, email = str(contact.get("id") or contact_id), contact.get("email")
    futures = {
        service: fanout.submit(export_call(service, person_id, email), dependent=True)
        for service in OTHERS
    }
    answers = {SOURCE: source, "sales": fanout.result(futures.pop("sales"))}
    reminders: list[Future[Answer]] = [
        fanout.submit(call, dependent=True) for call in reminder_calls(person_id, answers["sales"])
    ]
    answers.update((service, fanout.result(future)) for service, future in futures.items())
    return export_document(person_id, answers, [fanout.result(future) for future in reminders])


def export_document(
    contact_id: str, answers: dict[str, Answer], reminders: list[Answer]
) -> dict[str, Any]:
    """The document from the services' answers: a section each, null for a missing one."""
    document: dict[str, Any] = {"contact_id": contact_id, "exported_at": utcnow()}
    unavailable = set()
    for service in (SOURCE, *OTHERS):
        answer = answers[service]
        if answer.ok and isinstance(answer.body, dict):
            document[service] = {k: v for k, v in answer.body.items() if k != "service"}
        else:
            # A 404 here is a service without the export route: missing, not "nothing".
            log.warning("the subject export goes without %s (%s)", service, answer.outcome)
            document[service] = None
            unavailable.add(service)
    notifications = document["notifications"]
    if notifications is not None:
        found = [a.body.get("reminders") for a in reminders if a.ok and isinstance(a.body, dict)]
        if len(found) < len(reminders) or not all(isinstance(rows, list) for rows in found):
            unavailable.add("notifications")  # its reminders, at least, are missing
            notifications["reminders"] = None
        else:
            # Without the sales export the person's tasks are unknown: sales is named.
            known = answers["sales"].ok
            notifications["reminders"] = [row for rows in found for row in rows] if known else None
    document["unavailable"] = sorted(unavailable)
    return document


def export_response(document: dict[str, Any]) -> Response:
    """The document as a JSON attachment that no cache keeps."""
    response = jsonify(document)
    name = f"subject-export-{document['contact_id']}.json"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response
