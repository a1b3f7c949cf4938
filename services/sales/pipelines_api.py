"""The pipelines HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

pipelines_api = Blueprint("pipelines", __name__, url_prefix="/api/v1")
