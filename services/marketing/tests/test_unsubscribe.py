"""The public links: signed tokens, one-click unsubscribe (GET and RFC 8058 POST) for the
token's own contact only, and double opt-in from the request to the confirmed subscription."""

from __future__ import annotations

import itertools
import re
import time
import uuid
from typing import Any
from urllib.parse import urljoin

import pytest
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from services.marketing import unsubscribe
from services.marketing.tests.conftest import row_counts
from services.marketing.tests.consent_helpers import (
    PROBLEM,
    SUBSCRIPTIONS,
    SUPPRESSIONS,
    add_contact,
    add_list,
    changes,
    ledger,
    mail_requests,
    status_of,
    subscribe,
    suppressions,
)
from shared.auth import Principal, issue_token
from shared.keys import OPT_IN_LINK, PURPOSES, UNSUBSCRIBE_LINK, purpose_key
from shared.page_checks import page_problems

PUBLIC = "https://crm.example.com"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TABLES = ("subscriptions", "consent_records", "suppressions", "outbox")


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def unsubscribe_key(settings: Any) -> bytes:
    return purpose_key(settings.jwt_secret, UNSUBSCRIBE_LINK)


def link_path(settings: Any, contact_id: str, email: str, list_id: str | None = None) -> str:
    url = unsubscribe.unsubscribe_url(settings, contact_id, email, list_id)
    return url.removeprefix(str(settings.extra["public_url"]).rstrip("/"))


def subscribed(client: Any, db: Any, email: str, *list_ids: str) -> str:
    contact_id = add_contact(db, email)
    for list_id in list_ids:
        assert subscribe(client, contact_id, list_id).status_code == 201
    return contact_id


def confirm_path(request: dict[str, Any]) -> str:
    """The confirmation link's path, as found in the body of the mail requested."""
    [line] = [line for line in request["body_text"].splitlines() if "/confirm/" in line]
    return line[line.index("/api/v1/") :]


# --- tokens ---------------------------------------------------------------------------------


def test_a_token_names_its_contact_address_and_list(settings):
    contact_id, list_id = str(uuid.uuid4()), str(uuid.uuid4())
    token = unsubscribe.unsubscribe_token(settings, contact_id, " Ada@Example.com", list_id)
    claim = unsubscribe.read_unsubscribe_token(settings, token)
    assert claim == unsubscribe.UnsubscribeClaim(contact_id, "ada@example.com", list_id)
    every = unsubscribe.unsubscribe_token(settings, contact_id, "ada@example.com")
    assert unsubscribe.read_unsubscribe_token(settings, every).list_id is None


def test_tokens_signed_compressed_by_earlier_versions_still_work(settings):
    contact_id, list_id = str(uuid.uuid4()), str(uuid.uuid4())
    signer = URLSafeSerializer(unsubscribe_key(settings), salt=unsubscribe.UNSUBSCRIBE_SALT)
    token = signer.dumps([contact_id, "ada@example.com", list_id])
    claim = unsubscribe.read_unsubscribe_token(settings, token)
    assert claim == unsubscribe.UnsubscribeClaim(contact_id, "ada@example.com", list_id)


def test_unsubscribe_url_points_at_the_public_address(settings):
    settings = settings.with_overrides(extra={**settings.extra, "public_url": PUBLIC + "/"})
    url = unsubscribe.unsubscribe_url(settings, str(uuid.uuid4()), "ada@example.com")
    assert url.startswith(f"{PUBLIC}/api/v1/unsubscribe/")


