"""Public open and click tracking (to be written)."""

from __future__ import annotations

from flask import Blueprint

tracking_api = Blueprint("tracking", __name__, url_prefix="/t")
