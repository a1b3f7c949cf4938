"""Alembic environment of the contacts service."""

from services.contacts.models import Base
from shared.migrations import run_env

run_env(Base.metadata)
