"""The deals HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

deals_api = Blueprint("deals", __name__, url_prefix="/api/v1")
