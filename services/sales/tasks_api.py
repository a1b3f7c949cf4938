"""The tasks HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

tasks_api = Blueprint("tasks", __name__, url_prefix="/api/v1")
