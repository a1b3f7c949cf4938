"""The templates HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

templates_api = Blueprint("templates", __name__, url_prefix="/api/v1")
