"""The forms HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

forms_api = Blueprint("forms", __name__, url_prefix="/api/v1")
