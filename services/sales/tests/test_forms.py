"""The public lead-capture endpoint: no token, honeypot, limits, de-duplication, rate limit."""

from __future__ import annotations

import hashlib
import hmac
import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.sales import forms_api
from services.sales.models import FormSubmission, Lead
from services.sales.tests.conftest import row_counts
from services.sales.tests.test_leads_api import assert_problem, move, new_lead, outbox_events
from shared.events import utcnow
from shared.keys import CLIENT_ADDRESS, purpose_key

FORM = "/api/v1/forms/leads"
TABLES = ("leads", "lead_behaviours", "form_submissions", "outbox")
RECEIVED = {"status": "received"}


@pytest.fixture
def public(app: Any, anonymous: Any) -> Any:
    """A caller without a token, seen through the gateway (one trusted proxy hop)."""
    forms_api.trusted_proxy(app)
    return anonymous


def post_from(public: Any, address: str, **fields: Any) -> Any:
    """A form post the gateway forwarded for a caller at `address`."""
    body = {"email": f"{uuid.uuid4().hex}@example.org", **fields}
    headers = {"X-Forwarded-For": address}
    return public.post(FORM, json=body, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"})


def stored_leads(db: Any) -> list[Lead]:
    with db.session() as session:
        return list(session.scalars(sa.select(Lead).order_by(Lead.created_at)))


def test_a_json_post_creates_a_web_form_lead_worth_form_points(public, db):
    response = public.post(
        FORM,
        json={"first_name": "Ada", "email": "Ada@Example.org", "company_name": "Engines Ltd"},
    )
    assert response.status_code == 202 and response.get_json() == RECEIVED
    [lead] = stored_leads(db)
    assert lead.email == "Ada@Example.org" and lead.source == "web_form"
    assert lead.owner_id is None and lead.company_name == "Engines Ltd"
    assert lead.behaviour_points == 10 and lead.score == 10
    assert [e["aggregate_id"] for e in outbox_events(db, "lead.created")] == [lead.id]
    with db.session() as session:
        [submission] = session.scalars(sa.select(FormSubmission)).all()
        assert submission.lead_id == lead.id


def test_an_html_form_post_is_accepted_and_empty_inputs_are_ignored(public, db):
    response = public.post(
        FORM,
        data={"email": "html@example.org", "last_name": "Form", "phone": "", "nickname": ""},
    )
    assert response.status_code == 202 and response.get_json() == RECEIVED
    [lead] = stored_leads(db)
    assert lead.last_name == "Form" and lead.phone is None


def test_a_post_for_an_open_leads_email_fills_its_gaps_without_a_duplicate(client, public, db):
    lead = new_lead(client, email="Known@Example.org", title="CTO", company_name=None)
    response = public.post(
        FORM,
        json={
            "email": "known@example.ORG",
            "title": "Intern",
            "company_name": "Acme",
            "source": "landing_page",
        },
    )
    assert response.status_code == 202 and response.get_json() == RECEIVED
    [stored] = stored_leads(db)
    assert stored.id == lead["id"]
    assert stored.title == "CTO" and stored.company_name == "Acme" and stored.source == "api"
    assert stored.behaviour_points == 10
    again = public.post(FORM, json={"email": "KNOWN@example.org"})
    assert again.get_json() == RECEIVED
    body = client.get(f"/api/v1/leads/{lead['id']}").get_json()
    assert body["score_breakdown"]["behaviour"] == [
        {"kind": "form_submitted", "count": 2, "points": 20}
    ]


def test_a_post_for_a_closed_leads_email_makes_a_new_lead(client, public, db):
    lead = new_lead(client, email="closed@example.org")
    move(client, lead, "unqualified")
    assert public.post(FORM, json={"email": "closed@example.org"}).status_code == 202
    assert len(stored_leads(db)) == 2


def test_the_honeypot_answers_like_success_and_stores_nothing(public, db, caplog):
    before = row_counts(db, *TABLES)
    response = public.post(FORM, json={"email": "bot@example.org", "nickname": "spam"})
    assert response.status_code == 202 and response.get_json() == RECEIVED
    html = public.post(FORM, data={"email": "not even valid", "nickname": "x"})
    assert html.status_code == 202
    assert row_counts(db, *TABLES) == before
    assert "honeypot" in caplog.text


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@example.org", "favourite_colour": "blue"}, "favourite_colour"),
        ({"email": "a@example.org", "first_name": "x" * 101}, "first_name"),
        ({"email": "a@example.org", "message": "x" * 5001}, "message"),
        ({"email": "a@example.org", "phone": "call me"}, "phone"),
        ({"email": "a@example.org", "website": "http://a b"}, "website"),
        ({"email": "a@example.org", "owner_id": str(uuid.uuid4())}, "owner_id"),
        ({"email": "a@example.org", "first_name": 5}, "first_name"),
    ],
)
def test_bad_form_input_is_422_and_stores_nothing(public, db, payload, field):
    before = row_counts(db, *TABLES)
    response = public.post(FORM, json=payload)
    assert field in assert_problem(response, 422)["errors"]
    assert row_counts(db, *TABLES) == before


