"""The scoring HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

scoring_api = Blueprint("scoring", __name__, url_prefix="/api/v1")
