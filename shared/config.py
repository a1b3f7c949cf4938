"""Settings from environment variables (12-factor), with defaults that run on one machine."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# The default CRM_ENV; any other value is production (startup_problem is strict there).
DEVELOPMENT = "development"
# Shorter secrets are guessable offline from one captured token.
MIN_SECRET_BYTES = 32
# Passwords and secrets published in docs, templates and tutorials: never accepted outside
# development (compared lower-cased; a secret is refused when it contains a marker).
KNOWN_DEFAULT_PASSWORDS = frozenset(
    "admin password changeme change-me secret 123456 12345678 root letmein crm default"
    " admin123 password123 qwerty test".split()
)
PLACEHOLDER_MARKERS = ("replace-me", "change-me", "changeme", "dev-only")


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name)
    return value if value not in (None, "") else default


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    return int(_env(environ, name, str(default)))


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    return float(_env(environ, name, str(default)))


_OFF = ("off", "false", "0", "no")


def _list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in environ.get(name, "").split(",") if part.strip())


def _delays(environ: Mapping[str, str], name: str, default: str) -> tuple[float, ...]:
    return tuple(float(part) for part in _env(environ, name, default).split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything a service process needs to know about its surroundings."""

    service: str
    data_dir: Path
    database_url: str
    amqp_url: str
    # A prefix on every exchange and queue name: isolates test runs on a shared broker.
    amqp_prefix: str = ""
    # "development" (the default) or anything else, which is production: no default secrets.
    env: str = DEVELOPMENT
    # The one secret every signing key derives from (shared.keys); none in the code: `crm
    # run` makes one under CRM_DATA_DIR, production gets it from its secret manager.
    jwt_secret: str = ""
    # Access tokens are short-lived (the web app refreshes): at most 15 minutes by default.
    jwt_ttl_seconds: int = 900
    # How long a refresh token lives unused (each refresh hands out a new one).
    refresh_ttl_seconds: int = 30 * 24 * 3600
    max_body_bytes: int = 32 * 1024 * 1024
    log_level: str = "INFO"
    consumer_prefetch: int = 200
    # Delays (seconds) between attempts of a failing handler; after the last, the DLQ.
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    delivery_limit: int = 20
    relay_batch_size: int = 1000
    relay_idle_seconds: float = 0.2
    outbox_retention_hours: float = 24.0
    http_timeout_seconds: float = 5.0
    # The gateway's composed views (customer, dashboard): each service call's timeout.
    view_timeout_seconds: float = 2.0
    # The gateway's circuit breakers: this many failures in a row open one for that long.
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    service_urls: dict[str, str] = field(default_factory=dict)
    admin_email: str = "admin@example.com"
    # Empty: `crm run` makes one (kept under CRM_DATA_DIR); production must set it.
    admin_password: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.env == DEVELOPMENT

    @property
    def exchange(self) -> str:
        return f"{self.amqp_prefix}crm.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.amqp_prefix}crm.dlx"

    @property
    def queue(self) -> str:
        return f"{self.amqp_prefix}{self.service}.events"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


SERVICE_PORTS = {
    "gateway": 8000,
    "contacts": 8001,
    "sales": 8002,
    "support": 8003,
    "marketing": 8004,
    "notifications": 8005,
}


def _default_internal_bind(environ: Mapping[str, str]) -> str:
    return f"127.0.0.1:{_int(environ, 'CRM_GATEWAY_PORT', SERVICE_PORTS['gateway']) + 100}"


