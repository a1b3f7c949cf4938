"""Alembic environment of the marketing service."""

from services.marketing.models import Base
from shared.migrations import run_env

run_env(Base.metadata)
