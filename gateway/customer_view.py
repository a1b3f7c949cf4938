"""The unified customer view: one contact as every service sees it, asked in parallel.

`GET /api/v1/customers/{contact_id}` answers:

- `contact` and `company` (contacts), `timeline`: the latest interactions (contacts);
- `deals` `{open, won}`, `leads`: open leads with the contact's email, `tasks`: open
  ones, soonest due first (sales);
- `tickets`, the latest with their SLA state, and `csat` `{count, average, ratings}`
  of the latest rated ones (support, in one call: the list includes each rating);
- `subscriptions` (marketing);
- `messages`: the latest sent to the contact, and `campaign_engagement`: what the
  contact did with the campaign emails of the delivery log (notifications);
- `unavailable`: the services that did not answer in time (their sections are null) and
  `forbidden`: the sections a service refused the caller's role (left out).

Without the contact there is no view: 404 when contacts does not know it, 503 naming
contacts when it does not answer. Calls that need the contact (company, leads by email)
start as soon as it arrives; so do the ratings, one call a ticket, from a support that
does not include them in its list yet.
"""

from __future__ import annotations

from concurrent.futures import Future
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from gateway.fanout import FORBIDDEN, NOT_FOUND, OK, Answer, Call, Fanout, Sections, items
from shared.auth import forbidden
from shared.reporting import ratio
from shared.web import ApiError, not_found

TIMELINE_ENTRIES = 20
RECENT_MESSAGES = 10
CAMPAIGN_MESSAGES = 200
MAX_TICKETS = 50
# Ratings are one call per ticket: only the latest resolved or closed tickets are asked.
MAX_RATED_TICKETS = 10
OPEN_LEAD_STATUSES = "new,working,qualified"
RATED_STATUSES = ("resolved", "closed")


def first_calls(contact_id: str) -> dict[str, Call]:
    """The calls that need nothing but the contact's id."""
    by_contact = {"contact_id": contact_id}
    return {
        "contact": Call("contacts", f"/api/v1/contacts/{contact_id}"),
        "timeline": Call(
            "contacts",
            f"/api/v1/contacts/{contact_id}/interactions",
            {"limit": str(TIMELINE_ENTRIES)},
        ),
        "open_deals": Call("sales", "/api/v1/deals", {**by_contact, "status": "open"}),
        "won_deals": Call("sales", "/api/v1/deals", {**by_contact, "status": "won"}),
        "tasks": Call("sales", "/api/v1/tasks", {**by_contact, "done": "false", "sort": "due_at"}),
        "tickets": Call(
            "support",
            "/api/v1/tickets",
            {**by_contact, "limit": str(MAX_TICKETS), "include": "csat"},
        ),
        "subscriptions": Call("marketing", "/api/v1/subscriptions", by_contact),
        "messages": Call(
            "notifications", "/api/v1/messages", {**by_contact, "limit": str(RECENT_MESSAGES)}
        ),
        "campaign_messages": Call(
            "notifications",
            "/api/v1/messages",
            {**by_contact, "category": "marketing", "limit": str(CAMPAIGN_MESSAGES)},
        ),
    }


def contact_calls(contact: dict[str, Any]) -> dict[str, Call]:
    """The calls that need the contact: its company, and open leads with its email."""
    calls = {}
    if contact.get("company_id"):
        calls["company"] = Call("contacts", f"/api/v1/companies/{contact['company_id']}")
    if contact.get("email"):
        params = {"email": contact["email"], "status": OPEN_LEAD_STATUSES}
        calls["leads"] = Call("sales", "/api/v1/leads", params)
    return calls


def rated_tickets(tickets_body: Any) -> list[dict[str, Any]]:
    """The tickets whose ratings count: the latest MAX_RATED_TICKETS resolved or closed."""
    done = [t for t in items(tickets_body) if t.get("status") in RATED_STATUSES]
    return done[:MAX_RATED_TICKETS]


def included_ratings(tickets_body: Any) -> list[Any] | None:
    """The ratings support put in its list (`include=csat`); None from a support that
    does not include them yet (then each is asked for, as before)."""
    listed = items(tickets_body)
    if not listed or not all(isinstance(t, dict) and "csat" in t for t in listed):
        return None
    return [t["csat"] for t in rated_tickets(tickets_body)]


