"""Backoff after failed sign-ins, per email and client and per client, kept in the database:
nobody locks an account out from elsewhere."""

from __future__ import annotations

from datetime import timedelta

from gateway import login_lockout
from gateway.app import create_app
from gateway.tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, close_app, gateway_config
from shared.events import utcnow

TOKEN_URL = "/api/v1/auth/token"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def attempt(client, email: str, password: str, address: str = "127.0.0.1"):
    return client.post(
        TOKEN_URL,
        json={"email": email, "password": password},
        environ_overrides={"REMOTE_ADDR": address},
    )


def fail(client, email: str, times: int, address: str = "127.0.0.1") -> None:
    for _ in range(times):
        assert attempt(client, email, "wrong-password", address).status_code == 401


def test_five_failures_hold_back_that_email_from_that_client_even_for_the_right_password(
    client,
):
    fail(client, ADMIN_EMAIL, login_lockout.PAIR_FREE_FAILURES)

    response = attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD)

    body = assert_problem(response, 429)
    assert body["title"] == "Too Many Requests"
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= login_lockout.MAX_DELAY.total_seconds()
    # The same email in other letters from the same client is the same pair.
    assert attempt(client, ADMIN_EMAIL.upper(), ADMIN_PASSWORD).status_code == 429


def test_an_attacker_elsewhere_never_locks_the_admin_out(client, monkeypatch):
    """50 failures for admin@ from one address: the admin at another signs in at once,
    the attacker waits longer and longer."""
    attacker = "203.0.113.66"
    answers = [attempt(client, ADMIN_EMAIL, f"guess-{n}", attacker) for n in range(50)]
    assert {answer.status_code for answer in answers} == {401, 429}
    assert all(answer.status_code == 429 for answer in answers[login_lockout.PAIR_FREE_FAILURES :])

    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD, "198.51.100.7").status_code == 200

    waits = []
    clock = [utcnow()]
    monkeypatch.setattr(login_lockout, "utcnow", lambda: clock[0])
    for _ in range(4):  # the attacker waits each delay out and fails again
        refused = attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD, attacker)
        assert_problem(refused, 429)
        waits.append(int(refused.headers["Retry-After"]))
        clock[0] += timedelta(seconds=waits[-1] + 0.01)
        assert attempt(client, ADMIN_EMAIL, "another guess", attacker).status_code == 401
    assert waits == sorted(waits) and waits[-1] > waits[0], waits  # growing
    assert waits[-1] <= login_lockout.MAX_DELAY.total_seconds()
    # Still: the admin elsewhere is not held back, and the attacker still is.
    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD, "198.51.100.7").status_code == 200
    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD, attacker).status_code == 429


def test_the_wait_doubles_and_is_capped():
    free = login_lockout.PAIR_FREE_FAILURES
    waits = [login_lockout.backoff(free + n, free) for n in range(12)]
    assert login_lockout.backoff(free - 1, free) is None
    first = login_lockout.FIRST_DELAY
    assert waits[:4] == [first, first * 2, first * 4, first * 8]
    assert max(waits) == login_lockout.MAX_DELAY == waits[-1]


def test_the_lock_lifts_when_the_window_has_passed(client, monkeypatch):
    fail(client, ADMIN_EMAIL, login_lockout.PAIR_FREE_FAILURES)
    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429

    later = utcnow() + login_lockout.WINDOW + timedelta(seconds=1)
    monkeypatch.setattr(login_lockout, "utcnow", lambda: later)

    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200


def test_locked_attempts_do_not_extend_the_lock(client, monkeypatch):
    fail(client, ADMIN_EMAIL, login_lockout.PAIR_FREE_FAILURES)
    first = int(attempt(client, ADMIN_EMAIL, "wrong-password").headers["Retry-After"])
    for _ in range(3):
        assert attempt(client, ADMIN_EMAIL, "wrong-password").status_code == 429

    last = int(attempt(client, ADMIN_EMAIL, "wrong-password").headers["Retry-After"])

    assert last <= first


def test_a_success_resets_the_count(client):
    fail(client, ADMIN_EMAIL, login_lockout.PAIR_FREE_FAILURES - 1)
    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200

    fail(client, ADMIN_EMAIL, login_lockout.PAIR_FREE_FAILURES - 1)

    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200


def test_an_unknown_email_is_answered_exactly_like_a_known_one(client):
    unknown = "nobody@example.com"
    known_answers = [attempt(client, ADMIN_EMAIL, "wrong") for _ in range(6)]
    unknown_answers = [attempt(client, unknown, "wrong") for _ in range(6)]

    for known, other in zip(known_answers, unknown_answers, strict=True):
        assert known.status_code == other.status_code
        assert known.get_json()["detail"] == other.get_json()["detail"]
        assert ("Retry-After" in known.headers) == ("Retry-After" in other.headers)
    assert [r.status_code for r in known_answers] == [401] * 5 + [429]


def test_one_client_trying_many_emails_is_held_back(client, make_user):
    make_user("real@example.com", password="password-123")
    limit = login_lockout.CLIENT_FREE_FAILURES
    for number in range(limit):
        assert attempt(client, f"guess{number}@example.com", "nope", "10.1.1.1").status_code == 401

    held = attempt(client, "real@example.com", "password-123", "10.1.1.1")

    assert_problem(held, 429)
    assert int(held.headers["Retry-After"]) > 0
    # Another client is not held back.
    assert attempt(client, "real@example.com", "password-123", "10.2.2.2").status_code == 200


def test_failures_count_across_app_instances_on_one_database(app, database_url):
    """Several gunicorn workers or replicas share the count through the database."""
    other = create_app(gateway_config(database_url, create_tables=False))
    try:
        fail(app.test_client(), ADMIN_EMAIL, 3)
        fail(other.test_client(), ADMIN_EMAIL, 2)

        assert attempt(app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429
        assert attempt(other.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429
    finally:
        close_app(other)


def test_bad_sign_in_bodies_are_4xx_problems_and_count_for_nothing(client, app):
    for _ in range(login_lockout.PAIR_FREE_FAILURES + 1):
        assert_problem(client.post(TOKEN_URL, data="{nope", content_type="application/json"), 400)
        unknown = client.post(TOKEN_URL, json={"email": ADMIN_EMAIL, "password": "x", "otp": 1})
        assert "otp" in assert_problem(unknown, 422)["errors"]
        assert (
            "password" in assert_problem(client.post(TOKEN_URL, json={"email": "a"}), 422)["errors"]
        )

    with app.extensions["crm.db"].session() as session:
        assert login_lockout.failure_count(session, ADMIN_EMAIL) == 0
    assert attempt(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200


def test_only_a_digest_of_the_email_is_kept(client, app):
    fail(client, ADMIN_EMAIL, 1)

    with app.extensions["crm.db"].engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT * FROM login_failures").all()
    assert len(rows) == 1
    assert ADMIN_EMAIL not in repr(rows)
