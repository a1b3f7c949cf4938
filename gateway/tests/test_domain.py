"""The user rules without HTTP: bootstrapping the admin."""

from __future__ import annotations

from sqlalchemy import func, select

from gateway.app import bootstrap_admin
from gateway.models import User
from gateway.tests.conftest import FAST_HASHER


def _count_users(app) -> int:
    with app.extensions["crm.db"].session() as session:
        return session.scalar(select(func.count()).select_from(User))


def test_the_bootstrap_admin_exists_once_with_the_configured_password(app, get_token):
    db, settings = app.extensions["crm.db"], app.extensions["crm.settings"]

    again = bootstrap_admin(db, settings, FAST_HASHER)

    assert again is None
    assert _count_users(app) == 1
    assert get_token(settings.admin_email, settings.admin_password)  # shorter than 8: allowed


def test_no_admin_is_bootstrapped_over_a_user_with_that_email(app, make_user):
    db, settings = app.extensions["crm.db"], app.extensions["crm.settings"]
    make_user("Boss@Example.com", role="sales")

    made = bootstrap_admin(db, settings.with_overrides(admin_email="boss@example.com"))

    assert made is None
    assert _count_users(app) == 2


def test_bootstrap_makes_an_admin_with_the_default_hasher(app):
    db, settings = app.extensions["crm.db"], app.extensions["crm.settings"]

    made = bootstrap_admin(db, settings.with_overrides(admin_email="root@example.com"))

    assert made is not None and made.role == "admin" and made.active
    assert made.password_hash.startswith("$argon2id$")
    assert made.created_at.tzinfo is not None
