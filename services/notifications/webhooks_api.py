"""The webhooks HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

webhooks_api = Blueprint("webhooks", __name__, url_prefix="/api/v1")
