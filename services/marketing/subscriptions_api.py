"""The subscriptions HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

subscriptions_api = Blueprint("subscriptions", __name__, url_prefix="/api/v1")
