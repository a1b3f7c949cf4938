"""Security headers, CORS and trusted proxies: what the one public process adds to answers.

Every answer tells browsers not to sniff, frame or pass on a referrer, and carries a
Content-Security-Policy that allows nothing (JSON loads nothing). A view that serves a
page needing more (the API docs) sets its own Content-Security-Policy: it is kept.
Strict-Transport-Security goes only with answers over https.

CORS is an allow-list (CRM_CORS_ORIGINS, exact origins, or `*`): an allowed origin gets
the CORS headers, any other none at all. A preflight is answered here, before
authentication (it carries no credentials) and is never forwarded to a service.
flask-cors is not used: its preflight answer takes the route's status (a 401 here) and it
reads origins that contain regex characters as regexes, where an exact list is wanted.
"""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.config import Settings

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
HSTS = "max-age=31536000"
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_REQUEST_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, If-Match, X-API-Key, X-Request-ID"
)
# Answer headers a browser script may read besides the CORS-safelisted ones.
CORS_EXPOSED_HEADERS = (
    "ETag, Location, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, "
    "X-Request-ID"
)
CORS_MAX_AGE_SECONDS = 600
ANY_ORIGIN = "*"


def trust_proxies(app: Flask, count: int) -> None:
    """Behind `count` proxies, take the client address and scheme from X-Forwarded-*."""
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)  # type: ignore[method-assign]


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def is_preflight() -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


class Cors:
    """The allow-list of browser origins and the headers that grant them access."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = frozenset(normalise_origin(origin) for origin in origins)

    def allowed_origin(self, origin: str | None) -> str | None:
        """What Access-Control-Allow-Origin says to `origin`, or None if it is not allowed."""
        if not origin or not self.origins:
            return None
        if ANY_ORIGIN in self.origins:
            return ANY_ORIGIN
        return origin if normalise_origin(origin) in self.origins else None

    def add_headers(self, response: Response) -> None:
        if not self.origins:
            return
        response.vary.add("Origin")
        allowed = self.allowed_origin(request.headers.get("Origin"))
        if allowed is None:
            return
        response.headers["Access-Control-Allow-Origin"] = allowed
        if is_preflight():
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_REQUEST_HEADERS
            response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_SECONDS)
        else:
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS


def add_security_headers(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)


def init_security_headers(app: Flask, settings: Settings) -> Cors:
    """Trusted proxies, preflights, security and CORS headers; call before authentication."""
    trust_proxies(app, int(settings.extra.get("trusted_proxies", 0)))
    cors = Cors(tuple(settings.extra.get("cors_origins", ())))

    def answer_preflight() -> Response | None:
        return Response(status=204) if is_preflight() else None

    def add_headers(response: Response) -> Response:
        add_security_headers(response)
        cors.add_headers(response)
        return response

    app.before_request(answer_preflight)
    app.after_request(add_headers)
    return cors
