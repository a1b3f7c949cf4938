"""The public flows abused, through the running system: links, tracking, forms, webhooks.

The only permission of a public link is its signed token: a token for one contact never
unsubscribes another, and a token altered, re-signed with another key or of another kind
is a 404. The click redirect leads only to the URL that was in the sent email (never an
open redirect). The lead form refuses oversize and strict-field abuse and counts posts per
real client, whatever X-Forwarded-For says. Webhooks never reach internal addresses
(API7 server-side request forgery).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import requests
from itsdangerous import URLSafeSerializer

from services.marketing import unsubscribe
from services.notifications import tracking, webhooks
from services.notifications.models import tracked_link_id
from services.support import csat
from shared.config import load_settings
from shared.page_checks import page_problems
from tests.crm_run import eventually
from tests.security.conftest import (
    JWT_SECRET,
    TIMEOUT,
    Caller,
    System,
    assert_problem,
    mail_to,
    unb64url,
)

pytestmark = pytest.mark.xdist_group("crm-run")


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def made(answer: Any) -> dict[str, Any]:
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def _settings(secret: str = JWT_SECRET):
    return load_settings("marketing").with_overrides(jwt_secret=secret)


def _resigned_payload(token: str, payload: str) -> str:
    """A token whose payload is swapped for another, keeping the original signature."""
    _original, signature = token.rsplit(".", 1)
    return f"{payload}.{signature}"


# --- unsubscribe links ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def subscribed(system: System, users: dict[str, Caller]) -> dict[str, Any]:
    """Two contacts, each subscribed to one list, known to marketing."""
    admin, marketing = users["admin"], users["marketing"]
    people = {}
    for name in ("alice", "bob"):
        body = {"first_name": name, "email": f"{name}-{uuid.uuid4().hex[:6]}@customer.example"}
        people[name] = made(admin.post(f"{system.api}/contacts", json=body))
    news = made(marketing.post(f"{system.api}/subscription-lists", json={"name": "News"}))
    for person in people.values():
        body = {"contact_id": person["id"], "list_id": news["id"], "status": "subscribed"}
        answer = eventually(
            lambda body=body: marketing.post(f"{system.api}/subscriptions", json=body),
            lambda answer: answer.status_code in (200, 201),
        )
        assert answer.status_code in (200, 201), answer.text
    return {"list": news, **people}


def _status(system: System, caller: Caller, contact_id: str, list_id: str) -> str:
    params = {"contact_id": contact_id, "list_id": list_id}
    [row] = caller.get(f"{system.api}/subscriptions", params=params).json()["items"]
    return row["status"]


def test_an_unsubscribe_token_never_unsubscribes_anyone_but_its_contact(system, users, subscribed):
    marketing, news = users["marketing"], subscribed["list"]
    alice, bob = subscribed["alice"], subscribed["bob"]
    token = unsubscribe.unsubscribe_token(_settings(), alice["id"], alice["email"], news["id"])
    bobs = unsubscribe.unsubscribe_token(_settings(), bob["id"], bob["email"], news["id"])
    url = f"{system.api}/unsubscribe"
    forged = {
        "payload-swapped": _resigned_payload(token, bobs.rsplit(".", 1)[0]),
        "other-key": unsubscribe.unsubscribe_token(
            _settings("another-secret-" + "k" * 40), bob["id"], bob["email"], news["id"]
        ),
        "other-salt": URLSafeSerializer(JWT_SECRET, salt="crm.tracking.open").dumps(
            [bob["id"], bob["email"], news["id"]]
        ),
        "confirm-kind": unsubscribe.confirm_token(_settings(), news["id"], bob["id"], bob["email"]),
        "truncated": bobs[:-3],
        "huge": "A" * 1500,
    }
    for kind, bad in forged.items():
        for method in ("GET", "POST"):
            answer = requests.request(method, f"{url}/{bad}", timeout=TIMEOUT)
            assert answer.status_code == 404, (kind, method, answer.text[:200])
            assert_problem(answer, 404)
    assert _status(system, marketing, bob["id"], news["id"]) == "subscribed"

    # A GET (a mail scanner prefetching, a link preview, a browser) only asks to confirm.
    for accept in ("*/*", "text/html,*/*;q=0.8"):
        answer = requests.get(f"{url}/{token}", headers={"Accept": accept}, timeout=TIMEOUT)
        assert answer.status_code == 200
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert _status(system, marketing, alice["id"], news["id"]) == "subscribed"
    for _replayed in range(2):
        answer = requests.post(f"{url}/{token}", data=ONE_CLICK, timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.json()["status"] == "unsubscribed"
    assert _status(system, marketing, alice["id"], news["id"]) == "unsubscribed"
    assert _status(system, marketing, bob["id"], news["id"]) == "subscribed"


def test_an_unsubscribe_link_takes_no_oversize_or_stray_input(system, subscribed):
    alice, news = subscribed["alice"], subscribed["list"]
    token = unsubscribe.unsubscribe_token(_settings(), alice["id"], alice["email"], news["id"])
    url = f"{system.api}/unsubscribe/{token}"
    assert_problem(requests.post(url, data="x" * 5000, timeout=TIMEOUT), 413, 415)
    big_form = {"scope": "all", "List-Unsubscribe": "One-Click" + " " * 5000}
    assert_problem(requests.post(url, data=big_form, timeout=TIMEOUT), 413)
    assert_problem(requests.post(url, data={"contact_id": str(uuid.uuid4())}, timeout=TIMEOUT), 422)
    assert_problem(requests.get(url, params={"contact_id": "x"}, timeout=TIMEOUT), 422)


# --- tracking ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked_mail(system: System, users: dict[str, Caller]) -> dict[str, Any]:
    """An email sent through the system with one link; its tracked click and pixel URLs."""
    address = f"reader-{uuid.uuid4().hex[:6]}@customer.example"
    body = {
        "to": address,
        "subject": "Your guide",
        "body_text": "Read https://docs.example.com/guide",
        "body_html": '<html><body><a href="https://docs.example.com/guide">guide</a></body></html>',
    }
    queued = users["support"].post(f"{system.api}/messages", json=body)
    assert queued.status_code in (201, 202), queued.text
    [letter] = eventually(lambda: mail_to(system, address), lambda found: len(found) >= 1)
    html = letter.get_body(("html",)).get_content()
    [click] = re.findall(r'href="(http[^"]*/t/c/[^"]+)"', html)
    [pixel] = re.findall(r'src="(http[^"]*/t/o/[^"]+\.gif)"', html)
    return {"message": queued.json(), "click": click, "pixel": pixel}


def _message(system: System, users, message_id: str) -> dict[str, Any]:
    return users["support"].get(f"{system.api}/messages/{message_id}").json()


def test_the_click_redirect_leads_only_to_the_url_in_the_sent_email(system, users, tracked_mail):
    click = tracked_mail["click"]
    token = click.rsplit("/", 1)[1]
    followed = requests.get(click, allow_redirects=False, timeout=TIMEOUT)
    assert followed.status_code == 302
    assert followed.headers["Location"] == "https://docs.example.com/guide"

    message_id = tracked_mail["message"]["id"]
    evil = URLSafeSerializer("another-secret-" + "k" * 40, salt="crm.tracking.click")
    payload = evil.dumps([message_id, "https://evil.example/phish"]).rsplit(".", 1)[0]
    attempts = {
        "query-url": f"{click}?url=https://evil.example/phish",
        "query-next": f"{click}?next=//evil.example",
        "payload-swapped": f"{system.base}/t/c/{_resigned_payload(token, payload)}",
        "other-key": f"{system.base}/t/c/{evil.dumps([message_id, 'https://evil.example/'])}",
        # signed with the system's own key, but the message never linked there
        "signed-not-stored": f"{system.base}/t/c/"
        + tracking.click_token(_settings(), tracked_link_id(message_id, "https://evil.example/")),
        "open-token-as-click": tracked_mail["pixel"].replace("/t/o/", "/t/c/")[: -len(".gif")],
        "garbage": f"{system.base}/t/c/..%2F..%2Fevil.example",
        "scheme-relative": f"{system.base}/t/c///evil.example/",
    }
    for kind, url in attempts.items():
        answer = requests.get(url, allow_redirects=False, timeout=TIMEOUT)
        assert answer.status_code in (400, 404), (kind, answer.status_code, answer.text[:200])
        assert "Location" not in answer.headers, kind
    assert "evil.example" not in str(_message(system, users, message_id))


def test_a_forged_open_pixel_answers_the_gif_and_counts_nothing(system, users, tracked_mail):
    message_id = tracked_mail["message"]["id"]
    pixel = tracked_mail["pixel"]
    token = pixel.rsplit("/", 1)[1].removesuffix(".gif")
    other = URLSafeSerializer("another-secret-" + "k" * 40, salt="crm.tracking.open")
    forged = [
        f"{system.base}/t/o/{other.dumps(message_id)}.gif",
        f"{system.base}/t/o/{_resigned_payload(token, 'IjAwMDAwMDAwIg')}.gif",
        f"{system.base}/t/o/{tracked_mail['click'].rsplit('/', 1)[1]}.gif",
    ]
    for url in forged:
        answer = requests.get(url, timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/gif"
    assert unb64url(token.split(".")[0])  # the genuine token names the message
    assert (_message(system, users, message_id).get("open_count") or 0) == 0
    assert requests.get(pixel, timeout=TIMEOUT).status_code == 200
    counted = eventually(
        lambda: _message(system, users, message_id), lambda m: (m.get("open_count") or 0) == 1
    )
    assert counted["open_count"] == 1


# --- the CSAT link --------------------------------------------------------------------------

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_the_csat_link_is_a_strict_page_that_records_only_a_post_once(system, users):
    support = users["support"]
    body = {"subject": "Printer on fire", "requester": {"email": "kay@customer.example"}}
    ticket = made(support.post(f"{system.api}/tickets", json=body))
    made(support.patch(f"{system.api}/tickets/{ticket['id']}", json={"status": "resolved"}))
    settings = load_settings("support").with_overrides(jwt_secret=JWT_SECRET)
    link = f"{system.api}/csat/{csat.csat_token(settings, ticket['id'])}"
    rating = f"{system.api}/tickets/{ticket['id']}/csat"

    for url in (link, f"{link}?rating=5"):  # a mail scanner following the email's links
        page = requests.get(url, headers=BROWSER, timeout=TIMEOUT)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        policy = page.headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'none'") and "script-src" not in policy
        assert page_problems(page.text, policy) == []
    assert support.get(rating).status_code == 404  # nothing recorded
    first = requests.post(link, data={"rating": "5"}, headers=BROWSER, timeout=TIMEOUT)
    assert first.status_code == 200 and "Thank you" in first.text
    second = requests.post(link, data={"rating": "1"}, headers=BROWSER, timeout=TIMEOUT)
    assert second.status_code == 409 and "already been rated" in second.text
    assert support.get(rating).json()["rating"] == 5


# --- the lead form -------------------------------------------------------------------------


def test_the_lead_form_refuses_oversize_and_server_kept_fields(system, users):
    url = f"{system.api}/forms/leads"
    base = {"first_name": "Spam", "email": f"spam-{uuid.uuid4().hex[:6]}@x.example"}
    assert_problem(requests.post(url, data={**base, "notes": "x" * 20_000}, timeout=TIMEOUT), 413)
    for field, value in (
        ("owner_id", users["sales"].id),
        ("score", "100"),
        ("status", "qualified"),
        ("id", str(uuid.uuid4())),
    ):
        answer = requests.post(url, data={**base, field: value}, timeout=TIMEOUT)
        assert_problem(answer, 422)
    trapped = requests.post(url, data={**base, "nickname": "bot"}, timeout=TIMEOUT)
    assert trapped.status_code == 202
    found = users["admin"].get(f"{system.api}/leads", params={"email": base["email"]})
    assert found.json()["items"] == []


def test_the_lead_form_limit_counts_the_real_client_not_x_forwarded_for(system, users):
    url = f"{system.api}/forms/leads"
    answers = []
    for n in range(12):
        body = {"first_name": "Flood", "email": f"flood-{n}-{uuid.uuid4().hex[:4]}@x.example"}
        spoof = {"X-Forwarded-For": f"203.0.113.{n}", "X-Real-IP": f"198.51.100.{n}"}
        answers.append(requests.post(url, data=body, headers=spoof, timeout=TIMEOUT))
    statuses = [answer.status_code for answer in answers]
    assert 429 in statuses, statuses
    limited = answers[statuses.index(429)]
    assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) > 0


# --- webhooks (API7: server-side request forgery) --------------------------------------------

INTERNAL_URLS = [
    "https://169.254.169.254/latest/meta-data/",
    "https://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
    "https://0xa9fea9fe/",
    "https://0251.0376.0251.0376/",
    "https://[::ffff:169.254.169.254]/",
    "https://[fe80::1]/",
    "https://10.0.0.1/admin",
    "https://172.16.0.1/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
    "https://0.0.0.0:8001/api/v1/contacts",
    "https://[::]/",
    "https://224.0.0.1/",
    "https://127.0.0.1:8001/api/v1/contacts",  # the CRM's own services listen on loopback
    "http://localhost:15672/api/users",
    "https://[::1]/",
    "http://169.254.169.254/",
    "http://10.0.0.1/",
    "http://0.0.0.0:8001/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:5672/",
    "https://user:pass@hooks.example.com/",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_a_webhook_to_an_internal_address_is_refused(system, users, url):
    admin = users["admin"]
    body = {"url": url, "event_types": ["*"], "active": False}
    answer = assert_problem(admin.post(f"{system.api}/webhooks", json=body), 422)
    assert "url" in answer["errors"]
    listed = admin.get(f"{system.api}/webhooks", params={"limit": 200}).json()["items"]
    assert url not in {webhook["url"] for webhook in listed}


def test_a_webhook_cannot_be_pointed_inside_later(system, users):
    admin = users["admin"]
    body = {"url": "https://hooks.example.com/crm", "event_types": ["deal.won"], "active": False}
    hook = made(admin.post(f"{system.api}/webhooks", json=body))
    url = f"{system.api}/webhooks/{hook['id']}"
    assert_problem(admin.patch(url, json={"url": "https://169.254.169.254/"}), 422)
    assert admin.get(url).json()["url"] == body["url"]


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "2852039166", "10.1.2.3", "::ffff:10.0.0.1", "0.0.0.0"]
)
def test_a_delivery_is_not_sent_to_a_host_that_resolves_inside(host):
    assert webhooks.host_problem(host, resolve=True) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.1.2.3", "::ffff:127.0.0.1"])
def test_a_delivery_to_loopback_is_refused_unless_the_operator_opens_it(host):
    assert "internal address" in webhooks.host_problem(host, resolve=True)
    loopback = webhooks.allowed_networks(["127.0.0.0/8", "::1/128"])
    assert webhooks.host_problem(host, resolve=True, allowed=loopback) is None


def test_a_public_host_may_be_sent_to():
    assert webhooks.host_problem("93.184.215.14", resolve=True) is None
