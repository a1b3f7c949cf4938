"""A fixed corpus of nasty inputs sent to every write of the public API.

Every write (POST, PUT, PATCH) is taken from the gateway's OpenAPI document, not listed
by hand. Each nasty value must be refused with a 4xx problem+json or stored as sent
(answered back verbatim, never interpreted); nothing may answer 5xx, and the system
must be healthy afterwards.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.fuzz.nasty import (
    FORMULAS,
    HUGE,
    MALFORMED_BODIES,
    NASTY_STRINGS,
    Document,
    PathFiller,
    WriteOperation,
    cases,
    json_bytes,
    json_of,
)
from tests.fuzz.system import System

pytestmark = pytest.mark.xdist_group("crm-fuzz")  # one whole system at a time
PROBLEM = "application/problem+json"
TIMEOUT = 120
# Concurrent requests: the gateway and every service run two processes each.
PARALLEL = 4
MIN_STORING_WRITES = 15  # of 85 writes: the others need ids or states a sample lacks


@pytest.fixture(scope="module")
def document(openapi_document: dict) -> Document:
    return Document(openapi_document)


@pytest.fixture(scope="module")
def filler(system: System, document: Document) -> PathFiller:
    return PathFiller(system.session, system.base, document)


def send(system: System, method: str, url: str, body: bytes) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return system.session.request(method, url, data=body, headers=headers, timeout=TIMEOUT)


def judge(answer: requests.Response, field: str | None = None, sent: Any = None) -> str | None:
    """What is wrong with an answer to a nasty request, or None.

    A record answered back (created, or changed by PATCH/PUT) must hold the text as sent;
    other answers (a preview, a search) are not the input stored and are not compared.
    """
    if answer.status_code >= 500:
        return f"{answer.status_code}: {answer.text[:300]}"
    if 400 <= answer.status_code < 500:
        if not answer.headers.get("Content-Type", "").startswith(PROBLEM):
            return f"{answer.status_code} without problem+json: {answer.text[:200]}"
        return None
    body = json_of(answer) if stores(answer) else None
    if field and isinstance(body, dict) and isinstance(body.get(field), str):
        if body[field] != sent:
            return f"{answer.status_code}: {field} answered as {body[field][:80]!r}"
    return None


def stores(answer: requests.Response) -> bool:
    return answer.status_code == 201 or answer.request.method in ("PATCH", "PUT")


def run_all(jobs: list[Callable[[], str | None]]) -> list[str]:
    with ThreadPoolExecutor(PARALLEL) as pool:
        return [problem for problem in pool.map(lambda job: job(), jobs) if problem]


def assert_healthy(system: System) -> None:
    assert requests.get(f"{system.internal}/ready", timeout=TIMEOUT).status_code == 200
    listed = system.session.get(f"{system.api}/contacts?limit=5", timeout=TIMEOUT)
    assert listed.status_code == 200 and "items" in listed.json()


def nasty_string_job(
    system: System, filler: PathFiller, case: tuple[WriteOperation, str, str], stored: list
) -> Callable[[], str | None]:
    operation, field, name = case
    url = system.base + filler.fill(operation.path)
    body = {**filler.document.sample_body(operation), field: NASTY_STRINGS[name]}

    def job() -> str | None:
        answer = send(system, operation.method, url, json_bytes(body))
        if stores(answer) and answer.ok:
            stored.append((str(operation), field, name))
        problem = judge(answer, field, NASTY_STRINGS[name])
        return problem and f"{operation} {field}={name}: {problem}"

    return job


def test_every_write_refuses_or_keeps_verbatim_each_nasty_string(system, document, filler):
    stored: list[tuple[str, str, str]] = []
    jobs = [nasty_string_job(system, filler, case, stored) for case in cases(document)]
    assert len(jobs) > 2000

    problems = run_all(jobs)

    assert not problems, f"{len(problems)} of {len(jobs)}:\n" + "\n".join(problems)
    # The corpus reaches storage, not only validation: many writes took the text as is.
    assert len({operation for operation, _, _ in stored}) >= MIN_STORING_WRITES, stored
    assert_healthy(system)


def test_every_write_refuses_or_keeps_one_megabyte_strings(system, document, filler):
    def job(operation: WriteOperation) -> str | None:
        fields = document.text_fields(operation)
        body = {**document.sample_body(operation), **dict.fromkeys(fields, HUGE)}
        url = system.base + filler.fill(operation.path)
        answer = send(system, operation.method, url, json_bytes(body))
        problem = judge(answer, fields[0] if fields else None, HUGE)
        return problem and f"{operation}: {problem}"

    problems = run_all([lambda op=op: job(op) for op in document.writes()])

    assert not problems, "\n".join(problems)
    assert_healthy(system)


@pytest.mark.parametrize("kind", sorted(MALFORMED_BODIES))
def test_every_write_answers_a_malformed_body_with_a_problem(
    system, document, filler, database_state, kind
):
    # Real ids first (filling a path may create its parent record): then nothing may change.
    urls = {str(op): system.base + filler.fill(op.path) for op in document.writes()}

    def job(operation: WriteOperation) -> str | None:
        answer = send(system, operation.method, urls[str(operation)], MALFORMED_BODIES[kind])
        if answer.status_code not in (400, 404, 413, 415, 422):
            return f"{operation}: {answer.status_code} {answer.text[:200]}"
        if not answer.headers.get("Content-Type", "").startswith(PROBLEM):
            return f"{operation}: {answer.status_code} without problem+json"
        return None

    with database_state.unchanged():  # every answer a 4xx: no row, no event anywhere
        problems = run_all([lambda op=op: job(op) for op in document.writes()])

    assert not problems, "\n".join(problems)
    assert_healthy(system)


def test_contacts_export_neutralises_formulas(system):
    formulas = [NASTY_STRINGS[name] for name in FORMULAS]
    made = []
    for number, formula in enumerate(formulas):
        contact = {
            "first_name": formula,
            "last_name": formula,
            "title": formula,
            "email": f"formula{number}@example.com",
            "tags": [formula.replace(" ", "")[:60]],
        }
        answer = system.session.post(f"{system.api}/contacts", json=contact, timeout=TIMEOUT)
        assert answer.status_code == 201, answer.text
        assert answer.json()["first_name"] == formula  # stored as typed
        made.append(contact["email"])

    export = system.session.get(f"{system.api}/contacts/export", timeout=TIMEOUT)

    assert export.status_code == 200
    rows = [row for row in csv.DictReader(io.StringIO(export.text)) if row["email"] in made]
    assert len(rows) == len(made)
    cells = [cell for row in rows for cell in row.values() if cell]
    assert not [cell for cell in cells if cell[0] in "=+-@\t\r"], cells
    assert {row["first_name"] for row in rows} == {"'" + formula for formula in formulas}


def test_header_injection_in_email_fields_is_refused(system, document, filler, database_state):
    def job(operation: WriteOperation, field: str) -> str | None:
        body = {**document.sample_body(operation), field: NASTY_STRINGS["header injection"]}
        answer = send(system, operation.method, urls[str(operation)], json_bytes(body))
        if not 400 <= answer.status_code < 500:
            return f"{operation} {field}: {answer.status_code} {answer.text[:200]}"
        return None

    email_fields = [
        (operation, field)
        for operation in document.writes()
        for field, schema in document.properties(operation.body).items()
        if schema.get("format") == "email" or field.endswith("email")
    ]
    assert len(email_fields) > 5
    urls = {str(op): system.base + filler.fill(op.path) for op, _ in email_fields}
    with database_state.unchanged():  # every answer a 4xx: no row, no event anywhere
        problems = run_all([lambda case=case: job(*case) for case in email_fields])

    assert not problems, "\n".join(problems)
    preview = system.session.post(
        f"{system.api}/templates/preview",
        json={"subject": NASTY_STRINGS["header injection"], "body_text": "Hi"},
        timeout=TIMEOUT,
    )
    assert preview.status_code == 200, preview.text
    assert not {"\r", "\n"} & set(preview.json()["subject"])  # one header line, always


def test_sql_metacharacters_are_stored_verbatim_and_searched_as_text(system):
    names = [NASTY_STRINGS["sql quote"], NASTY_STRINGS["sql drop"]]
    made = system.session.post(
        f"{system.api}/contacts",
        json={"first_name": names[0], "last_name": names[1], "email": "bobby@example.com"},
        timeout=TIMEOUT,
    )
    assert made.status_code == 201, made.text

    again = system.session.get(f"{system.api}/contacts/{made.json()['id']}", timeout=TIMEOUT)
    assert [again.json()["first_name"], again.json()["last_name"]] == names
    for name in names:
        found = system.session.get(
            f"{system.api}/contacts", params={"q": name, "limit": 200}, timeout=TIMEOUT
        )
        assert found.status_code == 200
        assert made.json()["id"] in [item["id"] for item in found.json()["items"]]
    everyone = system.session.get(f"{system.api}/contacts", params={"limit": 200}, timeout=60)
    matching = system.session.get(
        f"{system.api}/contacts", params={"q": names[0], "limit": 200}, timeout=60
    )
    assert len(matching.json()["items"]) < len(everyone.json()["items"])  # not "OR 1=1"
    assert_healthy(system)
