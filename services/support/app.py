"""The support service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask

from services.support.models import Base
from shared.auth import protect
from shared.config import Settings, service_settings
from shared.db import Database
from shared.idempotency import init_idempotency
from shared.openapi import init_openapi
from shared.web import init_app

SERVICE = "support"
# The signed CSAT link a customer follows from the email: no token, the signature instead.
PUBLIC_PREFIXES = ("/api/v1/csat/",)


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    return service_settings(SERVICE, test_config)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the support API: settings, database, shared conventions, blueprints."""
    from services.support.csat_api import csat_api
    from services.support.policies_api import policies_api
    from services.support.reports_api import reports_api
    from services.support.subject_export import subject_export_api
    from services.support.tickets_api import tickets_api

    settings = make_settings(test_config)
    db = make_database(settings)
    if (test_config or {}).get("create_tables"):
        db.create_all()
    app = Flask(__name__)
    init_app(app, settings, db)
    protect(app, settings, public_prefixes=PUBLIC_PREFIXES)
    init_idempotency(app)  # after protect: answers are kept per caller
    init_openapi(app, public_prefixes=PUBLIC_PREFIXES)  # GET /openapi.json, merged by the gateway
    for blueprint in (tickets_api, policies_api, csat_api, reports_api, subject_export_api):
        app.register_blueprint(blueprint)
    return app
