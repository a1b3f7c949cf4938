"""The unsubscribe HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

unsubscribe_api = Blueprint("unsubscribe", __name__, url_prefix="/api/v1")