def forged_tokens(settings: Any, contact_id: str, list_id: str) -> list[str]:
    good = unsubscribe.unsubscribe_token(settings, contact_id, "ada@example.com", list_id)
    ours = URLSafeSerializer(unsubscribe_key(settings), salt=unsubscribe.UNSUBSCRIBE_SALT)
    claim = [contact_id, "ada@example.com", list_id]
    # The same salt and claim under the bare secret or another purpose's key (a CSAT,
    # tracking, opt-in or access key): a token of one purpose never verifies as another.
    foreign = [
        URLSafeSerializer(key, salt=unsubscribe.UNSUBSCRIBE_SALT).dumps(claim)
        for key in (
            settings.jwt_secret,
            *(purpose_key(settings.jwt_secret, p) for p in PURPOSES - {UNSUBSCRIBE_LINK}),
        )
    ]
    return [
        *foreign,
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),  # tampered signature
        good.replace(".", "", 1),
        "not-a-token",
        "x" * 2000,
        URLSafeSerializer("not our secret", salt=unsubscribe.UNSUBSCRIBE_SALT).dumps(
            [contact_id, "ada@example.com", list_id]
        ),
        URLSafeSerializer(unsubscribe_key(settings), salt="crm.csat").dumps(claim),
        ours.dumps([contact_id, "ada@example.com"]),
        ours.dumps(["not-an-id", "ada@example.com", list_id]),
        ours.dumps([contact_id, "no address", list_id]),
        ours.dumps([contact_id, "ada@example.com", "some list"]),
        unsubscribe.confirm_token(settings, contact_id, str(uuid.uuid4()), "ada@example.com"),
        issue_token(settings, Principal(contact_id, "admin", "ada@example.com")),
    ]


def test_forged_tokens_read_as_nothing(settings):
    for token in forged_tokens(settings, str(uuid.uuid4()), str(uuid.uuid4())):
        assert unsubscribe.read_unsubscribe_token(settings, token) is None


# --- unsubscribing by link ------------------------------------------------------------------


def test_a_get_of_the_link_changes_nothing(anonymous, client, db, settings):
    news = add_list(db, "News")
    ada = subscribed(client, db, "ada@example.com", news)
    path = link_path(settings, ada, "ada@example.com", news)
    before = row_counts(db, *TABLES)
    for query, offer in (("", ("News", False)), ("?scope=all", (None, True))):
        response = anonymous.get(path + query)  # a mail scanner fetching the link
        assert response.status_code == 200
        assert response.get_json() == {"status": "confirm", "list": offer[0], "all_lists": offer[1]}
        assert response.headers["Cache-Control"].startswith("no-store")
        page = anonymous.get(path + query, headers=BROWSER)
        assert page.status_code == 200 and page.mimetype == "text/html"
    assert row_counts(db, *TABLES) == before
    assert status_of(db, ada, news) == "subscribed" and suppressions(db) == []
    # The page's form, from the link with ?scope=all, posts to the link itself (no query).
    [action] = re.findall(r'<form method="post" action="([^"]+)">', page.get_data(as_text=True))
    target = urljoin(f"https://crm.example.com{path}?scope=all", action)
    assert target == f"https://crm.example.com{path}"
    assert anonymous.post(path, data={**ONE_CLICK, "scope": "all"}).status_code == 200
    assert status_of(db, ada, news) == "unsubscribed" and len(suppressions(db)) == 1


def test_the_link_unsubscribes_by_post_without_a_login_and_twice_is_fine(
    anonymous, client, db, settings
):
    news, offers = add_list(db, "News"), add_list(db, "Offers")
    ada = subscribed(client, db, "ada@example.com", news, offers)
    path = link_path(settings, ada, "ada@example.com", news)
    headers = {"User-Agent": "Mail/1.0", "X-Forwarded-For": "198.51.100.7"}
    response = anonymous.post(path, headers=headers, data=ONE_CLICK)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"status": "unsubscribed", "list": "News", "all_lists": False}
    assert response.headers["Cache-Control"].startswith("no-store")
    assert (status_of(db, ada, news), status_of(db, ada, offers)) == ("unsubscribed", "subscribed")
    line = ledger(db)[-1]
    assert (line.action, line.source, line.ip, line.user_agent) == (
        "unsubscribed",
        "unsubscribe_link",
        "198.51.100.7",
        "Mail/1.0",
    )
    event = changes(db)[-1]
    assert (event["contact_id"], event["list_id"], event["status"], event["source"]) == (
        ada,
        news,
        "unsubscribed",
        "unsubscribe_link",
    )
    before = row_counts(db, *TABLES)
    assert anonymous.post(path, data=ONE_CLICK).status_code == 200
    assert row_counts(db, *TABLES) == before
    assert suppressions(db) == []  # one list left: the address is not suppressed