def test_html_forms_cannot_repeat_fields_or_send_files(public, db):
    before = row_counts(db, *TABLES)
    repeated = public.post(
        FORM,
        data="email=a%40example.org&email=b%40example.org",
        content_type="application/x-www-form-urlencoded",
    )
    assert "email" in assert_problem(repeated, 422)["errors"]
    upload = public.post(
        FORM,
        data={"email": "a@example.org", "cv": (io.BytesIO(b"x"), "cv.txt")},
        content_type="multipart/form-data",
    )
    assert "cv" in assert_problem(upload, 422)["errors"]
    assert row_counts(db, *TABLES) == before


@pytest.mark.parametrize("payload", [b"{broken", b"[1, 2]", b"", b"\xff\xfe"])
def test_malformed_json_is_400_and_stores_nothing(public, db, payload):
    before = row_counts(db, *TABLES)
    response = public.post(FORM, data=payload, content_type="application/json")
    assert_problem(response, 400)
    assert row_counts(db, *TABLES) == before


@pytest.mark.parametrize("kind", ["application/json", "application/x-www-form-urlencoded"])
def test_a_form_over_16_kb_is_413_and_stores_nothing(public, db, kind):
    before = row_counts(db, *TABLES)
    filler = "x" * (17 * 1024)
    body = (
        f'{{"email": "a@example.org", "message": "{filler}"}}'
        if kind == "application/json"
        else f"email=a%40example.org&message={filler}"
    )
    response = public.post(FORM, data=body, content_type=kind)
    assert "16384" in assert_problem(response, 413)["detail"]
    assert row_counts(db, *TABLES) == before


def test_the_eleventh_post_in_a_minute_is_429_with_retry_after(public, db):
    for _ in range(10):
        assert post_from(public, "203.0.113.7").status_code == 202
    before = row_counts(db, *TABLES)
    response = post_from(public, "203.0.113.7")
    assert_problem(response, 429)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert row_counts(db, *TABLES) == before
    assert post_from(public, "198.51.100.9").status_code == 202  # another client


def test_the_client_is_the_last_forwarded_hop_the_gateway_added(public, db):
    for n in range(10):
        # A caller may forge earlier hops; only the gateway's last entry counts.
        assert post_from(public, f"10.9.9.{n}, 203.0.113.8").status_code == 202
    assert_problem(post_from(public, "1.2.3.4, 203.0.113.8"), 429)
    secret = public.application.extensions["crm.settings"].jwt_secret
    key = purpose_key(secret, CLIENT_ADDRESS)  # its own key, not the token-signing secret
    expected = hmac.new(key, b"203.0.113.8", hashlib.sha256).hexdigest()
    with db.session() as session:
        keys = set(session.scalars(sa.select(FormSubmission.client_key)))
    assert keys == {expected}


def test_old_submissions_are_purged(public, db):
    assert post_from(public, "203.0.113.9").status_code == 202
    with db.session() as session:
        session.add(FormSubmission(client_key="k" * 64, submitted_at=utcnow() - timedelta(days=2)))
    with db.session() as session:
        assert forms_api.purge_submissions(session) == 1
        assert len(session.scalars(sa.select(FormSubmission)).all()) == 1


def test_the_rate_limit_forgets_posts_older_than_the_window(public, db):
    for _ in range(10):
        post_from(public, "203.0.113.10")
    with db.session() as session:
        session.execute(
            sa.update(FormSubmission).values(submitted_at=utcnow() - timedelta(seconds=61))
        )
    assert post_from(public, "203.0.113.10").status_code == 202


def test_a_post_losing_the_race_for_a_new_email_fills_the_winning_lead(
    client, public, db, monkeypatch
):
    winner = new_lead(client, email="race@example.org", company_name=None)
    real = forms_api._locked_open_lead
    calls = iter([None])
    # The first look saw no lead: the other post created it just after.
    monkeypatch.setattr(
        forms_api, "_locked_open_lead", lambda session, email: next(calls, real(session, email))
    )
    response = public.post(FORM, json={"email": "race@example.org", "company_name": "Acme"})
    assert response.status_code == 202 and response.get_json() == RECEIVED
    [stored] = stored_leads(db)
    assert stored.id == winner["id"] and stored.company_name == "Acme"
    assert stored.behaviour_points == 10
