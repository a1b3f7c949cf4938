"""`user.*` events: recorded with every change other services see, never for a refused one."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from gateway import domain
from gateway.tests.conftest import ADMIN_EMAIL, FAST_HASHER
from shared.testing import outbox_envelopes, outbox_events
from shared.web import ApiError

USERS = "/api/v1/users"
NEW_USER = {"email": "sam@example.com", "name": "Sam", "role": "sales", "password": "s3cret-pass"}


def db_of(app: Flask) -> Any:
    return app.extensions["crm.db"]


def events_about(app: Flask, user_id: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(type, aggregate_version, data) of the events recorded about one user, oldest first."""
    return [
        (envelope["type"], envelope["aggregate_version"], envelope["data"])
        for envelope in outbox_envelopes(db_of(app))
        if envelope["aggregate_id"] == user_id
    ]


def update(app: Flask, user_id: str, **changes: Any) -> Any:
    with db_of(app).session() as session:
        return domain.update_user(session, FAST_HASHER, user_id, changes)


def delete(app: Flask, user_id: str) -> None:
    with db_of(app).session() as session:
        domain.delete_user(session, user_id)


def the_admin(app: Flask) -> Any:
    with db_of(app).session() as session:
        return domain.find_user_by_email(session, ADMIN_EMAIL)


def test_the_bootstrap_admin_is_published_as_created(app):
    [(event_type, data)] = outbox_events(db_of(app))

    assert event_type == "user.created"
    assert (data["email"], data["role"], data["active"], data["version"]) == (
        ADMIN_EMAIL,
        "admin",
        True,
        1,
    )


def test_creating_a_user_records_user_created_without_the_password(app, make_user):
    user = make_user("Sam@Example.com", role="support")

    assert events_about(app, user.id) == [
        (
            "user.created",
            1,
            {
                "id": user.id,
                "email": "Sam@Example.com",
                "name": "",
                "role": "support",
                "active": True,
                "version": 1,
            },
        )
    ]
    assert user.version == 1
    payloads = str(outbox_envelopes(db_of(app)))
    assert "argon2" not in payloads and "password" not in payloads


def test_changes_record_user_updated_then_deleted_with_growing_versions(app, make_user):
    user = make_user("pat@example.com", role="viewer")

    update(app, user.id, name="Pat")
    update(app, user.id, role="support", active=False, name="Pat")
    delete(app, user.id)

    events = events_about(app, user.id)
    assert [(kind, version) for kind, version, _ in events] == [
        ("user.created", 1),
        ("user.updated", 2),
        ("user.updated", 3),
        ("user.deleted", 4),
    ]
    assert events[1][2]["changed"] == ["name"] and events[1][2]["name"] == "Pat"
    renamed = events[2][2]
    assert renamed["changed"] == ["role", "active"]
    assert (renamed["role"], renamed["active"], renamed["version"]) == ("support", False, 3)
    assert events[3][2] == {"id": user.id, "version": 4}


def test_a_change_to_the_same_values_records_nothing_and_keeps_the_version(app, make_user):
    user = make_user("pat@example.com", role="viewer")

    unchanged = update(app, user.id, name="", role="viewer", active=True)

    assert unchanged.version == 1
    assert [kind for kind, _, _ in events_about(app, user.id)] == ["user.created"]


def test_a_new_password_alone_records_no_event_and_keeps_the_version(app, make_user):
    user = make_user("pat@example.com")

    changed = update(app, user.id, password="brand-new-pass")

    assert changed.version == 1 and changed.updated_at >= changed.created_at
    assert [kind for kind, _, _ in events_about(app, user.id)] == ["user.created"]


def test_refused_changes_record_nothing(app, make_user):
    make_user("sam@example.com")
    admin = the_admin(app)
    before = outbox_envelopes(db_of(app))

    with pytest.raises(ApiError) as duplicate:
        make_user("SAM@example.com")
    with pytest.raises(ApiError) as demoted:
        update(app, admin.id, role="sales", name="Someone else")
    with pytest.raises(ApiError) as removed:
        delete(app, admin.id)
    with pytest.raises(ApiError) as missing:
        delete(app, "00000000-0000-0000-0000-000000000000")

    statuses = [error.value.status for error in (duplicate, demoted, removed, missing)]
    assert statuses == [409, 409, 409, 404]
    assert outbox_envelopes(db_of(app)) == before
    assert the_admin(app).version == 1


def test_concurrent_changes_of_one_user_get_distinct_versions(app, make_user):
    user = make_user("pat@example.com")
    second_done = threading.Event()

    def second_change() -> None:
        update(app, user.id, role="support")
        second_done.set()

    with db_of(app).session() as session:
        domain.update_user(session, FAST_HASHER, user.id, {"name": "Pat"})
        other = threading.Thread(target=second_change)
        other.start()
        # The second change waits for this transaction's lock on the user.
        assert not second_done.wait(0.3)
    other.join(timeout=30)

    assert second_done.is_set()
    versions = [version for kind, version, _ in events_about(app, user.id)]
    assert versions == [1, 2, 3]


def test_the_users_api_records_created_updated_and_deleted(client, app, admin_headers):
    created = client.post(USERS, json=NEW_USER, headers=admin_headers).get_json()
    location = f"{USERS}/{created['id']}"

    client.patch(location, json={"role": "marketing"}, headers=admin_headers)
    client.patch(location, json={"password": "another-pass"}, headers=admin_headers)
    assert client.delete(location, headers=admin_headers).status_code == 204

    events = events_about(app, created["id"])
    assert [(kind, version) for kind, version, _ in events] == [
        ("user.created", 1),
        ("user.updated", 2),
        ("user.deleted", 3),
    ]
    assert events[0][2]["email"] == "sam@example.com" and events[0][2]["name"] == "Sam"
    assert events[1][2]["changed"] == ["role"] and events[1][2]["role"] == "marketing"


def test_refused_api_requests_record_nothing(client, app, admin_headers):
    client.post(USERS, json=NEW_USER, headers=admin_headers)
    admin_id = client.get("/api/v1/me", headers=admin_headers).get_json()["id"]
    before = outbox_envelopes(db_of(app))

    duplicate = client.post(
        USERS, json={**NEW_USER, "email": "SAM@example.com"}, headers=admin_headers
    )
    demoted = client.patch(f"{USERS}/{admin_id}", json={"active": False}, headers=admin_headers)
    invalid = client.patch(f"{USERS}/{admin_id}", json={"role": "root"}, headers=admin_headers)
    removed = client.delete(f"{USERS}/{admin_id}", headers=admin_headers)

    statuses = [r.status_code for r in (duplicate, demoted, invalid, removed)]
    assert statuses == [409, 409, 422, 409]
    assert outbox_envelopes(db_of(app)) == before