def test_a_link_only_ever_unsubscribes_its_own_contact(anonymous, client, db, settings):
    news = add_list(db, "News")
    ada = subscribed(client, db, "ada@example.com", news)
    grace = subscribed(client, db, "grace@example.com", news)
    assert anonymous.post(link_path(settings, ada, "ada@example.com", news)).status_code == 200
    everywhere = {"scope": "all", **ONE_CLICK}
    assert (
        anonymous.post(link_path(settings, ada, "ada@example.com"), data=everywhere).status_code
        == 200
    )
    assert (status_of(db, ada, news), status_of(db, grace, news)) == ("unsubscribed", "subscribed")
    assert [row.email for row in suppressions(db)] == ["ada@example.com"]
    assert {event["contact_id"] for event in changes(db)[2:]} == {ada}


def test_forged_or_tampered_links_are_404_and_change_nothing(anonymous, client, db, settings):
    news = add_list(db, "News")
    ada = subscribed(client, db, "ada@example.com", news)
    before = row_counts(db, *TABLES)
    for token in forged_tokens(settings, ada, news):
        for response in (
            anonymous.get(f"/api/v1/unsubscribe/{token}"),
            anonymous.post(f"/api/v1/unsubscribe/{token}", data=ONE_CLICK),
        ):
            assert response.status_code == 404 and response.mimetype == PROBLEM
            assert set(response.get_json()) <= {"type", "title", "status", "detail"}
    assert row_counts(db, *TABLES) == before
    assert status_of(db, ada, news) == "subscribed"


def test_scope_all_leaves_every_list_and_suppresses_the_address(anonymous, client, db, settings):
    news, offers = add_list(db, "News"), add_list(db, "Offers")
    ada = subscribed(client, db, "Ada@Example.com", news, offers)
    response = anonymous.post(
        link_path(settings, ada, "Ada@Example.com", news), data={"scope": "all", **ONE_CLICK}
    )
    assert response.get_json() == {"status": "unsubscribed", "list": None, "all_lists": True}
    assert {status_of(db, ada, news), status_of(db, ada, offers)} == {"unsubscribed"}
    [held] = suppressions(db)
    assert (held.email, held.reason, held.source) == (
        "ada@example.com",
        "unsubscribed",
        "unsubscribe_link",
    )
    last = changes(db)[-1]
    assert (last["list_id"], last["all_lists"], last["status"], last["email"]) == (
        None,
        True,
        "unsubscribed",
        "ada@example.com",
    )
    before = row_counts(db, *TABLES)
    assert anonymous.post(link_path(settings, ada, "ada@example.com")).status_code == 200
    assert row_counts(db, *TABLES) == before


def test_an_unsubscribe_link_for_a_list_never_joined_records_the_refusal(anonymous, db, settings):
    news, ada = add_list(db, "News"), add_contact(db)
    assert anonymous.post(link_path(settings, ada, "ada@example.com", news)).status_code == 200
    assert status_of(db, ada, news) == "unsubscribed"


def test_rfc_8058_one_click_post_unsubscribes(anonymous, client, db, settings):
    news = add_list(db, "News")
    ada = subscribed(client, db, "ada@example.com", news)
    path = link_path(settings, ada, "ada@example.com", news)
    response = anonymous.post(path, data=ONE_CLICK)
    assert response.status_code == 200 and response.get_json()["status"] == "unsubscribed"
    assert status_of(db, ada, news) == "unsubscribed"
    assert anonymous.post(path).status_code == 200  # no body: still fine
    assert anonymous.post(path, json={"scope": "all"}).get_json()["all_lists"] is True
    assert [row.reason for row in suppressions(db)] == ["unsubscribed"]


@pytest.mark.parametrize(
    "send",
    [
        {"data": {"List-Unsubscribe": "Maybe"}},
        {"data": {**ONE_CLICK, "extra": "1"}},
        {"data": {"scope": "everything"}},
        {"json": {"scope": "all", "why": "spam"}},
        {"json": ["all"]},
        {"data": "List-Unsubscribe=One-Click", "content_type": "text/plain"},
    ],
)
def test_a_bad_one_click_body_is_refused_and_changes_nothing(anonymous, client, db, settings, send):
    news = add_list(db, "News")
    ada = subscribed(client, db, "ada@example.com", news)
    before = row_counts(db, *TABLES)
    response = anonymous.post(link_path(settings, ada, "ada@example.com", news), **send)
    assert response.status_code in (400, 415, 422) and response.mimetype == PROBLEM
    assert row_counts(db, *TABLES) == before


