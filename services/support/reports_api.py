"""The support_reports HTTP API (to be written)."""

from __future__ import annotations

from flask import Blueprint

reports_api = Blueprint("support_reports", __name__, url_prefix="/api/v1")
