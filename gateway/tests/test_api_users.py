"""`/users`: admins manage users; everyone else is refused; bad input changes nothing."""

from __future__ import annotations

import json

import pytest

from gateway.tests.conftest import ADMIN_EMAIL, bearer

USERS = "/api/v1/users"
NEW_USER = {"email": "sam@example.com", "name": "Sam", "role": "sales", "password": "s3cret-pass"}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def test_an_admin_creates_a_user_who_can_then_sign_in(client, admin_headers, get_token):
    response = client.post(USERS, json=NEW_USER, headers=admin_headers)

    assert response.status_code == 201
    user = response.get_json()
    assert user["email"] == "sam@example.com" and user["role"] == "sales" and user["active"]
    assert "password" not in user and "password_hash" not in user
    assert user["created_at"].endswith("Z")
    assert response.headers["Location"].endswith(f"{USERS}/{user['id']}")
    fetched = client.get(response.headers["Location"], headers=admin_headers)
    assert fetched.get_json() == user
    token = get_token("sam@example.com", "s3cret-pass")
    assert client.get("/api/v1/me", headers=bearer(token)).get_json()["id"] == user["id"]


def test_a_duplicate_email_in_another_case_is_409(client, admin_headers, users_snapshot):
    client.post(USERS, json=NEW_USER, headers=admin_headers)
    before = users_snapshot()

    response = client.post(
        USERS, json={**NEW_USER, "email": "SAM@Example.COM"}, headers=admin_headers
    )

    assert assert_problem(response, 409)["errors"] == {
        "email": ["A user with this email already exists."]
    }
    assert users_snapshot() == before


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**NEW_USER, "password": "short"}, 422, "password"),
        ({**NEW_USER, "email": "not-an-email"}, 422, "email"),
        ({**NEW_USER, "role": "owner"}, 422, "role"),
        ({**NEW_USER, "is_superuser": True}, 422, "is_superuser"),
        ({key: v for key, v in NEW_USER.items() if key != "password"}, 422, "password"),
        ({**NEW_USER, "active": "maybe"}, 422, "active"),
        ("{oops", 400, None),
        ([NEW_USER], 400, None),
    ],
    ids=[
        "short-password",
        "bad-email",
        "bad-role",
        "unknown-field",
        "no-password",
        "bad-active",
        "malformed",
        "list",
    ],
)
def test_bad_new_users_are_refused_and_change_nothing(
    client, admin_headers, users_snapshot, body, status, field
):
    before = users_snapshot()
    data = body if isinstance(body, str) else json.dumps(body)

    response = client.post(USERS, data=data, content_type="application/json", headers=admin_headers)

    problem = assert_problem(response, status)
    if field:
        assert field in problem["errors"]
    assert users_snapshot() == before


def test_an_oversize_body_is_413_and_changes_nothing(client, app, admin_headers, users_snapshot):
    app.config["MAX_CONTENT_LENGTH"] = 1024
    before = users_snapshot()

    response = client.post(USERS, json={**NEW_USER, "name": "x" * 5000}, headers=admin_headers)

    assert_problem(response, 413)
    assert users_snapshot() == before


def test_users_are_listed_page_by_page(client, admin_headers, make_user):
    for number in range(4):
        make_user(f"user{number}@example.com")

    first = client.get(f"{USERS}?limit=3&sort=email", headers=admin_headers).get_json()
    second = client.get(
        f"{USERS}?limit=3&sort=email&cursor={first['next_cursor']}", headers=admin_headers
    ).get_json()

    emails = [user["email"] for user in first["items"] + second["items"]]
    assert emails == sorted(emails) and len(emails) == 5 and ADMIN_EMAIL in emails
    assert second["next_cursor"] is None


def test_the_default_order_is_by_creation_across_pages(client, admin_headers, make_user):
    made = [make_user(f"user{number}@example.com").id for number in range(3)]

    first = client.get(f"{USERS}?limit=2", headers=admin_headers).get_json()
    second = client.get(
        f"{USERS}?limit=2&cursor={first['next_cursor']}", headers=admin_headers
    ).get_json()

    ids = [user["id"] for user in first["items"] + second["items"]]
    assert ids[1:] == made


def test_users_are_filtered_by_role_active_and_text(client, admin_headers, make_user):
    make_user("ann@example.com", role="support")
    make_user("bob@example.com", role="support", active=False)
    make_user("carl@example.com", role="viewer")

    def emails(query: str) -> list[str]:
        items = client.get(f"{USERS}?{query}", headers=admin_headers).get_json()["items"]
        return sorted(user["email"] for user in items)

    assert emails("role=support") == ["ann@example.com", "bob@example.com"]
    assert emails("role=support&active=false") == ["bob@example.com"]
    assert emails("q=CARL") == ["carl@example.com"]
    assert emails("q=%25") == []  # a LIKE wildcard is searched for literally


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "cursor=garbage", "sort=password_hash", "role=x", "foo=1"]
)
def test_bad_list_parameters_are_422(client, admin_headers, query):
    assert_problem(client.get(f"{USERS}?{query}", headers=admin_headers), 422)


