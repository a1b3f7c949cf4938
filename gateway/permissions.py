"""Who may do what: one table of route × method × role, enforced at the gateway.

Every `/api/v1` route is listed by its prefix with the roles that may read it (GET, HEAD,
OPTIONS, and the POSTs that only read: `/search`, `/batch/read`) and the roles that may
change it. `admin` may do everything. The services check the same rules on the token they
are forwarded (so a caller going around the gateway gets nothing more); this table is the
one place to read them, and the gateway refuses before any service is asked.

Some acts outrank their prefix's rule: an action on one record (`/contacts/{id}/merge`)
in ACTION_RULES, and a query flag that turns a request into another act
(`DELETE /contacts/{id}?erase=true`) in FLAG_RULES.

A path under no prefix here (logins, the public links, health) is left to its own route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, g, request
from werkzeug.datastructures import MultiDict

from shared.auth import READ_METHODS, READ_ONLY_POST_SUFFIXES, ROLES, forbidden

EVERYONE = frozenset(ROLES)
WRITERS = EVERYONE - {"viewer"}
ADMIN = frozenset({"admin"})


def _roles(*names: str) -> frozenset[str]:
    return frozenset({"admin", *names})


@dataclass(frozen=True)
class Rule:
    """The roles that may read and the roles that may change what lies under a prefix."""

    read: frozenset[str]
    write: frozenset[str]


SALES = Rule(EVERYONE, _roles("sales"))
SUPPORT = Rule(EVERYONE, _roles("support"))
MARKETING = Rule(EVERYONE, _roles("marketing"))
READ_ONLY = Rule(EVERYONE, frozenset())
ADMIN_ONLY = Rule(ADMIN, ADMIN)
# Everyone reads; only an admin changes (how the whole team's pipeline is shaped).
ADMIN_WRITES = Rule(EVERYONE, ADMIN)
# Acts on a person's data as a whole (the subject access export): admins only for now; a
# privacy officer's role, when there is one, joins here and in the services' checks.
PRIVACY = ADMIN_ONLY

RULES: dict[str, Rule] = {
    # The gateway's own.
    "/api/v1/users": ADMIN_ONLY,
    "/api/v1/api-keys": ADMIN_ONLY,
    "/api/v1/me": READ_ONLY,
    "/api/v1/customers": READ_ONLY,
    "/api/v1/dashboard": READ_ONLY,
    # contacts: every role that writes keeps the customer record up to date.
    "/api/v1/contacts": Rule(EVERYONE, WRITERS),
    "/api/v1/companies": Rule(EVERYONE, WRITERS),
    "/api/v1/custom-fields": Rule(EVERYONE, WRITERS),
    "/api/v1/tags": Rule(EVERYONE, WRITERS),
    # sales
    "/api/v1/leads": SALES,
    "/api/v1/lead-scoring-rules": SALES,
    # Stages and pipelines frame every rep's deals (moving them, the reports' figures).
    "/api/v1/pipelines": ADMIN_WRITES,
    "/api/v1/deals": SALES,
    "/api/v1/tasks": SALES,
    "/api/v1/reports": READ_ONLY,  # every service's reports
    # support
    "/api/v1/tickets": SUPPORT,
    "/api/v1/sla-policies": SUPPORT,
    # notifications
    "/api/v1/templates": Rule(EVERYONE, _roles("marketing", "support")),
    "/api/v1/messages": Rule(EVERYONE, _roles("sales", "support", "marketing")),
    # Reminders come from tasks; cancelling one is for its owner (the service checks whose).
    "/api/v1/reminders": Rule(EVERYONE, WRITERS),
    "/api/v1/webhooks": ADMIN_ONLY,  # they hold signing secrets
    # marketing
    "/api/v1/segments": MARKETING,
    "/api/v1/subscriptions": MARKETING,
    "/api/v1/subscription-lists": MARKETING,
    "/api/v1/suppressions": MARKETING,
    "/api/v1/campaigns": MARKETING,
    "/api/v1/automations": MARKETING,
    # Each service's export of one person, which the gateway's export composes.
    "/api/v1/subject-exports": PRIVACY,
}
# One action on one record outranks its prefix's rule: (prefix, the path's last segment).
ACTION_RULES: dict[tuple[str, str], Rule] = {
    ("/api/v1/customers", "export"): PRIVACY,  # /customers/{id}/export
    # Folds one person's record into another's: irreversible, across every service.
    ("/api/v1/contacts", "merge"): PRIVACY,  # /contacts/{id}/merge
}
# A query flag that makes a request another act outranks the path's rule while it is set:
# (prefix, flag). Set means given with any value but "false", in any case, even once among
# several: the gateway never reads a flag more leniently than the service behind it.
FLAG_RULES: dict[tuple[str, str], Rule] = {
    ("/api/v1/contacts", "erase"): PRIVACY,  # DELETE /contacts/{id}?erase=true, everywhere
}
NO_QUERY: MultiDict[str, str] = MultiDict()


def _flag_set(query: MultiDict[str, str], flag: str) -> bool:
    return any(value.strip().lower() != "false" for value in query.getlist(flag))


def rule_for(path: str, query: MultiDict[str, str] = NO_QUERY) -> Rule | None:
    """The rule of a query flag set on `path`, else of the action it names, else of the
    longest prefix it lies under (a whole segment), or None."""
    for (prefix, flag), rule in FLAG_RULES.items():
        if path.startswith(prefix + "/") and _flag_set(query, flag):
            return rule
    record, _, action = path.rstrip("/").rpartition("/")
    for (prefix, last), rule in ACTION_RULES.items():
        if action == last and record.startswith(prefix + "/"):
            return rule
    best = None
    for prefix, rule in RULES.items():
        if path == prefix or path.startswith(prefix + "/"):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rule)
    return best[1] if best else None


def is_read(method: str, path: str) -> bool:
    """Whether a request only reads (GET and friends, and the POSTs that search)."""
    if method in READ_METHODS:
        return True
    return method == "POST" and path.rstrip("/").endswith(READ_ONLY_POST_SUFFIXES)


def allowed(role: str, method: str, path: str, query: Mapping[str, str] | None = None) -> bool:
    """Whether `role` may send `method` to `path` with `query` (True where no rule speaks)."""
    rule = rule_for(path, MultiDict(query) if query is not None else NO_QUERY)
    if rule is None or role == "admin":
        return True
    return role in (rule.read if is_read(method, path) else rule.write)


def enforce_roles(app: Flask, public_prefixes: tuple[str, ...]) -> None:
    """Refuse (403) what the caller's role may not do, before anything is forwarded.

    Registered after authentication, which has put the caller in `g.principal`.
    """

    def check() -> None:
        path = request.path
        if not path.startswith("/api/") or path.startswith(public_prefixes):
            return
        principal = g.get("principal")
        if principal is None or allowed(principal.role, request.method, path, request.args):
            return
        doing = "read" if is_read(request.method, path) else "change"
        raise forbidden(f"The role {principal.role!r} may not {doing} {path}")

    app.before_request(check)