def test_a_browser_gets_an_accessible_confirmation_page_and_a_scanner_changes_nothing(
    anonymous, client, db, settings
):
    news = add_list(db, "News <b>")
    ada = subscribed(client, db, "ada@example.com", news)
    path = link_path(settings, ada, "ada@example.com", news)
    before = row_counts(db, *TABLES)
    assert anonymous.head(path).status_code == 200
    page = anonymous.get(path, headers=BROWSER)
    assert row_counts(db, *TABLES) == before
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page_problems(html, page.headers["Content-Security-Policy"]) == []
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"].startswith("no-store")
    assert "News &lt;b&gt;" in html and "<b>" not in html.split("</style>")[1]
    assert '<form method="post" action="' in html and 'name="scope" value="all"' in html
    assert "ada@example.com" not in html
    assert anonymous.get(path + "?utm=1").status_code == 422
    # the page's own form, as a browser posts it
    done = anonymous.post(path, data=ONE_CLICK, headers=BROWSER)
    assert done.status_code == 200 and done.mimetype == "text/html"
    assert page_problems(done.get_data(as_text=True), done.headers["Content-Security-Policy"]) == []
    assert "You are unsubscribed" in done.get_data(as_text=True)
    assert status_of(db, ada, news) == "unsubscribed"


def test_a_browser_following_a_bad_link_gets_a_page_saying_so(anonymous):
    for method in (anonymous.get, anonymous.post):
        page = method("/api/v1/unsubscribe/not-a-token", headers=BROWSER)
        assert page.status_code == 404 and page.mimetype == "text/html"
        assert (
            page_problems(page.get_data(as_text=True), page.headers["Content-Security-Policy"])
            == []
        )


def test_double_opt_in_from_request_to_confirmed_subscription(anonymous, client, db, settings):
    letters, ada = add_list(db, "Letters", double_opt_in=True), add_contact(db, "Ada@Example.com")
    body = subscribe(client, ada, letters, source="form").get_json()
    assert body["status"] == "pending"
    [request] = mail_requests(db)
    assert (request["to"], request["contact_id"], request["category"]) == (
        "Ada@Example.com",
        ada,
        "transactional",
    )
    assert "Letters" in request["subject"]
    path = confirm_path(request)
    assert f"{settings.extra['public_url'].rstrip('/')}{path}" in request["body_text"]

    before = row_counts(db, *TABLES)
    offer = anonymous.get(path)  # what a mail scanner fetches: nothing changes
    assert offer.get_json() == {"status": "confirm", "list": "Letters"}
    assert row_counts(db, *TABLES) == before and status_of(db, ada, letters) == "pending"
    response = anonymous.post(path)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"status": "subscribed", "list": "Letters"}
    row = client.get(f"{SUBSCRIPTIONS}/{body['id']}").get_json()
    assert (row["status"], row["source"]) == ("subscribed", "double_opt_in")
    assert row["consented_at"] is not None
    pending, confirmed = changes(db)
    assert (pending["status"], pending["double_opt_in"]) == ("pending", False)
    assert (confirmed["status"], confirmed["previous_status"]) == ("subscribed", "pending")
    assert (confirmed["source"], confirmed["double_opt_in"]) == ("double_opt_in", True)
    assert [line.action for line in ledger(db)] == ["pending", "subscribed"]

    before = row_counts(db, *TABLES)
    assert anonymous.post(path).status_code == 200  # twice is fine
    assert row_counts(db, *TABLES) == before


def test_asking_for_double_opt_in_works_on_any_list(client, db):
    news, ada = add_list(db, "News"), add_contact(db)
    assert subscribe(client, ada, news, double_opt_in=True).get_json()["status"] == "pending"
    assert len(mail_requests(db)) == 1


def test_a_new_confirmation_mail_voids_the_older_link(anonymous, client, db):
    letters, ada = add_list(db, "Letters", double_opt_in=True), add_contact(db)
    subscribe(client, ada, letters)
    subscribe(client, ada, letters)  # "I got no mail": sent again
    old, new = (confirm_path(request) for request in mail_requests(db))
    assert anonymous.get(old).status_code == 404
    assert anonymous.post(old).status_code == 404
    assert status_of(db, ada, letters) == "pending"
    assert anonymous.post(new).status_code == 200
    assert status_of(db, ada, letters) == "subscribed"