def test_an_unknown_user_is_404(client, admin_headers, users_snapshot):
    before = users_snapshot()
    missing = f"{USERS}/00000000-0000-0000-0000-000000000000"

    assert_problem(client.get(missing, headers=admin_headers), 404)
    assert_problem(client.patch(missing, json={"name": "x"}, headers=admin_headers), 404)
    assert_problem(client.delete(missing, headers=admin_headers), 404)
    assert users_snapshot() == before


def test_an_admin_changes_name_role_active_and_password(
    client, admin_headers, make_user, get_token
):
    user = make_user("pat@example.com", role="viewer")
    changes = {"name": "Pat", "role": "marketing", "active": True, "password": "brand-new-pass"}

    response = client.patch(f"{USERS}/{user.id}", json=changes, headers=admin_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["role"], body["active"]) == ("Pat", "marketing", True)
    assert body["updated_at"] >= body["created_at"]
    me = client.get("/api/v1/me", headers=bearer(get_token("pat@example.com", "brand-new-pass")))
    assert me.get_json()["role"] == "marketing"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (json.dumps({"email": "new@example.com"}), 422),
        (json.dumps({"role": "root"}), 422),
        (json.dumps({"password": "short"}), 422),
        (json.dumps({"name": None}), 422),
        ("not json", 400),
    ],
    ids=["email-not-patchable", "bad-role", "short-password", "null-name", "malformed"],
)
def test_bad_changes_are_refused_and_change_nothing(
    client, admin_headers, make_user, users_snapshot, data, status
):
    user = make_user("pat@example.com")
    before = users_snapshot()

    response = client.patch(
        f"{USERS}/{user.id}", data=data, content_type="application/json", headers=admin_headers
    )

    assert_problem(response, status)
    assert users_snapshot() == before


def test_deleting_a_user_answers_204_and_then_404(client, admin_headers, make_user):
    user = make_user("temp@example.com")

    response = client.delete(f"{USERS}/{user.id}", headers=admin_headers)

    assert response.status_code == 204 and response.get_data() == b""
    assert_problem(client.get(f"{USERS}/{user.id}", headers=admin_headers), 404)


def test_the_last_active_admin_cannot_be_removed_or_demoted(client, admin_headers, users_snapshot):
    admin_id = client.get("/api/v1/me", headers=admin_headers).get_json()["id"]
    before = users_snapshot()

    assert_problem(client.delete(f"{USERS}/{admin_id}", headers=admin_headers), 409)
    for change in ({"role": "sales"}, {"active": False}):
        assert_problem(client.patch(f"{USERS}/{admin_id}", json=change, headers=admin_headers), 409)
    assert users_snapshot() == before


@pytest.mark.parametrize("role", ["sales", "support", "marketing", "viewer"])
def test_only_admins_manage_users(client, make_user, get_token, users_snapshot, role):
    target = make_user("target@example.com")
    make_user(f"{role}@example.com", role=role)
    headers = bearer(get_token(f"{role}@example.com", "password-123"))
    before = users_snapshot()

    assert_problem(client.get(USERS, headers=headers), 403)
    assert_problem(client.get(f"{USERS}/{target.id}", headers=headers), 403)
    assert_problem(client.post(USERS, json=NEW_USER, headers=headers), 403)
    assert_problem(
        client.patch(f"{USERS}/{target.id}", json={"role": "admin"}, headers=headers), 403
    )
    assert_problem(client.delete(f"{USERS}/{target.id}", headers=headers), 403)
    assert users_snapshot() == before


def test_an_admin_demoted_after_signing_in_loses_admin_rights(
    client, admin_headers, make_user, get_token
):
    second = make_user("second-admin@example.com", role="admin")
    token = get_token("second-admin@example.com", "password-123")

    client.patch(f"{USERS}/{second.id}", json={"role": "sales"}, headers=admin_headers)

    # The token from before the change ends; a new one carries the new role.
    assert_problem(client.get(USERS, headers=bearer(token)), 401)
    again = get_token("second-admin@example.com", "password-123")
    assert_problem(client.get(USERS, headers=bearer(again)), 403)


def test_users_without_a_token_is_401(client):
    assert_problem(client.get(USERS), 401)
    assert_problem(client.post(USERS, json=NEW_USER), 401)
