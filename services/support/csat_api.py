"""The csat HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

csat_api = Blueprint("csat", __name__, url_prefix="/api/v1")
