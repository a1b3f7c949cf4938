"""The staff replica: user events from the gateway, applied in version order, once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.notifications import users
from services.notifications.models import UserAddress
from shared.bus import PermanentError
from shared.testing import handle_event, make_event

USER = "00000000-0000-4000-8000-0000000000a1"


@pytest.fixture
def apply(app: Any, db: Any) -> Any:
    handlers = users.handlers(app.extensions["crm.settings"])

    def apply_event(event: Any) -> Any:
        handle_event(db, handlers, event)
        return event

    return apply_event


def user_event(event_type: str, version: int, **data: Any) -> Any:
    """A user event as the gateway records it."""
    fields = {"id": USER, "email": "sam@example.com", "name": "Sam", "role": "support"}
    fields.update({"active": True, "version": version, **data})
    if event_type == "user.deleted":
        fields = {"id": USER, "version": version}
    return make_event(event_type, fields, "gateway", aggregate_id=USER, aggregate_version=version)


def address(db: Any) -> dict[str, Any] | None:
    with db.session() as session:
        return users.staff_address(session, USER)


def row(db: Any) -> UserAddress | None:
    with db.session() as session:
        found = session.get(UserAddress, USER)
        session.expunge_all()
        return found


def test_a_created_user_can_be_reached(apply, db):
    apply(user_event("user.created", 1))
    assert address(db) == {"id": USER, "email": "sam@example.com", "name": "Sam"}


def test_the_newest_version_wins_whatever_the_order(apply, db):
    apply(user_event("user.updated", 3, email="sam@new.example", name="Samuel"))
    apply(user_event("user.created", 1))  # late
    apply(user_event("user.updated", 2, email="sam@old.example"))  # late
    assert address(db) == {"id": USER, "email": "sam@new.example", "name": "Samuel"}


def test_a_redelivered_event_changes_nothing_more(apply, db):
    created = user_event("user.created", 1)
    apply(created)
    apply(created)
    assert row(db).version == 1 and address(db)["email"] == "sam@example.com"


def test_an_inactive_user_gets_no_mail(apply, db):
    apply(user_event("user.created", 1))
    apply(user_event("user.updated", 2, active=False))
    assert address(db) is None
    apply(user_event("user.updated", 3, active=True))
    assert address(db) is not None


def test_a_deleted_user_is_forgotten_and_late_events_do_not_bring_them_back(apply, db):
    apply(user_event("user.created", 1))
    apply(user_event("user.deleted", 2))
    apply(user_event("user.updated", 1, email="late@example.com"))
    tombstone = row(db)
    assert (tombstone.email, tombstone.name, tombstone.version) == (None, None, 2)
    assert address(db) is None


def test_an_address_mail_cannot_go_to_is_not_kept(apply, db):
    apply(user_event("user.created", 1, email="sam@example.com\r\nBcc: x@y.example"))
    assert row(db).email is None and address(db) is None


@pytest.mark.parametrize(
    "event",
    [
        make_event("user.created", {"id": "not-a-uuid", "email": "a@b.example"}, "gateway"),
        make_event("user.created", {"id": USER, "email": "a@b.example"}, "gateway"),
        make_event("user.updated", {"id": USER}, "gateway", aggregate_id=USER, aggregate_version=0),
    ],
    ids=["bad id", "no version", "version 0"],
)
def test_events_that_can_never_apply_are_permanent_failures(apply, db, event):
    with pytest.raises(PermanentError):
        apply(event)
    assert row(db) is None


def test_staff_address_of_something_not_a_user_id_is_none(db):
    with db.session() as session:
        assert users.staff_address(session, None) is None
        assert users.staff_address(session, "nope") is None
        assert users.staff_address(session, str(uuid.uuid4())) is None