def rating_calls(tickets: Answer) -> list[Call]:
    """One call per rated-looking ticket, unless support included the ratings."""
    if included_ratings(tickets.body) is not None:
        return []
    return [Call("support", f"/api/v1/tickets/{t['id']}/csat") for t in rated_tickets(tickets.body)]


def checked_contact(answer: Answer, contact_id: str) -> dict[str, Any]:
    """The contact, or the error that ends the view: 404, 403, or 503 naming contacts."""
    if answer.outcome == NOT_FOUND:
        raise not_found("Contact", contact_id)
    if answer.outcome == FORBIDDEN:
        raise forbidden("The caller's role may not read this contact")
    if answer.outcome != OK or not isinstance(answer.body, dict):
        raise ApiError(503, "Service Unavailable", "The contacts service is unavailable")
    return answer.body


def compose_customer(fanout: Fanout, contact_id: str) -> dict[str, Any]:
    """The customer view of `contact_id` (raises 404/403/503 as `checked_contact` says)."""
    futures = {name: fanout.submit(call) for name, call in first_calls(contact_id).items()}
    contact = checked_contact(fanout.result(futures.pop("contact")), contact_id)
    for name, call in contact_calls(contact).items():
        futures[name] = fanout.submit(call, dependent=True)
    tickets = fanout.result(futures["tickets"])
    ratings: list[Future[Answer]] = [
        fanout.submit(call, dependent=True) for call in rating_calls(tickets)
    ]
    answers = {name: fanout.result(future) for name, future in futures.items()}
    rated = [fanout.result(future) for future in ratings]
    return customer_body(contact, answers, rated)


def customer_body(
    contact: dict[str, Any], answers: dict[str, Answer], ratings: list[Answer]
) -> dict[str, Any]:
    """The view's body from the answers (see the module docstring for the sections)."""
    sections = Sections()
    sections.body["contact"] = contact
    if "company" in answers:
        sections.add("company", [answers["company"]], lambda company: company)
    else:
        sections.body["company"] = None
    sections.add(
        "deals",
        [answers["open_deals"], answers["won_deals"]],
        lambda open_, won: {"open": items(open_), "won": items(won)},
    )
    if "leads" in answers:
        sections.add("leads", [answers["leads"]], items)
    else:
        sections.body["leads"] = []
    for name in ("tasks", "tickets"):
        sections.add(name, [answers[name]], items)
    sections.add("csat", [answers["tickets"], *ratings], csat_section)
    sections.add("subscriptions", [answers["subscriptions"]], items)
    sections.add("campaign_engagement", [answers["campaign_messages"]], campaign_engagement)
    sections.add("messages", [answers["messages"]], items)
    sections.add("timeline", [answers["timeline"]], items)
    return sections.finish()


def csat_section(tickets_body: Any, *asked: Any) -> dict[str, Any]:
    """The CSAT section from the ratings in the ticket list, or from those asked one by one."""
    included = included_ratings(tickets_body)
    return csat(tuple(included) if included is not None else asked)


def csat(ratings: tuple[Any, ...]) -> dict[str, Any]:
    """The ratings found (a ticket not rated yet answers 404: None here), and their mean."""
    found = [rating for rating in ratings if isinstance(rating, dict) and "rating" in rating]
    average = None
    if found:
        mean = Decimal(sum(int(r["rating"]) for r in found)) / len(found)
        average = str(mean.quantize(Decimal("0.01"), ROUND_HALF_UP))
    return {"count": len(found), "average": average, "ratings": found}


def campaign_engagement(body: Any) -> dict[str, Any]:
    """What the contact did with the campaign emails sent to them (from the delivery log)."""
    emails = [m for m in items(body) if m.get("campaign_id")]
    delivered = [m for m in emails if m.get("status") == "sent"]
    opened = [m for m in emails if m.get("opened_at") or (m.get("open_count") or 0) > 0]
    clicked = [m for m in emails if (m.get("click_count") or 0) > 0]
    opens = [m["opened_at"] for m in opened if m.get("opened_at")]
    return {
        "campaigns": len({m["campaign_id"] for m in emails}),
        "emails": len(emails),
        "delivered": len(delivered),
        "opened": len(opened),
        "clicked": len(clicked),
        "bounced": sum(1 for m in emails if m.get("status") == "bounced"),
        "open_rate": ratio(len(opened), len(delivered)),
        "click_rate": ratio(len(clicked), len(delivered)),
        "last_opened_at": max(opens) if opens else None,
    }
