"""Team visibility: an admin grants it, the sales user's next token carries it; a new
password signs the user out everywhere."""

from __future__ import annotations

from gateway.tests.conftest import bearer
from gateway.tests.test_refresh_tokens import assert_problem, claims, refresh, sign_in

EMAIL, PASSWORD = "sam@example.com", "password-123"


def test_an_admin_grants_team_visibility_and_the_next_token_carries_it(
    client, app, make_user, admin_headers
):
    sam = make_user(EMAIL)
    assert claims(app, sign_in(client, EMAIL, PASSWORD)["access_token"])["team"] is False
    url = f"/api/v1/users/{sam.id}"
    answer = client.patch(url, json={"team_visibility": True}, headers=admin_headers)
    assert answer.status_code == 200 and answer.get_json()["team_visibility"] is True
    assert claims(app, sign_in(client, EMAIL, PASSWORD)["access_token"])["team"] is True


def test_only_an_admin_grants_it_and_only_as_a_boolean(client, app, make_user, admin_headers):
    sam = make_user(EMAIL)
    own = bearer(sign_in(client, EMAIL, PASSWORD)["access_token"])
    url = f"/api/v1/users/{sam.id}"
    assert_problem(client.patch(url, json={"team_visibility": True}, headers=own), 403)
    assert_problem(
        client.patch(url, json={"team_visibility": "yes please"}, headers=admin_headers), 422
    )
    assert client.get(url, headers=admin_headers).get_json()["team_visibility"] is False


def test_a_new_password_revokes_every_refresh_token_of_the_user(
    client, app, make_user, admin_headers
):
    sam = make_user(EMAIL)
    first, second = sign_in(client, EMAIL, PASSWORD), sign_in(client, EMAIL, PASSWORD)
    changed = client.patch(
        f"/api/v1/users/{sam.id}", json={"password": "another-long-one"}, headers=admin_headers
    )
    assert changed.status_code == 200
    for session in (first, second):
        assert_problem(refresh(client, session["refresh_token"]), 401)
    assert (
        refresh(client, sign_in(client, EMAIL, "another-long-one")["refresh_token"]).status_code
        == 200
    )
