"""The segments HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

segments_api = Blueprint("segments", __name__, url_prefix="/api/v1")
