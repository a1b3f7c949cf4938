"""The sales service's application factory: everything is built here, nothing at import."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy.exc import IntegrityError

from services.sales.models import Base
from shared.auth import protect
from shared.config import Settings, load_settings
from shared.db import Database
from shared.web import init_app, problem

SERVICE = "sales"
# The web-form endpoint takes leads from anyone: no token, its own limits instead.
PUBLIC_PREFIXES = ("/api/v1/forms/",)


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    settings = load_settings(SERVICE)
    overrides = {k: v for k, v in (test_config or {}).items() if hasattr(settings, k)}
    return settings.with_overrides(**overrides)


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
    app.register_error_handler(IntegrityError, _integrity_conflict)
    for blueprint in (
        leads_api,
        scoring_api,
        forms_api,
        pipelines_api,
        deals_api,
        tasks_api,
        reports_api,
    ):
        app.register_blueprint(blueprint)
    return app


def _integrity_conflict(_error: IntegrityError) -> Any:
    # Two writers raced for the same unique value; the loser gets a clean 409.
    return problem(409, "Conflict", "The change conflicts with an existing record")
