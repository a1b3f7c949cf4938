"""Alembic environment of the sales service."""

from services.sales.models import Base
from shared.migrations import run_env

run_env(Base.metadata)
