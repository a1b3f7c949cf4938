"""The tickets HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

tickets_api = Blueprint("tickets", __name__, url_prefix="/api/v1")
