"""The notifications service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask

from services.notifications.models import Base, Reminder
from shared.auth import protect
from shared.config import Settings, service_settings
from shared.db import Database
from shared.idempotency import init_idempotency
from shared.openapi import init_openapi
from shared.owner_scope import scope_to_owner
from shared.web import init_app

SERVICE = "notifications"


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    return service_settings(SERVICE, test_config)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the notifications API. The tracking paths (/t/...) are outside /api: public."""
    from services.notifications.messages_api import messages_api
    from services.notifications.reminders_api import reminders_api
    from services.notifications.subject_export import subject_export_api
    from services.notifications.templates_api import templates_api
    from services.notifications.tracking_api import tracking_api
    from services.notifications.webhooks_api import webhooks_api

    settings = make_settings(test_config)
    db = make_database(settings)
    if (test_config or {}).get("create_tables"):
        db.create_all()
    app = Flask(__name__)
    init_app(app, settings, db)
    protect(app, settings)
    init_idempotency(app)  # after protect: answers are kept per caller
    init_openapi(app)  # GET /openapi.json, merged by the gateway
    # A task's reminder is the task's owner's, like the task (sales works only its own).
    scope_to_owner(app, db, (Reminder,), ("/api/v1/reminders",))
    for blueprint in (
        templates_api,
        messages_api,
        reminders_api,
        webhooks_api,
        tracking_api,
        subject_export_api,
    ):
        app.register_blueprint(blueprint)
    return app
