"""The reminders HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

reminders_api = Blueprint("reminders", __name__, url_prefix="/api/v1")