def test_a_confirmation_link_after_unsubscribing_is_void(anonymous, client, db):
    letters, ada = add_list(db, "Letters", double_opt_in=True), add_contact(db)
    subscribe(client, ada, letters)
    path = confirm_path(mail_requests(db)[0])
    client.post(
        SUBSCRIPTIONS, json={"contact_id": ada, "list_id": letters, "status": "unsubscribed"}
    )
    assert anonymous.get(path).status_code == 404
    assert anonymous.post(path).status_code == 404
    assert status_of(db, ada, letters) == "unsubscribed"


def test_bad_or_expired_confirmation_links_are_404(anonymous, client, db, settings, monkeypatch):
    letters, ada = add_list(db, "Letters", double_opt_in=True), add_contact(db)
    row = subscribe(client, ada, letters).get_json()
    with monkeypatch.context() as patch:  # signed in 2023: long expired
        patch.setattr(time, "time", lambda: 1_700_000_000.0)
        expired = unsubscribe.confirm_token(settings, row["id"], str(uuid.uuid4()), "a@b.c")
    foreign = URLSafeTimedSerializer("not ours", salt=unsubscribe.CONFIRM_SALT)
    # The genuine claim (its nonce is the mailed one) under the bare secret or another
    # purpose's key: only the opt-in key verifies.
    genuine = confirm_path(mail_requests(db)[0]).rpartition("/")[2]
    claim = URLSafeTimedSerializer(b"", salt=unsubscribe.CONFIRM_SALT).loads_unsafe(genuine)[1]
    other_keys = (purpose_key(settings.jwt_secret, p) for p in PURPOSES - {OPT_IN_LINK})
    tokens = [
        *(
            URLSafeTimedSerializer(key, salt=unsubscribe.CONFIRM_SALT).dumps(claim)
            for key in (settings.jwt_secret, *other_keys)
        ),
        expired,
        foreign.dumps([row["id"], str(uuid.uuid4()), "ada@example.com"]),
        unsubscribe.unsubscribe_token(settings, ada, "ada@example.com", letters),
        unsubscribe.confirm_token(settings, str(uuid.uuid4()), str(uuid.uuid4()), "a@b.c"),
        "nonsense",
    ]
    before = row_counts(db, *TABLES)
    for token, method in itertools.product(tokens, (anonymous.get, anonymous.post)):
        response = method(f"{SUBSCRIPTIONS}/confirm/{token}")
        assert response.status_code == 404 and response.mimetype == PROBLEM
    assert row_counts(db, *TABLES) == before


def test_an_address_that_left_every_list_comes_back_only_by_confirming(
    anonymous, client, db, settings
):
    news, ada = add_list(db, "News"), add_contact(db)
    anonymous.post(link_path(settings, ada, "ada@example.com"), data={"scope": "all"})
    assert [row.reason for row in suppressions(db)] == ["unsubscribed"]
    body = subscribe(client, ada, news).get_json()
    assert body["status"] == "pending"  # single opt-in list, but the person said no to all
    assert anonymous.post(confirm_path(mail_requests(db)[0])).status_code == 200
    assert status_of(db, ada, news) == "subscribed" and suppressions(db) == []
    assert client.get(f"{SUPPRESSIONS}/ada@example.com").status_code == 404


def test_a_browser_confirms_a_double_opt_in_on_a_page_a_scanner_cannot_press(anonymous, client, db):
    letters, ada = add_list(db, "Letters", double_opt_in=True), add_contact(db)
    subscribe(client, ada, letters)
    path = confirm_path(mail_requests(db)[0])
    before = row_counts(db, *TABLES)
    page = anonymous.get(path, headers=BROWSER)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert page_problems(html, page.headers["Content-Security-Policy"]) == []
    assert "Letters" in html and '<form method="post"' in html
    assert row_counts(db, *TABLES) == before and status_of(db, ada, letters) == "pending"
    action = re.search(r'action="([^"]+)"', html)[1]
    done = anonymous.post(path.rsplit("/", 1)[0] + "/" + action, headers=BROWSER)
    assert done.status_code == 200 and "You are subscribed" in done.get_data(as_text=True)
    assert status_of(db, ada, letters) == "subscribed"