def load_settings(service: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings of one service from the environment."""
    env = os.environ if environ is None else environ
    data_dir = Path(_env(env, "CRM_DATA_DIR", "var")).resolve()
    default_db = f"sqlite:///{data_dir / (service + '.db')}"
    service_urls = {
        name: _env(env, f"CRM_{name.upper()}_URL", f"http://127.0.0.1:{port}")
        for name, port in SERVICE_PORTS.items()
    }
    return Settings(
        service=service,
        data_dir=data_dir,
        database_url=_env(env, f"{service.upper()}_DATABASE_URL", default_db),
        # A service's own broker user (only its routing keys: shared.producers) wins.
        amqp_url=_env(
            env,
            f"{service.upper()}_AMQP_URL",
            _env(env, "CRM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        ),
        amqp_prefix=_env(env, "CRM_AMQP_PREFIX", ""),
        env=_env(env, "CRM_ENV", DEVELOPMENT).strip().lower(),
        jwt_secret=_env(env, "CRM_JWT_SECRET", ""),
        jwt_ttl_seconds=_int(env, "CRM_JWT_TTL_SECONDS", 900),
        refresh_ttl_seconds=_int(env, "CRM_REFRESH_TTL_SECONDS", 30 * 24 * 3600),
        max_body_bytes=_int(env, "CRM_MAX_BODY_BYTES", 32 * 1024 * 1024),
        log_level=_env(env, "CRM_LOG_LEVEL", "INFO"),
        consumer_prefetch=_int(env, "CRM_CONSUMER_PREFETCH", 200),
        retry_delays=_delays(env, "CRM_RETRY_DELAYS", "1,5,30,120"),
        delivery_limit=_int(env, "CRM_DELIVERY_LIMIT", 20),
        relay_batch_size=_int(env, "CRM_RELAY_BATCH_SIZE", 1000),
        relay_idle_seconds=_float(env, "CRM_RELAY_IDLE_SECONDS", 0.2),
        outbox_retention_hours=_float(env, "CRM_OUTBOX_RETENTION_HOURS", 24.0),
        http_timeout_seconds=_float(env, "CRM_HTTP_TIMEOUT_SECONDS", 5.0),
        view_timeout_seconds=_float(env, "CRM_VIEW_TIMEOUT_SECONDS", 2.0),
        breaker_failures=_int(env, "CRM_BREAKER_FAILURES", 5),
        breaker_open_seconds=_float(env, "CRM_BREAKER_OPEN_SECONDS", 30.0),
        service_urls=service_urls,
        admin_email=_env(env, "CRM_ADMIN_EMAIL", "admin@example.com"),
        admin_password=_env(env, "CRM_ADMIN_PASSWORD", ""),
        extra={
            "form_rate_limit": _int(env, "CRM_FORM_RATE_LIMIT", 10),
            "form_rate_window_seconds": _int(env, "CRM_FORM_RATE_WINDOW_SECONDS", 60),
            "sla_sweep_seconds": _float(env, "CRM_SLA_SWEEP_SECONDS", 15.0),
            # Outgoing mail: smtp://user:pass@host:587 (STARTTLS), smtps://... (TLS) or
            # empty for the local SMTP catcher `crm run` starts (mail kept as .eml files).
            "smtp_url": _env(env, "CRM_SMTP_URL", ""),
            "smtp_catcher_port": _int(env, "CRM_SMTP_CATCHER_PORT", 8025),
            "mail_from": _env(env, "CRM_MAIL_FROM", "CRM <crm@localhost>"),
            # Where customers reach the public paths (tracking, CSAT, unsubscribe).
            "public_url": _env(env, "CRM_PUBLIC_URL", "http://127.0.0.1:8000"),
            # How long a mail's tracked links still redirect after it was queued.
            "tracking_link_ttl_days": _int(env, "CRM_TRACKING_LINK_TTL_DAYS", 365),
            "notifications_tick_seconds": _float(env, "CRM_NOTIFICATIONS_TICK_SECONDS", 1.0),
            # The gateway's rate limits: requests per window, per caller or per client
            # address (0 lifts one limit; CRM_RATE_LIMITS=off all of them, for benchmarks).
            "rate_limits": _env(env, "CRM_RATE_LIMITS", "on").lower() not in _OFF,
            "rate_limit_window_seconds": _int(env, "CRM_RATE_LIMIT_WINDOW_SECONDS", 60),
            "rate_limit_api": _int(env, "CRM_RATE_LIMIT_API", 1200),
            "rate_limit_auth": _int(env, "CRM_RATE_LIMIT_AUTH", 60),
            "rate_limit_forms": _int(env, "CRM_RATE_LIMIT_FORMS", 30),
            "rate_limit_links": _int(env, "CRM_RATE_LIMIT_LINKS", 60),
            "rate_limit_tracking": _int(env, "CRM_RATE_LIMIT_TRACKING", 600),
            # Proxies in front of the gateway whose X-Forwarded-For/-Proto count (0: none).
            "trusted_proxies": _int(env, "CRM_TRUSTED_PROXIES", 0),
            # Browser origins allowed to call the API (comma-separated); empty: no CORS.
            "cors_origins": _list(env, "CRM_CORS_ORIGINS"),
            # Networks webhooks may be sent into besides public addresses (comma-separated
            # CIDRs: an integration server at 10.20.0.0/16, or 127.0.0.0/8 for development).
            "webhook_allowed_networks": _list(env, "CRM_WEBHOOK_ALLOWED_NETWORKS"),
            # The gateway's second listener: /ready and /metrics answer only there (probes,
            # Prometheus), never on its public port. Default: the gateway's port + 100.
            "internal_bind": _env(env, "CRM_INTERNAL_BIND", _default_internal_bind(env)),
            # /ready fails while RabbitMQ is unreachable too (off: the api keeps taking
            # writes into its outbox during a broker outage, and only reports it).
            "ready_requires_broker": _env(env, "CRM_READY_REQUIRES_BROKER", "off").lower()
            not in _OFF,
        },
    )


def startup_problem(settings: Settings, *, makes_admin: bool = False) -> str | None:
    """Why a process may not start on these settings (one line), or None.

    Everywhere: no secret at all (every key would derive from the empty string). Outside
    development also a short or placeholder secret, and a known default admin password;
    `makes_admin`: the process creating the first admin needs the password set.
    """
    secret = settings.jwt_secret
    if not secret:
        return "CRM_JWT_SECRET is not set (`crm run` makes one; production sets 32+ random bytes)"
    if settings.is_development:
        return None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"CRM_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes; use a random one"
    if any(marker in secret.lower() for marker in PLACEHOLDER_MARKERS):
        return "CRM_JWT_SECRET is a published placeholder; use a random one"
    password = settings.admin_password
    if password and (
        password.strip().lower() in KNOWN_DEFAULT_PASSWORDS
        or any(marker in password.lower() for marker in PLACEHOLDER_MARKERS)
    ):
        return "CRM_ADMIN_PASSWORD is a known default password; choose another"
    if makes_admin and not password:
        return "CRM_ADMIN_PASSWORD is not set; the first admin needs a password"
    return None


def service_settings(service: str, overrides: Mapping[str, Any] | None = None) -> Settings:
    """A service's settings from the environment, with the fields of `overrides` (tests)."""
    settings = load_settings(service)
    known = {k: v for k, v in (overrides or {}).items() if hasattr(settings, k)}
    return settings.with_overrides(**known)
