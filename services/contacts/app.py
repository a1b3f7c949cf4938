"""The contacts service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy.exc import IntegrityError

from services.contacts.models import Base
from shared.auth import protect
from shared.config import Settings, load_settings
from shared.db import Database
from shared.web import init_app, problem

SERVICE = "contacts"


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    settings = load_settings(SERVICE)
    overrides = {k: v for k, v in (test_config or {}).items() if hasattr(settings, k)}
    return settings.with_overrides(**overrides)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the contacts API: settings, database, shared conventions, blueprints."""
    from services.contacts.api import contacts_api
    from services.contacts.companies_api import companies_api
    from services.contacts.timeline_api import timeline_api
    from services.contacts.transfer_api import transfer_api

    settings = make_settings(test_config)
    db = make_database(settings)
    if (test_config or {}).get("create_tables"):
        db.create_all()
    app = Flask(__name__)
    init_app(app, settings, db)
    protect(app, settings)
    app.register_error_handler(IntegrityError, _integrity_conflict)
    app.register_blueprint(transfer_api)
    app.register_blueprint(contacts_api)
    app.register_blueprint(timeline_api)
    app.register_blueprint(companies_api)
    return app


def _integrity_conflict(_error: IntegrityError) -> Any:
    # Two writers raced for the same unique value; the loser gets a clean 409.
    return problem(409, "Conflict", "The change conflicts with an existing record")
