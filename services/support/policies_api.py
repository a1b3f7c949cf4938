"""The policies HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

policies_api = Blueprint("policies", __name__, url_prefix="/api/v1")
