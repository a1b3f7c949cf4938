"""The templates API: CRUD, roles, previews, and bad input that changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.notifications.tests.conftest import row_counts, token_for

BASE = "/api/v1/templates"


def template_body(**fields: Any) -> dict[str, Any]:
    body = {
        "name": "welcome",
        "subject": "Welcome, {{ name }}",
        "body_text": "Hello {{ name }}!",
        "body_html": "<p>Hello {{ name }}!</p>",
        "category": "marketing",
        "description": "Sent after sign-up",
    }
    return {**body, **fields}


def create(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post(BASE, json=template_body(**fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def as_role(app: Any, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(app, role)}"}


def test_create_answers_the_template_with_location_and_etag(client):
    response = client.post(BASE, json=template_body())
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{BASE}/{body['id']}"
    assert response.headers["ETag"] == '"1"'
    assert body["name"] == "welcome" and body["category"] == "marketing"
    assert body["version"] == 1 and body["created_at"].endswith("Z")
    assert client.get(f"{BASE}/{body['id']}").get_json() == body


def test_category_defaults_to_transactional_and_html_is_optional(client):
    body = {"name": "plain", "subject": "Hi", "body_text": "Text only"}
    created = client.post(BASE, json=body).get_json()
    assert created["category"] == "transactional" and created["body_html"] is None


def test_a_taken_name_is_a_409(client, db):
    create(client)
    before = row_counts(db, "templates")
    response = client.post(BASE, json=template_body(name=" welcome "))
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert row_counts(db, "templates") == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"body_text": "Hello {{ name }"}, "body_text"),
        ({"body_html": "<p>{% if x %}</p>"}, "body_html"),
        ({"subject": "{{ }}"}, "subject"),
        ({"subject": "x" * 1001}, "subject"),
        ({"body_text": "x" * 200_001}, "body_text"),
        ({"category": "spam"}, "category"),
        ({"name": "   "}, "name"),
        ({"name": str(uuid.uuid4())}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"body_text": None}, "body_text"),
        ({"surprise": 1}, "surprise"),
        ({"body_text": "nul\x00"}, "body_text"),
        ({"id": "not-a-uuid"}, "id"),
    ],
)
def test_invalid_templates_are_422_and_change_nothing(client, db, change, field):
    response = client.post(BASE, json=template_body(**change))
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert row_counts(db, "templates") == {"templates": 0}


def test_a_syntax_error_names_its_line(client):
    response = client.post(BASE, json=template_body(body_text="Hi\n\n{{ name }"))
    assert response.get_json()["errors"]["body_text"] == ["Line 3: unexpected '}'"]


def test_malformed_bodies_are_400(client):
    assert client.post(BASE, data="{", content_type="application/json").status_code == 400
    assert client.post(BASE, json=[1, 2]).status_code == 400


def test_idempotency_key_returns_the_first_answer(client, db):
    headers = {"Idempotency-Key": "create-welcome"}
    first = client.post(BASE, json=template_body(), headers=headers)
    again = client.post(BASE, json=template_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json()["id"] == again.get_json()["id"]
    assert row_counts(db, "templates") == {"templates": 1}


def test_writes_need_marketing_support_or_admin(app, client, db):
    anonymous = app.test_client()
    assert anonymous.post(BASE, json=template_body()).status_code == 401
    for role in ("viewer", "sales"):
        response = client.post(BASE, json=template_body(), headers=as_role(app, role))
        assert response.status_code == 403
    assert row_counts(db, "templates") == {"templates": 0}
    for number, role in enumerate(("marketing", "support")):
        response = client.post(
            BASE, json=template_body(name=f"t{number}"), headers=as_role(app, role)
        )
        assert response.status_code == 201
    assert client.get(BASE, headers=as_role(app, "viewer")).status_code == 200


def test_list_filters_sorts_and_pages(client):
    create(client, name="b-news", category="marketing", description="Monthly news")
    create(client, name="a-receipt", category="transactional", description="Payment")
    create(client, name="c-promo", category="marketing", description="Spring offer")
    names = [t["name"] for t in client.get(BASE).get_json()["items"]]
    assert names == ["a-receipt", "b-news", "c-promo"]
    marketing = client.get(f"{BASE}?category=marketing&sort=-name").get_json()["items"]
    assert [t["name"] for t in marketing] == ["c-promo", "b-news"]
    assert [t["name"] for t in client.get(f"{BASE}?q=spring").get_json()["items"]] == ["c-promo"]
    first = client.get(f"{BASE}?limit=2").get_json()
    rest = client.get(f"{BASE}?limit=2&cursor={first['next_cursor']}").get_json()
    assert [t["name"] for t in first["items"] + rest["items"]] == names
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    "query", ["?category=spam", "?sort=subject", "?limit=0", "?cursor=xyz", "?colour=red"]
)
def test_bad_list_parameters_are_422(client, query):
    assert client.get(f"{BASE}{query}").status_code == 422


def test_unknown_ids_are_404(client):
    missing = f"{BASE}/{uuid.uuid4()}"
    assert client.get(missing).status_code == 404
    assert client.patch(missing, json={"subject": "x"}).status_code == 404
    assert client.delete(missing).status_code == 404
    assert client.post(f"{missing}/preview", json={"variables": {}}).status_code == 404
    assert client.get(f"{BASE}/not-a-uuid").status_code == 404


def test_update_bumps_the_version_and_honours_if_match(client):
    template = create(client)
    url = f"{BASE}/{template['id']}"
    stale = client.patch(url, json={"subject": "New"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 409
    response = client.patch(url, json={"subject": "New {{ name }}"}, headers={"If-Match": '"1"'})
    assert response.status_code == 200 and response.headers["ETag"] == '"2"'
    assert response.get_json()["subject"] == "New {{ name }}"
    same = client.patch(url, json={"subject": "New {{ name }}"})
    assert same.get_json()["version"] == 2


def test_bad_updates_change_nothing(client):
    template = create(client)
    other = create(client, name="other")
    url = f"{BASE}/{template['id']}"
    assert client.patch(url, json={"name": other["name"]}).status_code == 409
    assert client.patch(url, json={"body_html": "{% endfor %}"}).status_code == 422
    assert client.patch(url, json={"id": other["id"]}).status_code == 422
    assert client.patch(url, json={"name": None}).status_code == 422
    assert client.get(url).get_json() == template


def test_delete_honours_if_match(client, db):
    template = create(client)
    url = f"{BASE}/{template['id']}"
    assert client.delete(url, headers={"If-Match": '"2"'}).status_code == 409
    assert client.delete(url, headers={"If-Match": '"1"'}).status_code == 204
    assert client.get(url).status_code == 404
    assert row_counts(db, "templates") == {"templates": 0}


def test_preview_renders_a_stored_template(client):
    template = create(client)
    response = client.post(
        f"{BASE}/{template['id']}/preview", json={"variables": {"name": "<Ada>"}}
    )
    assert response.status_code == 200
    assert response.get_json() == {
        "subject": "Welcome, <Ada>",
        "body_text": "Hello <Ada>!",
        "body_html": "<p>Hello &lt;Ada&gt;!</p>",
    }


def test_preview_with_a_missing_variable_is_a_422_naming_it(client):
    template = create(client)
    response = client.post(f"{BASE}/{template['id']}/preview", json={"variables": {}})
    assert response.status_code == 422
    body = response.get_json()
    assert "'name' is undefined" in body["detail"]
    assert "name" in body["errors"]["variables"][0]


def test_inline_preview(client, db):
    response = client.post(
        f"{BASE}/preview",
        json={"subject": "Hi {{ n }}", "body_text": "T {{ n }}", "variables": {"n": "Ada"}},
    )
    assert response.get_json() == {"subject": "Hi Ada", "body_text": "T Ada", "body_html": None}
    assert row_counts(db, "templates") == {"templates": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subject": "Hi", "body_text": "{{ ''.__class__.__mro__ }}"}, "body_text"),
        ({"subject": "Hi {{ who }}"}, "variables"),
        ({"subject": "Hi", "body_html": "{% for %}"}, "body_html"),
        ({"subject": "Hi", "variables": []}, "variables"),
        ({"body_text": "no subject"}, "subject"),
        ({"subject": "Hi", "extra": True}, "extra"),
    ],
)
def test_bad_inline_previews_are_422(client, body, field):
    response = client.post(f"{BASE}/preview", json=body)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]


def test_previews_are_refused_to_viewers(app, client):
    response = client.post(
        f"{BASE}/preview", json={"subject": "Hi"}, headers=as_role(app, "viewer")
    )
    assert response.status_code == 403
