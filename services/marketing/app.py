"""The marketing service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask

from services.marketing.models import Base
from shared.auth import protect
from shared.config import Settings, service_settings
from shared.db import Database
from shared.idempotency import init_idempotency
from shared.openapi import init_openapi
from shared.web import init_app

SERVICE = "marketing"
# Token-free, signed links from email: one-click unsubscribe and double opt-in confirmation.
PUBLIC_PREFIXES = ("/api/v1/unsubscribe/", "/api/v1/subscriptions/confirm/")
# Blueprints by import path: each part of the service adds its own here.
BLUEPRINTS = (
    "services.marketing.segments_api:segments_api",
    "services.marketing.subscriptions_api:subscriptions_api",
    "services.marketing.unsubscribe_api:unsubscribe_api",
    "services.marketing.campaigns_api:campaigns_api",
    "services.marketing.automations_api:automations_api",
    "services.marketing.reports_api:reports_api",
    "services.marketing.subject_export:subject_export_api",
)


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    return service_settings(SERVICE, test_config)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the marketing API."""
    import importlib

    settings = make_settings(test_config)
    db = make_database(settings)
    if (test_config or {}).get("create_tables"):
        db.create_all()
    app = Flask(__name__)
    init_app(app, settings, db)
    protect(app, settings, public_prefixes=PUBLIC_PREFIXES)
    init_idempotency(app)  # after protect: answers are kept per caller
    init_openapi(app, public_prefixes=PUBLIC_PREFIXES)  # GET /openapi.json, merged by the gateway
    for path in BLUEPRINTS:
        module, _, name = path.partition(":")
        app.register_blueprint(getattr(importlib.import_module(module), name))
    return app
