"""Lead batches: up to 100 inputs, one result each, 207 when some fail, no partial inputs."""

from __future__ import annotations

import uuid

from services.sales.tests.conftest import row_counts


def test_a_batch_of_new_leads_is_created_at_once(client):
    inputs = [{"email": f"batch{n}@example.com", "first_name": f"B{n}"} for n in range(3)]
    response = client.post("/api/v1/leads/batch/create", json={"inputs": inputs})
    assert response.status_code == 201
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [201, 201, 201]
    assert [r["item"]["email"] for r in results] == [i["email"] for i in inputs]


def test_a_duplicate_or_invalid_input_fails_alone_with_207(client, db):
    client.post("/api/v1/leads", json={"email": "taken@example.com"})
    inputs = [
        {"email": "fresh@example.com"},
        {"email": "TAKEN@example.com"},
        {"email": "not an email"},
        {"status": "converted"},
    ]
    response = client.post("/api/v1/leads/batch/create", json={"inputs": inputs})
    assert response.status_code == 207
    assert [r["status"] for r in response.get_json()["results"]] == [201, 409, 422, 422]
    assert row_counts(db, "leads") == {"leads": 2}


def test_batch_update_changes_each_named_lead(client):
    ids = [
        client.post("/api/v1/leads", json={"email": f"u{n}@example.com"}).get_json()["id"]
        for n in range(2)
    ]
    inputs = [{"id": ids[0], "status": "working"}, {"id": ids[1], "title": "VP Sales"}]
    inputs.append({"id": str(uuid.uuid4()), "title": "ghost"})
    inputs.append({"title": "no id"})
    response = client.post("/api/v1/leads/batch/update", json={"inputs": inputs})
    assert response.status_code == 207
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [200, 200, 404, 422]
    assert results[0]["item"]["status"] == "working"
    assert results[1]["item"]["title"] == "VP Sales"


def test_batch_read_answers_each_id_and_404_for_unknown(client):
    lead = client.post("/api/v1/leads", json={"email": "read@example.com"}).get_json()
    unknown = str(uuid.uuid4())
    response = client.post("/api/v1/leads/batch/read", json={"ids": [lead["id"], unknown]})
    assert response.status_code == 207
    assert [r["status"] for r in response.get_json()["results"]] == [200, 404]
    whole = client.post("/api/v1/leads/batch/read", json={"ids": [lead["id"]]})
    assert whole.status_code == 200


def test_a_batch_over_100_inputs_is_refused_whole(client, db):
    inputs = [{"email": f"many{n}@example.com"} for n in range(101)]
    response = client.post("/api/v1/leads/batch/create", json={"inputs": inputs})
    assert response.status_code == 422
    assert row_counts(db, "leads") == {"leads": 0}


def test_a_viewer_may_batch_read_but_not_batch_create(app):
    from services.sales.tests.conftest import token_for

    viewer = {"Authorization": f"Bearer {token_for(app, 'viewer')}"}
    client = app.test_client()
    read = client.post(
        "/api/v1/leads/batch/read", json={"ids": [str(uuid.uuid4())]}, headers=viewer
    )
    assert read.status_code == 207
    create = client.post("/api/v1/leads/batch/create", json={"inputs": [{}]}, headers=viewer)
    assert create.status_code == 403
