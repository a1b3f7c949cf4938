"""The leads HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

leads_api = Blueprint("leads", __name__, url_prefix="/api/v1")
