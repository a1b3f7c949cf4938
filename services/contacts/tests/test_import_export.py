"""CSV import and export of contacts, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa

from services.contacts import exporting, importing
from services.contacts.tests.conftest import row_counts, token_for

IMPORT = "/api/v1/contacts/import"
EXPORT = "/api/v1/contacts/export"
TABLES = ("contacts", "companies", "tags", "contact_tags", "outbox")


def post_csv(client, text: str | bytes, **kwargs):
    body = text.encode() if isinstance(text, str) else text
    return client.post(IMPORT, data=body, content_type="text/csv", **kwargs)


def imported(client, text: str) -> dict:
    response = post_csv(client, text)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def events(db, event_type: str) -> list[dict]:
    table = db.outbox
    query = sa.select(table.c.payload).where(table.c.event_type == event_type)
    with db.engine.connect() as connection:
        return [json.loads(p) for p in connection.scalars(query.order_by(table.c.position))]


def contact_by_email(client, email: str) -> dict:
    items = client.get("/api/v1/contacts", query_string={"email": email}).get_json()["items"]
    assert len(items) == 1, items
    return items[0]


def export_rows(client, **query) -> list[dict]:
    response = client.get(EXPORT, query_string=query)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def define_field(client, name: str, kind: str, **extra) -> None:
    body = {"name": name, "type": kind, "label": name, **extra}
    response = client.post("/api/v1/custom-fields", json=body)
    assert response.status_code == 201, response.get_json()


def test_import_creates_contacts_from_a_text_csv_body(client, db):
    report = imported(
        client,
        "first_name,last_name,email,phone,title,lifecycle_stage\n"
        "Ada,Lovelace,ada@example.com,+44 20 7946 0958,Countess,customer\n"
        "Grace,Hopper,,,,\n",
    )
    assert report == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "rows": 2,
        "errors": [],
    }
    ada = contact_by_email(client, "ada@example.com")
    assert (ada["phone"], ada["title"], ada["lifecycle_stage"]) == (
        "+44 20 7946 0958",
        "Countess",
        "customer",
    )
    assert ada["version"] == 1 and ada["owner_id"] is not None
    assert row_counts(db, "contacts")["contacts"] == 2


def test_import_accepts_a_multipart_upload_with_a_byte_order_mark(client, db):
    data = {"file": (io.BytesIO("\ufeffemail,first_name\nbo@example.com,Bo\n".encode()), "c.csv")}
    response = client.post(IMPORT, data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["created"] == 1
    assert contact_by_email(client, "bo@example.com")["first_name"] == "Bo"


def test_import_without_a_file_or_with_another_media_type_is_refused(client, db):
    no_file = client.post(IMPORT, data={"other": "x"}, content_type="multipart/form-data")
    assert no_file.status_code == 400
    assert no_file.mimetype == "application/problem+json"
    assert client.post(IMPORT, json={"email": "a@example.com"}).status_code == 415
    assert row_counts(db, *TABLES) == dict.fromkeys(TABLES, 0)


def test_import_updates_contacts_matched_by_email_case_insensitively(client, db, make_contact):
    ada = make_contact(email="ada@example.com", phone="+1 555 0100", title="Analyst")
    report = imported(client, "email,title,phone\nADA@Example.com,Countess,\n")
    assert (report["created"], report["updated"]) == (0, 1)
    after = client.get(f"/api/v1/contacts/{ada['id']}").get_json()
    assert after["title"] == "Countess"
    assert after["phone"] == "+1 555 0100"  # an empty cell is not given
    assert after["version"] == 2
    updated = events(db, "contact.updated")
    assert len(updated) == 1
    assert updated[0]["aggregate_version"] == 2
    assert "title" in updated[0]["data"]["changed"]
    assert row_counts(db, "contacts")["contacts"] == 1


def test_import_reports_rejected_rows_with_line_numbers_and_writes_nothing_for_them(client, db):
    report = imported(
        client,
        "first_name,email,lifecycle_stage,company_id\n"
        "Ok,ok@example.com,lead,\n"
        "Bad,not-an-email,lead,\n"
        '"Multi\nline",ml@example.com,lead,\n'
        "Stage,stage@example.com,king,\n"
        ",,,\n"
        ",,lead,\n"
        "Firm,firm@example.com,,00000000-0000-4000-8000-00000000abcd\n"
        "Wide,wide@example.com,lead,,extra\n",
    )
    assert (report["created"], report["rejected"], report["rows"]) == (2, 5, 7)
    reasons = {entry["row"]: entry["errors"] for entry in report["errors"]}
    assert set(reasons) == {3, 6, 8, 9, 10}
    assert "email" in reasons[3]
    assert "lifecycle_stage" in reasons[6]
    assert "_schema" in reasons[8]
    assert reasons[9] == {"company_id": ["No company with this id exists."]}
    assert "_row" in reasons[10]
    assert row_counts(db, "contacts", "outbox") == {"contacts": 2, "outbox": 2}


def test_import_records_an_event_for_every_created_and_updated_contact(client, db, make_contact):
    make_contact(email="known@example.com", first_name="Known")
    report = imported(
        client,
        "email,first_name\n"
        "known@example.com,Renamed\n"
        "new1@example.com,New\n"
        "new2@example.com,New\n"
        "known@example.com,Renamed\n",
    )
    assert (report["created"], report["updated"], report["unchanged"]) == (2, 1, 1)
    created = events(db, "contact.created")
    assert len(created) == 3  # the one made through the API, and two imported
    assert {e["data"]["email"] for e in created[1:]} == {"new1@example.com", "new2@example.com"}
    assert all(e["aggregate_version"] == 1 and e["source"] == "contacts" for e in created)
    (updated,) = events(db, "contact.updated")
    assert updated["data"]["first_name"] == "Renamed"
    assert updated["data"]["changed"] == ["first_name"]
    assert updated["aggregate_version"] == updated["data"]["version"] == 2


def test_a_repeated_email_in_one_file_updates_the_contact_the_earlier_row_made(client, db):
    report = imported(
        client,
        "email,first_name,title\ntwice@example.com,Twice,First\nTWICE@example.com,,Second\n",
    )
    assert (report["created"], report["updated"]) == (1, 1)
    contact = contact_by_email(client, "twice@example.com")
    assert (contact["first_name"], contact["title"], contact["version"]) == ("Twice", "Second", 2)
    assert [e["aggregate_version"] for e in events(db, "contact.created")] == [1]
    assert [e["aggregate_version"] for e in events(db, "contact.updated")] == [2]
    assert row_counts(db, "contacts")["contacts"] == 1


def test_import_links_tags_and_companies_found_or_made_by_name(client, db):
    acme = client.post("/api/v1/companies", json={"name": "Acme Ltd"}).get_json()
    imported(client, "email,tags\nfirst@example.com,VIP\n")
    report = imported(
        client,
        "email,first_name,company,tags\n"
        "a@example.com,A,acme ltd,vip; b2b\n"
        "b@example.com,B,Globex,B2B;;\n"
        "c@example.com,C,GLOBEX,\n",
    )
    assert report["created"] == 3
    a, b, c = (contact_by_email(client, f"{x}@example.com") for x in "abc")
    assert a["company_id"] == acme["id"]
    assert a["tags"] == ["VIP", "b2b"] and b["tags"] == ["b2b"] and c["tags"] == []
    assert b["company_id"] == c["company_id"] != acme["id"]
    made = events(db, "company.created")
    assert [e["data"]["name"] for e in made] == ["Acme Ltd", "Globex"]
    assert row_counts(db, "tags", "companies") == {"tags": 2, "companies": 2}


def test_import_retags_only_rows_with_a_tags_cell(client, db):
    imported(client, "email,tags\nt@example.com,one;two\nu@example.com,one\n")
    report = imported(client, "email,tags\nt@example.com,three\nu@example.com,\n")
    assert (report["updated"], report["unchanged"]) == (1, 1)
    assert contact_by_email(client, "t@example.com")["tags"] == ["three"]
    assert contact_by_email(client, "u@example.com")["tags"] == ["one"]


def test_import_types_custom_fields_and_rejects_bad_values(client, db):
    define_field(client, "seats", "integer")
    define_field(client, "vip", "boolean")
    define_field(client, "plan", "select", options=["free", "pro"])
    report = imported(
        client,
        "email,cf.seats,cf.vip,cf.plan\n"
        "ok@example.com,12,yes,pro\n"
        "seats@example.com,twelve,no,free\n"
        "plan@example.com,3,no,gold\n",
    )
    assert (report["created"], report["rejected"]) == (1, 2)
    reasons = {entry["row"]: entry["errors"] for entry in report["errors"]}
    assert list(reasons[3]) == ["cf.seats"] and list(reasons[4]) == ["cf.plan"]
    fields = contact_by_email(client, "ok@example.com")["custom_fields"]
    assert fields == {"seats": 12, "vip": True, "plan": "pro"}
    assert row_counts(db, "contacts")["contacts"] == 1


def test_unknown_columns_are_refused_with_422_before_anything_is_written(client, db):
    response = post_csv(client, "email,first_name,shoe_size,cf.nothing\na@example.com,A,44,x\n")
    assert response.status_code == 422
    body = response.get_json()
    assert "shoe_size" in body["detail"] and "cf.nothing" in body["detail"]
    assert len(body["errors"]["columns"]) == 2
    assert row_counts(db, *TABLES) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"", 400, "empty"),
        ("email,first_name\nb\xe9@example.com,B\xe9a\n".encode("latin-1"), 400, "UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", 400, "UTF-8"),
        (b"Ada,Lovelace,ada@example.com\n", 422, "Unknown columns"),
        (b"email,email\na@example.com,b@example.com\n", 422, "twice"),
        (b"phone\n+1 555 0100\n", 422, "first_name"),
    ],
)
def test_files_that_are_not_utf8_csv_with_a_header_are_refused(client, db, body, status, words):
    response = post_csv(client, body)
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert words in response.get_json()["detail"]
    assert row_counts(db, *TABLES) == dict.fromkeys(TABLES, 0)


def test_a_bad_byte_late_in_a_long_file_writes_nothing_at_all(client, db):
    rows = "".join(f"r{i}@example.com,R\n" for i in range(2500))
    body = ("email,first_name\n" + rows).encode() + b"late@example.com,\xff\n"
    response = post_csv(client, body)
    assert response.status_code == 400
    assert row_counts(db, *TABLES) == dict.fromkeys(TABLES, 0)


def test_import_needs_a_token_and_a_writing_role(app, anonymous, db):
    assert post_csv(anonymous, "email\na@example.com\n").status_code == 401
    viewer = {"Authorization": f"Bearer {token_for(app, 'viewer')}"}
    assert post_csv(anonymous, "email\na@example.com\n", headers=viewer).status_code == 403
    assert row_counts(db, "contacts")["contacts"] == 0


def test_an_upload_over_the_size_limit_is_413(client, db):
    body = "email\n" + "x" * (2 * 1024 * 1024 + 10)
    assert post_csv(client, body).status_code == 413
    assert row_counts(db, "contacts")["contacts"] == 0


def test_importing_50000_rows_works(app, client, db):
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024
    lines = ["first_name,last_name,email,title,tags,company"]
    lines += [
        f"First{i},Last{i},person{i}@example.com,Title {i % 7},tag{i % 5};all,Company {i % 50}"
        for i in range(50_000)
    ]
    lines.append("First0,Last0,PERSON0@example.com,Boss,,")
    report = imported(client, "\n".join(lines) + "\n")
    assert (report["created"], report["updated"], report["rejected"]) == (50_000, 1, 0)
    counts = row_counts(db, "contacts", "companies", "tags", "contact_tags", "outbox")
    assert counts == {
        "contacts": 50_000,
        "companies": 50,
        "tags": 6,
        "contact_tags": 100_000,
        "outbox": 50_000 + 1 + 50,
    }
    assert len(events(db, "contact.updated")) == 1


def test_export_streams_every_contact_with_the_header_and_formula_quoting(client, db, make_contact):
    define_field(client, "score", "integer")
    for i in range(3):
        make_contact(email=f"plain{i}@example.com", tags=["b", "a"])
    make_contact(
        first_name='=HYPERLINK("http://evil")',
        last_name="@SUM(A1)",
        email="evil@example.com",
        phone="+1 555 0100",
        title="-2+3",
        custom_fields={"score": -5},
    )
    response = client.get(EXPORT)
    assert response.status_code == 200
    assert response.is_streamed
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="contacts.csv"'
    reader = csv.reader(io.StringIO(response.get_data(as_text=True)))
    header = next(reader)
    assert header == [*exporting.EXPORT_COLUMNS, "cf.score"]
    rows = [dict(zip(header, row, strict=True)) for row in reader]
    assert len(rows) == 4
    evil = next(row for row in rows if row["email"] == "evil@example.com")
    assert evil["first_name"] == '\'=HYPERLINK("http://evil")'
    assert evil["last_name"] == "'@SUM(A1)"
    assert evil["phone"] == "'+1 555 0100" and evil["title"] == "'-2+3"
    assert evil["cf.score"] == "'-5" and evil["lifetime_value"] == "0.00"
    plain = next(row for row in rows if row["email"] == "plain0@example.com")
    assert plain["tags"] == "a;b" and plain["created_at"].endswith("Z")


def test_export_pages_through_all_contacts_and_takes_the_list_filters(client, db, make_contact):
    for i in range(5):
        make_contact(lifecycle_stage="customer" if i % 2 else "lead", tags=[f"t{i % 2}"])
    chunks = list(exporting.export_csv(db, chunk_rows=2))
    assert len(chunks) == 1 + 3  # the header, then pages of 2, 2 and 1
    assert sum(chunk.count("@example.com") for chunk in chunks) == 5
    assert len(export_rows(client, lifecycle_stage="customer")) == 2
    assert len(export_rows(client, tag="T0")) == 3
    assert client.get(EXPORT, query_string={"colour": "red"}).status_code == 422


def test_an_export_imported_again_changes_nothing(client, db, make_contact):
    define_field(client, "seats", "integer")
    define_field(client, "langs", "multiselect", options=["en", "fr"])
    company = client.post("/api/v1/companies", json={"name": "Acme"}).get_json()
    make_contact(tags=["VIP", "b2b"], company_id=company["id"], custom_fields={"seats": 3})
    make_contact(first_name="=1+1", phone="+44 20 7946 0958", custom_fields={"langs": ["fr"]})
    make_contact(first_name="", last_name="", email="only@example.com", title="-lead")
    before = row_counts(db, *TABLES)
    exported = client.get(EXPORT).get_data()
    report = imported(client, exported.decode())
    assert (report["unchanged"], report["updated"], report["created"]) == (3, 0, 0), report
    assert row_counts(db, *TABLES) == before


def test_a_repeated_email_in_a_later_chunk_updates_the_contact_an_earlier_chunk_made(db):
    body = (
        b"email,first_name,title\n"
        b"a@example.com,A,One\nb@example.com,B,One\nc@example.com,C,One\n"
        b"A@EXAMPLE.com,,Two\nb@example.com,B,One\nB@example.com,,Three\n"
    )
    report = importing.import_contacts(db, io.BytesIO(body), chunk_rows=2)
    assert (report.created, report.updated, report.unchanged) == (3, 2, 1)
    query = sa.text("SELECT email_key, title, version FROM contacts ORDER BY email_key")
    with db.engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(query)]
    assert rows == [
        ("a@example.com", "Two", 2),
        ("b@example.com", "Three", 2),
        ("c@example.com", "One", 1),
    ]
    assert [e["aggregate_version"] for e in events(db, "contact.updated")] == [2, 2]
    assert row_counts(db, "contacts", "outbox") == {"contacts": 3, "outbox": 5}
