"""The messages HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

messages_api = Blueprint("messages", __name__, url_prefix="/api/v1")
