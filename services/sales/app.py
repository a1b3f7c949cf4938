"""The sales service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask

from services.sales.models import Base, Deal, Lead, Task
from shared.auth import protect
from shared.config import Settings, service_settings
from shared.db import Database
from shared.idempotency import init_idempotency
from shared.openapi import init_openapi
from shared.owner_scope import scope_to_owner
from shared.web import init_app

SERVICE = "sales"
# The web-form endpoint takes leads from anyone: no token, its own limits instead.
PUBLIC_PREFIXES = ("/api/v1/forms/",)
# Where a sales user without team visibility sees only their own records (reports are the
# team's figures for everyone).
OWNED_PREFIXES = ("/api/v1/leads", "/api/v1/deals", "/api/v1/tasks")


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    return service_settings(SERVICE, test_config)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the sales API: settings, database, shared conventions, blueprints."""
    from services.sales.deals_api import deals_api
    from services.sales.forms_api import forms_api, trusted_proxy
    from services.sales.leads_api import leads_api
    from services.sales.pipelines import ensure_default_pipeline
    from services.sales.pipelines_api import pipelines_api
    from services.sales.reports_api import reports_api
    from services.sales.scoring_api import scoring_api
    from services.sales.subject_export import subject_export_api
    from services.sales.tasks_api import tasks_api

    settings = make_settings(test_config)
    db = make_database(settings)
    if (test_config or {}).get("create_tables"):
        db.create_all()
        with db.session() as session:
            ensure_default_pipeline(session)
    app = Flask(__name__)
    trusted_proxy(app)
    init_app(app, settings, db)
    protect(app, settings, public_prefixes=PUBLIC_PREFIXES)
    init_idempotency(app)  # after protect: answers are kept per caller
    init_openapi(app, public_prefixes=PUBLIC_PREFIXES)  # GET /openapi.json, merged by the gateway
    scope_to_owner(app, db, (Lead, Deal, Task), OWNED_PREFIXES)
    for blueprint in (
        leads_api,
        scoring_api,
        forms_api,
        pipelines_api,
        deals_api,
        tasks_api,
        reports_api,
        subject_export_api,
    ):
        app.register_blueprint(blueprint)
    return app
