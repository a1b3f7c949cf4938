"""Alembic environment of the support service."""

from services.support.models import Base
from shared.migrations import run_env

run_env(Base.metadata)
