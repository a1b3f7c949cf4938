"""CSAT: the signed rating link, one rating per resolved ticket, the agents' endpoints.

Tickets are inserted as rows (the tickets API is another module's); each test runs on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

from services.support import csat
from services.support.models import CsatRating, Ticket
from services.support.tests.conftest import AGENT_ID, row_counts, token_for
from shared.auth import Principal, issue_token
from shared.keys import CSAT_LINK, PURPOSES, purpose_key
from shared.testing import outbox_events
from shared.web import ApiError

CONTACT_ID = "c0000000-0000-4000-8000-0000000000c1"
UNKNOWN = "5b0b6a0e-9d1b-4a43-9d3b-2b7a4c2f0e11"
PROBLEM = "application/problem+json"


def new_ticket(db: Any, status: str = "resolved", **fields: Any) -> str:
    with db.session() as session:
        ticket = Ticket(
            subject="Printer on fire",
            description="Ada Lovelace's printer caught fire again",
            requester_email="ada@example.com",
            requester_name="Ada Lovelace",
            contact_id=CONTACT_ID,
            status=status,
            assignee_id=AGENT_ID,
            **fields,
        )
        session.add(ticket)
        session.flush()
        return ticket.id


def link(app: Any, ticket_id: str) -> str:
    return f"/api/v1/csat/{csat.csat_token(app.extensions['crm.settings'], ticket_id)}"


def ratings(db: Any) -> list[tuple[str, int, str | None, str | None]]:
    with db.session() as session:
        query = sa.select(
            CsatRating.ticket_id, CsatRating.rating, CsatRating.comment, CsatRating.assignee_id
        )
        return [tuple(row) for row in session.execute(query)]


def auth(app: Any, role: str, subject: str = AGENT_ID) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(app, role=role, subject=subject)}"}


# --- the public link ------------------------------------------------------------------------


def test_the_rating_page_shows_the_subject_and_nothing_personal(app, db, anonymous):
    ticket_id = new_ticket(db)
    response = anonymous.get(link(app, ticket_id))
    assert response.status_code == 200
    assert response.get_json() == {"subject": "Printer on fire", "rated": False, "can_rate": True}


def test_a_customer_rates_a_resolved_ticket_once_through_the_link(app, db, anonymous):
    ticket_id = new_ticket(db)
    url = link(app, ticket_id)
    response = anonymous.post(url, json={"rating": 5, "comment": "Fire is out, thanks"})
    assert response.status_code == 201
    assert response.get_json() == {
        "subject": "Printer on fire",
        "rated": True,
        "can_rate": False,
        "rating": 5,
    }
    assert ratings(db) == [(ticket_id, 5, "Fire is out, thanks", AGENT_ID)]
    assert outbox_events(db, "ticket.csat_recorded") == [
        (
            "ticket.csat_recorded",
            {
                "ticket_id": ticket_id,
                "contact_id": CONTACT_ID,
                "assignee_id": AGENT_ID,
                "rating": 5,
                "comment": "Fire is out, thanks",
            },
        )
    ]
    assert anonymous.get(url).get_json()["rated"] is True
    again = anonymous.post(url, json={"rating": 1})
    assert again.status_code == 409 and again.mimetype == PROBLEM
    assert ratings(db) == [(ticket_id, 5, "Fire is out, thanks", AGENT_ID)]
    assert len(outbox_events(db, "ticket.csat_recorded")) == 1


def test_an_html_form_may_post_the_rating(app, db, anonymous):
    ticket_id = new_ticket(db, status="closed")
    response = anonymous.post(link(app, ticket_id), data={"rating": "4", "comment": ""})
    assert response.status_code == 201
    assert ratings(db) == [(ticket_id, 4, None, AGENT_ID)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": 0}, "rating"),
        ({"rating": 6}, "rating"),
        ({"rating": "4"}, "rating"),  # JSON numbers are numbers
        ({"rating": 4.5}, "rating"),
        ({"rating": True}, "rating"),
        ({"comment": "no number"}, "rating"),
        ({"rating": 3, "comment": "x" * 5001}, "comment"),
        ({"rating": 3, "comment": "nul\u0000"}, "comment"),
        ({"rating": 3, "colour": "red"}, "colour"),
    ],
)
def test_invalid_json_ratings_are_422_and_change_nothing(app, db, anonymous, body, field):
    url = link(app, new_ticket(db))
    before = row_counts(db, "csat_ratings", "outbox")
    response = anonymous.post(url, json=body)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert field in response.get_json()["errors"]
    assert row_counts(db, "csat_ratings", "outbox") == before


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"rating": "five"}, "rating"),
        ({"rating": "6"}, "rating"),
        ({"rating": "4.5"}, "rating"),
        ({"rating": ""}, "rating"),
        ({"rating": ["4", "5"]}, "rating"),
        ({"rating": "4", "spam": "1"}, "spam"),
    ],
)
def test_invalid_form_ratings_are_422(app, db, anonymous, form, field):
    url = link(app, new_ticket(db))
    response = anonymous.post(url, data=form)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert field in response.get_json()["errors"]
    assert ratings(db) == []


def test_a_comment_of_5000_characters_is_kept(app, db, anonymous):
    ticket_id = new_ticket(db)
    assert (
        anonymous.post(link(app, ticket_id), json={"rating": 2, "comment": "é" * 5000}).status_code
        == 201
    )
    assert ratings(db)[0][2] == "é" * 5000


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]"])
def test_malformed_bodies_are_400(app, db, anonymous, body):
    url = link(app, new_ticket(db))
    response = anonymous.post(url, data=body, content_type="application/json")
    assert response.status_code == 400 and response.mimetype == PROBLEM
    assert ratings(db) == []


def test_an_oversized_post_is_413(app, db, anonymous):
    url = link(app, new_ticket(db))
    response = anonymous.post(url, json={"rating": 3, "comment": "x" * 70_000})
    assert response.status_code == 413 and response.mimetype == PROBLEM
    assert ratings(db) == []


def test_a_ticket_not_resolved_cannot_be_rated(app, db, anonymous):
    ticket_id = new_ticket(db, status="open")
    url = link(app, ticket_id)
    assert anonymous.get(url).get_json() == {
        "subject": "Printer on fire",
        "rated": False,
        "can_rate": False,
    }
    response = anonymous.post(url, json={"rating": 5})
    assert response.status_code == 409 and response.mimetype == PROBLEM
    assert ratings(db) == [] and outbox_events(db) == []


def _tokens(app: Any, ticket_id: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    settings = app.extensions["crm.settings"]
    good = csat.csat_token(settings, ticket_id)
    with monkeypatch.context() as patch:  # signed in 2023: long expired
        patch.setattr(time, "time", lambda: 1_700_000_000.0)
        expired = csat.csat_token(settings, ticket_id)
    ours = URLSafeTimedSerializer(purpose_key(settings.jwt_secret, CSAT_LINK), salt=csat.SALT)
    other_salt = URLSafeTimedSerializer(purpose_key(settings.jwt_secret, CSAT_LINK), salt="x")
    other_key = URLSafeTimedSerializer("not our secret", salt=csat.SALT)
    # The same salt and payload under the bare secret or another purpose's key: the link
    # of one purpose never verifies as another's.
    foreign = [
        URLSafeTimedSerializer(key, salt=csat.SALT).dumps(ticket_id)
        for key in (
            settings.jwt_secret,
            *(purpose_key(settings.jwt_secret, p) for p in PURPOSES - {CSAT_LINK}),
        )
    ]
    return [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),  # tampered signature
        good.replace(".", "", 1),
        "not-a-token",
        "x" * 600,
        expired,
        other_salt.dumps(ticket_id),
        other_key.dumps(ticket_id),
        csat.csat_token(settings, UNKNOWN),  # genuine, but no such ticket
        ours.dumps(["not", "an id"]),
        *foreign,
        token_for(app, role="admin"),  # a service-call token
        issue_token(settings, Principal(ticket_id, "admin", "ada@example.com")),
    ]


def test_bad_tampered_expired_or_foreign_tokens_are_404(app, db, anonymous, monkeypatch):
    ticket_id = new_ticket(db)
    for token in _tokens(app, ticket_id, monkeypatch):
        for response in (
            anonymous.get(f"/api/v1/csat/{token}"),
            anonymous.post(f"/api/v1/csat/{token}", json={"rating": 5}),
        ):
            assert response.status_code == 404, token
            assert response.mimetype == PROBLEM
    assert ratings(db) == []


def test_two_ratings_racing_for_one_ticket_store_one(app, db):
    url = link(app, new_ticket(db))
    statuses: list[int] = []

    def rate(value: int) -> None:
        statuses.append(app.test_client().post(url, json={"rating": value}).status_code)

    threads = [threading.Thread(target=rate, args=(value,)) for value in (1, 2, 3, 4, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201, 409, 409, 409, 409]
    assert len(ratings(db)) == 1
    assert len(outbox_events(db, "ticket.csat_recorded")) == 1


def test_a_token_names_its_ticket(app):
    settings = app.extensions["crm.settings"]
    token = csat.csat_token(settings, UNKNOWN)
    assert csat.ticket_id_of(settings, token) == UNKNOWN
    assert "/" not in token and "+" not in token  # safe in a URL path


# --- agents ---------------------------------------------------------------------------------


def test_an_agent_enters_a_phone_rating_and_anyone_reads_it(app, db, anonymous):
    ticket_id = new_ticket(db)
    response = anonymous.post(
        f"/api/v1/tickets/{ticket_id}/csat",
        json={"rating": 3, "comment": "So-so"},
        headers=auth(app, "support"),
    )
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/v1/tickets/{ticket_id}/csat"
    body = response.get_json()
    assert {key: body[key] for key in ("id", "ticket_id", "rating", "comment", "assignee_id")} == {
        "id": ticket_id,
        "ticket_id": ticket_id,
        "rating": 3,
        "comment": "So-so",
        "assignee_id": AGENT_ID,
    }
    assert body["created_at"].endswith("Z")
    read = anonymous.get(f"/api/v1/tickets/{ticket_id}/csat", headers=auth(app, "viewer"))
    assert read.status_code == 200 and read.get_json() == body


def test_a_ticket_list_may_carry_each_tickets_rating(app, db, anonymous):
    rated, unrated = new_ticket(db), new_ticket(db, status="open")
    given = anonymous.post(
        f"/api/v1/tickets/{rated}/csat", json={"rating": 5}, headers=auth(app, "support")
    ).get_json()
    listed = anonymous.get(
        f"/api/v1/tickets?contact_id={CONTACT_ID}&include=csat", headers=auth(app, "viewer")
    )
    assert listed.status_code == 200
    by_id = {item["id"]: item for item in listed.get_json()["items"]}
    assert by_id[rated]["csat"] == given
    assert by_id[unrated]["csat"] is None
    plain = anonymous.get(f"/api/v1/tickets?contact_id={CONTACT_ID}", headers=auth(app, "viewer"))
    assert all("csat" not in item for item in plain.get_json()["items"])


@pytest.mark.parametrize("include", ["comments", "csat,comments", ""])
def test_a_ticket_list_refuses_what_it_cannot_include(app, anonymous, include):
    listed = anonymous.get(f"/api/v1/tickets?include={include}", headers=auth(app, "viewer"))
    assert listed.status_code == 422
    assert "include" in listed.get_json()["errors"]


@pytest.mark.parametrize("role", ["sales", "marketing", "viewer"])
def test_other_roles_may_not_enter_ratings(app, db, anonymous, role):
    ticket_id = new_ticket(db)
    response = anonymous.post(
        f"/api/v1/tickets/{ticket_id}/csat", json={"rating": 3}, headers=auth(app, role)
    )
    assert response.status_code == 403 and response.mimetype == PROBLEM
    assert ratings(db) == []


def test_the_agent_endpoints_need_a_token(app, db, anonymous):
    ticket_id = new_ticket(db)
    assert anonymous.get(f"/api/v1/tickets/{ticket_id}/csat").status_code == 401
    assert (
        anonymous.post(f"/api/v1/tickets/{ticket_id}/csat", json={"rating": 3}).status_code == 401
    )


def test_unknown_tickets_and_unrated_ones_are_404(client, db):
    unrated = new_ticket(db)
    for ticket_id in (unrated, UNKNOWN, "not-a-uuid"):
        response = client.get(f"/api/v1/tickets/{ticket_id}/csat")
        assert response.status_code == 404 and response.mimetype == PROBLEM
    for ticket_id in (UNKNOWN, "not-a-uuid"):
        response = client.post(f"/api/v1/tickets/{ticket_id}/csat", json={"rating": 3})
        assert response.status_code == 404 and response.mimetype == PROBLEM


def test_the_agent_endpoint_refuses_what_the_link_refuses(client, db):
    pending = new_ticket(db, status="pending")
    assert client.post(f"/api/v1/tickets/{pending}/csat", json={"rating": 3}).status_code == 409
    resolved = new_ticket(db)
    invalid = client.post(f"/api/v1/tickets/{resolved}/csat", json={"rating": "3"})
    assert invalid.status_code == 422
    assert client.post(f"/api/v1/tickets/{resolved}/csat", json={"rating": 3}).status_code == 201
    assert client.post(f"/api/v1/tickets/{resolved}/csat", json={"rating": 4}).status_code == 409
    assert [row[1] for row in ratings(db)] == [3]


def test_an_idempotency_key_replays_the_first_answer(client, db):
    ticket_id = new_ticket(db)
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    url = f"/api/v1/tickets/{ticket_id}/csat"
    first = client.post(url, json={"rating": 4}, headers=headers)
    second = client.post(url, json={"rating": 4}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.get_json() == first.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(ratings(db)) == 1


def test_record_rating_keeps_its_rules_for_other_callers(db):
    ticket_id = new_ticket(db)
    with db.session() as session:
        ticket = session.get(Ticket, ticket_id)
        for rating, comment in ((7, None), (True, None), (3, "x" * 5001)):
            with pytest.raises(ApiError) as refused:
                csat.record_rating(session, ticket, rating, comment)
            assert refused.value.status == 422
    assert ratings(db) == []
