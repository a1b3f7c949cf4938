"""The campaigns HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

campaigns_api = Blueprint("campaigns", __name__, url_prefix="/api/v1")
