"""API4 (unrestricted resource consumption), through the running system.

Page sizes are capped at 200, bodies at the configured limit (1 MiB in these tests), CSV
uploads likewise, batches at 100 inputs, searches at 10 groups of 20 filters; oversized
search values and deep JSON are 4xx problems, never a 5xx or a hung worker.
"""

from __future__ import annotations

import pytest
import requests

from tests.security.conftest import TIMEOUT, System, assert_problem, forwarded

pytestmark = pytest.mark.xdist_group("crm-run")

BODY_LIMIT = 1024 * 1024  # CRM_MAX_BODY_BYTES of the system under test
# Every list, by the role that may read it.
LISTS = [
    "/contacts",
    "/companies",
    "/leads",
    "/deals",
    "/tasks",
    "/tickets",
    "/segments",
    "/campaigns",
    "/subscriptions",
    "/messages",
    "/templates",
    "/reminders",
    "/webhooks",
    "/users",
    "/api-keys",
    f"/contacts/{'0' * 8}-0000-4000-8000-{'0' * 12}/interactions",
]
SEARCHES = ["/contacts/search", "/leads/search", "/deals/search", "/tickets/search"]


@pytest.mark.parametrize("path", LISTS)
def test_a_page_is_never_larger_than_200(system: System, users, path):
    admin = users["admin"]
    for limit in ("201", "100000", "0", "-1", "1e3", "abc", "9" * 40):
        answer = admin.get(f"{system.api}{path}", params={"limit": limit})
        if answer.status_code == 404 and "interactions" in path:
            continue  # the contact does not exist: nothing is listed either way
        body = assert_problem(answer, 422)
        assert "limit" in body.get("errors", {}), (path, limit, body)
    ok = admin.get(f"{system.api}{path}", params={"limit": "200"})
    assert ok.status_code in (200, 404), (path, ok.text)


@pytest.mark.parametrize("path", SEARCHES)
def test_a_search_is_bounded_in_size_groups_filters_and_values(system: System, users, path):
    admin, url = users["admin"], f"{system.api}{path}"
    one = {"field": "id", "operator": "exists", "value": True}
    too_big = [
        {"limit": 201},
        {"filter_groups": [{"filters": [one]}] * 11},
        {"filter_groups": [{"filters": [one] * 21}]},
        {"filter_groups": [{"filters": [{**one, "operator": "in", "value": ["x"] * 501}]}]},
        {"query": "q" * 201},
    ]
    for body in too_big:
        assert_problem(admin.post(url, json=body), 422)
    huge = {"field": "id", "operator": "contains", "value": "%_" * 60_000}
    answer = admin.post(url, json={"filter_groups": [{"filters": [huge]}]})
    assert answer.status_code < 500, answer.text[:300]
    nested = {"field": "id", "operator": "eq", "value": {"a": [[[[[[{"b": "c"}]]]]]]}}
    answer = admin.post(url, json={"filter_groups": [{"filters": [nested]}]})
    assert_problem(answer, 400, 422)


def test_batches_over_100_inputs_are_refused_before_any_is_applied(system: System, users):
    sales, api = users["sales"], system.api
    before = len(sales.get(f"{api}/deals", params={"limit": 200}).json()["items"])
    inputs = [{"name": f"bulk {n}"} for n in range(101)]
    assert_problem(sales.post(f"{api}/deals/batch/create", json={"inputs": inputs}), 422)
    ids = ["00000000-0000-4000-8000-000000000000"] * 101
    for path in ("/contacts", "/deals", "/leads", "/tickets"):
        assert_problem(sales.post(f"{api}{path}/batch/read", json={"ids": ids}), 422)
    assert len(sales.get(f"{api}/deals", params={"limit": 200}).json()["items"]) == before


def test_a_body_over_the_limit_is_413_at_the_gateway_and_at_each_service(system: System, users):
    admin = users["admin"]
    big = {"first_name": "Big", "email": "big@customer.example", "title": "x" * BODY_LIMIT}
    assert_problem(admin.post(f"{system.api}/contacts", json=big), 413)
    for name, path in (("contacts", "/contacts"), ("sales", "/deals"), ("support", "/tickets")):
        answer = admin.post(f"{system.service_api(name)}{path}", json=big, headers=forwarded(admin))
        assert_problem(answer, 413)
    assert admin.get(f"{system.api}/contacts", params={"q": "big@customer"}).json()["items"] == []


def test_a_chunked_body_over_the_limit_is_413_too(system: System, users):
    def chunks():
        for _ in range(BODY_LIMIT // 8192 + 10):
            yield b" " * 8192

    answer = requests.post(
        f"{system.api}/contacts",
        data=chunks(),
        headers={"Authorization": users["admin"].session.headers["Authorization"]},
        timeout=TIMEOUT,
    )
    assert_problem(answer, 413)


def test_a_csv_upload_over_the_limit_is_413_and_imports_nothing(system: System, users):
    admin = users["admin"]
    row = "Flood,Row,flood{n}@customer.example\n"
    csv = "first_name,last_name,email\n" + "".join(row.format(n=n) for n in range(40_000))
    assert len(csv) > BODY_LIMIT
    answer = admin.post(
        f"{system.api}/contacts/import",
        data=csv.encode(),
        headers={"Content-Type": "text/csv"},
        timeout=60,
    )
    assert_problem(answer, 413)
    found = admin.get(f"{system.api}/contacts", params={"q": "flood1@customer.example"})
    assert found.json()["items"] == []


def test_deeply_nested_json_is_a_400_not_a_crash(system: System, users):
    admin = users["admin"]
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/contacts", "/deals", "/tickets", "/campaigns"):
        answer = admin.post(
            f"{system.api}{path}", data=deep, headers={"Content-Type": "application/json"}
        )
        assert_problem(answer, 400, 422)
    deep_object = '{"a":' * 50_000 + "1" + "}" * 50_000
    answer = admin.post(
        f"{system.api}/contacts/search",
        data=deep_object,
        headers={"Content-Type": "application/json"},
    )
    assert_problem(answer, 400, 422)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% for i in range(10**9) %}{{ i }}{% endfor %}",
        "{{ 'x' * 10**9 }}",
        "{{ (10**100000) }}",
    ],
)
def test_a_template_can_neither_escape_its_sandbox_nor_exhaust_the_service(
    system: System, users, source
):
    body = {"subject": "Hi", "body_text": source}
    answer = users["marketing"].post(f"{system.api}/templates/preview", json=body, timeout=30)
    assert_problem(answer, 422)
    assert "subclasses" not in answer.text and "uid=" not in answer.text
