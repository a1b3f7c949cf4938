"""The contacts service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask

from services.contacts.models import Base
from shared.auth import protect
from shared.config import Settings, service_settings
from shared.db import Database
from shared.idempotency import init_idempotency
from shared.openapi import init_openapi
from shared.web import init_app

SERVICE = "contacts"


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    return service_settings(SERVICE, test_config)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the contacts API: settings, database, shared conventions, blueprints."""
    from services.contacts.api import contacts_api
    from services.contacts.companies_api import companies_api
    from services.contacts.subject_export import subject_export_api
    from services.contacts.timeline_api import timeline_api
    from services.contacts.transfer_api import transfer_api

    settings = make_settings(test_config)
    db = make_database(settings)
    if (test_config or {}).get("create_tables"):
        db.create_all()
    app = Flask(__name__)
    init_app(app, settings, db)
    protect(app, settings)
    init_idempotency(app)  # after protect: answers are kept per caller
    init_openapi(app)  # GET /openapi.json, merged by the gateway
    app.register_blueprint(transfer_api)
    app.register_blueprint(contacts_api)
    app.register_blueprint(timeline_api)
    app.register_blueprint(companies_api)
    app.register_blueprint(subject_export_api)
    return app
