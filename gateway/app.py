"""Wires the gateway: settings, database, shared conventions, auth, its API and the proxy.

Run it with `gunicorn 'gateway.app:create_app()'`; create the first admin with
`flask --app gateway.app bootstrap-admin` (or call `bootstrap_admin` from the run command).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from argon2 import PasswordHasher
from flask import Flask

from gateway.accounts import init_account_check
from gateway.api import api
from gateway.api_keys_api import api_key_principal, api_keys_api
from gateway.auth_api import auth_api
from gateway.docs_api import init_docs
from gateway.domain import bootstrap_admin
from gateway.fanout import init_fanout
from gateway.models import Base
from gateway.permissions import enforce_roles
from gateway.proxy import init_proxy
from gateway.rate_limits import init_rate_limits
from gateway.security_headers import init_security_headers
from gateway.views_api import views_api
from shared.auth import protect
from shared.config import Settings, load_settings
from shared.db import Database
from shared.idempotency import init_idempotency
from shared.keys import ACCESS_TOKEN
from shared.ops import listener_port
from shared.web import init_app

SERVICE = "gateway"
# Token-free: logging in, the web forms that capture leads (limited by sales itself), the
# signed CSAT links customers follow from their email (checked by support) and marketing's.
PUBLIC_PREFIXES = (
    "/api/v1/auth/",
    "/api/v1/forms/",
    "/api/v1/csat/",
    # One-click unsubscribe and double opt-in confirmation links (signed, checked by marketing).
    "/api/v1/unsubscribe/",
    "/api/v1/subscriptions/confirm/",
    "/api/v1/openapi.json",  # the API's description, for anyone writing a client
)
_SETTINGS_FIELDS = {field.name for field in dataclasses.fields(Settings)}
# Keys of test_config that steer create_app itself rather than Settings or Flask.
_OPTIONS = ("create_tables", "password_hasher")

__all__ = ["bootstrap_admin", "create_app", "make_database", "make_settings"]


def make_settings(test_config: dict[str, Any] | None = None) -> Settings:
    """The gateway's settings from the environment, with the Settings fields of test_config."""
    overrides = {k: v for k, v in (test_config or {}).items() if k in _SETTINGS_FIELDS}
    return load_settings(SERVICE).with_overrides(**overrides)


def make_database(settings: Settings) -> Database:
    return Database(SERVICE, settings.database_url, Base.metadata)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the gateway's Flask app; nothing is made at import time (gunicorn forks)."""
    config = dict(test_config or {})
    settings = make_settings(config)

    app = Flask(__name__, static_folder=None)
    app.config.update(
        {k: v for k, v in config.items() if k not in _SETTINGS_FIELDS and k not in _OPTIONS}
    )
    db = make_database(settings)
    if config.get("create_tables"):
        db.create_all()
    hasher = config.get("password_hasher") or PasswordHasher()
    app.extensions["gateway.hasher"] = hasher

    # It consumes no events; /ready and /metrics only on the internal listener.
    internal_port = listener_port(settings.extra["internal_bind"])
    init_app(app, settings, db, dead_letters=False, ops_port=internal_port)
    init_security_headers(app, settings)  # before protect: preflights carry no token
    # Clients' access tokens only: the services' tokens (SERVICE_CALL) open nothing here.
    protect(
        app,
        settings,
        purpose=ACCESS_TOKEN,
        public_prefixes=PUBLIC_PREFIXES,
        api_keys=api_key_principal,
    )
    init_account_check(app, db)  # right after protect: refuses tokens the account revoked
    init_rate_limits(app, db, settings)  # after protect: the API counts per caller
    enforce_roles(app, PUBLIC_PREFIXES)  # after protect: it needs the caller
    # Its own POSTs (users, API keys); a forwarded one's answer is kept by its service.
    init_idempotency(app, skip_blueprints=("proxy",))
    app.register_blueprint(api)
    app.register_blueprint(auth_api)
    app.register_blueprint(api_keys_api)
    init_proxy(app)
    init_fanout(app)  # the threads the composed views' calls run on
    app.register_blueprint(views_api)  # the customer view and the dashboard
    init_docs(app, PUBLIC_PREFIXES)  # /openapi.json, /api/v1/openapi.json and /docs
    _register_commands(app, db, settings, hasher)
    return app


def _register_commands(app: Flask, db: Database, settings: Settings, hasher: Any) -> None:
    @app.cli.command("bootstrap-admin")
    def bootstrap_admin_command() -> None:
        """Create the admin of CRM_ADMIN_EMAIL / CRM_ADMIN_PASSWORD if missing."""
        bootstrap_admin(db, settings, hasher)
