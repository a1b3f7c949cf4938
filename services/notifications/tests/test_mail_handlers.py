"""Mail requests and the contact replica: rules directly, delivery through the real broker and a
real SMTP server (exactly one copy, even when the request comes twice or the worker dies)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications.app import make_database
from services.notifications.handlers import handlers as service_handlers
from services.notifications.mail_handlers import handlers
from services.notifications.mailer import Mailer, parse_smtp_url
from services.notifications.models import (
    Click,
    ContactAddress,
    Message,
    Suppression,
    Template,
    Webhook,
    WebhookDelivery,
)
from services.notifications.outcomes import SENDING_LEASE
from services.notifications.sender import send_due
from services.notifications.sending import derived_message_id, queue_message
from shared.bus import PermanentError
from shared.deadletters import publish_raw
from shared.events import utcnow
from shared.testing import (
    every_value,
    handle_event,
    make_event,
    outbox_events,
    row_counts,
    wait_until,
)
from shared.worker import ServiceWorker, Timer

ADA = "00000000-0000-4000-8000-00000000ada0"
GRACE = "00000000-0000-4000-8000-00000000a0ac"
CAMPAIGN = "00000000-0000-4000-8000-0000000000ca"
HER_DATA = ("Ada", "Lovelace", "ada@example.com", "Analytical", "Bernoulli")


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def handle(db: Any, event_type: str, data: dict[str, Any], **fields: Any) -> Any:
    event = make_event(event_type, data, **fields)
    handle_event(db, handlers(None), event)  # type: ignore[arg-type]
    return event


def contact(db: Any, contact_id: str, version: int, **fields: Any) -> None:
    data = {"id": contact_id, "first_name": "Ada", "last_name": "Lovelace"}
    data["email"] = "ada@example.com"
    data.update(fields)
    handle(db, "contact.updated", data, aggregate_id=contact_id, aggregate_version=version)


def messages(db: Any) -> list[Message]:
    with db.session() as session:
        return list(session.scalars(sa.select(Message).order_by(Message.created_at)))


def address_of(db: Any, contact_id: str) -> ContactAddress | None:
    with db.session() as session:
        return session.get(ContactAddress, contact_id)


# --- email.requested ------------------------------------------------------------------------


def test_a_request_queues_one_message_named_after_the_event(db):
    data = {
        "to": "ada@example.com",
        "subject": "Spring offer",
        "body_text": "10% off",
        "body_html": "<p>10% off</p>",
        "category": "marketing",
        "campaign_id": CAMPAIGN,
        "headers": {"List-Unsubscribe": "<https://crm.example.com/u/x>"},
    }
    event = make_event("email.requested", data, source="marketing")
    handle_event(db, handlers(None), event)  # type: ignore[arg-type]
    handle_event(db, handlers(None), event)  # the inbox missed it: still one message
    [message] = messages(db)
    assert message.id == derived_message_id(event, "ada@example.com")
    assert (message.status, message.category, message.campaign_id) == (
        "queued",
        "marketing",
        CAMPAIGN,
    )
    assert (message.cause_event_id, message.cause_event_type) == (event.id, "email.requested")
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_message_id_named_by_two_requests_is_one_message(db):
    message_id = str(uuid.uuid4())
    base = {"message_id": message_id, "to": "ada@example.com", "body_text": "x"}
    handle(db, "email.requested", {**base, "subject": "first"})
    handle(db, "email.requested", {**base, "subject": "second", "template": "gone"})
    [message] = messages(db)
    assert message.id == message_id and message.subject == "first"


def test_a_contact_is_reached_at_the_address_the_replica_holds(db):
    contact(db, ADA, 1)
    handle(db, "email.requested", {"contact_id": ADA, "subject": "Hi", "body_text": "Hello"})
    [message] = messages(db)
    assert (message.to_address, message.contact_id) == ("ada@example.com", ADA)


@pytest.mark.parametrize(
    "data",
    [
        # (A contact not known yet is no failure: the request waits for it, test_waiting.)
        {"contact_id": GRACE, "subject": "Hi", "body_text": "x"},
        {"subject": "Hi", "body_text": "x"},
        {"contact_id": "not-a-uuid", "subject": "Hi", "body_text": "x"},
        {"to": "not an address", "subject": "Hi", "body_text": "x"},
        {"to": 42, "subject": "Hi", "body_text": "x"},
        {"to": "ada@example.com", "subject": "Hi\r\nBcc: eve@example.com", "body_text": "x"},
        {"to": "ada@example.com", "body_text": "no subject"},
        {"to": "ada@example.com", "subject": "Hi", "body_text": "x", "headers": ["Bcc: e"]},
        {"to": "ada@example.com", "template": "welcome", "variables": "name=Ada"},
        {"to": "ada@example.com", "template": "no such template"},
        {"to": "ada@example.com", "subject": "Hi", "body_text": "x", "category": "spam"},
        {"to": "ada@example.com", "subject": "Hi", "body_text": "x", "message_id": "m-1"},
        {"to": "ada@example.com", "subject": "Hi", "body_text": "x", "from_address": "news"},
        {"to": "a@example.com", "subject": "Hi", "body_text": "x", "from_address": "a@b.c\nBcc: e"},
        {"to_user_id": "not-a-uuid", "subject": "Hi", "body_text": "x"},
    ],
)
def test_a_request_that_can_never_be_sent_is_a_permanent_failure(db, data):
    contact(db, GRACE, 1, email=None)  # a contact without an address
    with pytest.raises(PermanentError):
        handle(db, "email.requested", data)
    assert row_counts(db, "messages") == {"messages": 0}


def test_a_campaign_sender_is_the_messages_from_address(db):
    sender = "Shop News <news@shop.example>"
    data = {"to": "ada@example.com", "subject": "Hi", "body_text": "x", "from_address": sender}
    handle(db, "email.requested", data)
    [message] = messages(db)
    assert message.from_address == sender


def test_a_staff_user_is_reached_at_the_address_the_user_replica_holds(db, app):
    owner = str(uuid.uuid4())
    handle_event(db, all_handlers(app), make_event_for_user(owner))
    handle(db, "email.requested", {"to_user_id": owner, "subject": "SLA", "body_text": "x"})
    [message] = messages(db)
    assert message.to_address == "owner@crm.example"


def test_a_request_for_a_user_without_an_address_is_skipped_not_dead_lettered(db, app):
    inactive = str(uuid.uuid4())
    handle_event(db, all_handlers(app), make_event_for_user(inactive, active=False))
    for user_id in (inactive, str(uuid.uuid4())):  # inactive, and never heard of
        handle(db, "email.requested", {"to_user_id": user_id, "subject": "S", "body_text": "x"})
    assert row_counts(db, "messages") == {"messages": 0}


def test_a_redacted_request_is_skipped_not_dead_lettered(db):
    handle(db, "email.requested", {"campaign_id": CAMPAIGN, "redacted": True})
    assert row_counts(db, "messages") == {"messages": 0}


def make_event_for_user(user_id: str, **fields: Any) -> Any:
    data = {"id": user_id, "email": "owner@crm.example", "name": "Olive", "active": True}
    return make_event("user.created", {**data, **fields}, aggregate_id=user_id, aggregate_version=1)


def all_handlers(app: Any) -> Any:
    return service_handlers(app.extensions["crm.settings"])


def add_template(db: Any, **fields: Any) -> str:
    values: dict[str, Any] = {
        "name": "welcome",
        "subject": "Welcome, {{ contact.name }}",
        "body_text": "Hello {{ contact.name }}, your plan is {{ plan }}.",
        "body_html": "<p>Hello {{ contact.name }}, your plan is <b>{{ plan }}</b>.</p>",
        "category": "marketing",
    }
    with db.session() as session:
        template = Template(**{**values, **fields})
        session.add(template)
        session.flush()
        return template.id


def test_a_template_is_rendered_with_the_variables_and_the_contact(db):
    template_id = add_template(db)
    contact(db, ADA, 1)
    variables = {"plan": "<Gold>"}
    handle(
        db, "email.requested", {"contact_id": ADA, "template": "welcome", "variables": variables}
    )
    handle(db, "email.requested", {"to": "grace@example.com", "template": template_id,
                                   "variables": {"plan": "Basic", "contact": {"name": "Grace"}},
                                   "category": "transactional"})  # fmt: skip
    ada, grace = messages(db)
    assert ada.subject == "Welcome, Ada Lovelace" and ada.template_id == template_id
    assert ada.body_text == "Hello Ada Lovelace, your plan is <Gold>."
    assert ada.body_html == "<p>Hello Ada Lovelace, your plan is <b>&lt;Gold&gt;</b>.</p>"
    assert ada.category == "marketing" and grace.category == "transactional"
    assert grace.subject == "Welcome, Grace"


def test_a_missing_template_variable_is_a_permanent_failure_not_a_blank(db):
    add_template(db)
    with pytest.raises(PermanentError, match="plan"):
        handle(db, "email.requested", {"to": "ada@example.com", "template": "welcome"})
    assert row_counts(db, "messages") == {"messages": 0}


def test_marketing_to_a_suppressed_address_is_recorded_failed_and_never_sent(db, settings):
    with db.session() as session:
        session.add(Suppression(email_key="ada@example.com", reason="unsubscribed"))
    data = {"to": "Ada@example.com", "subject": "Offer", "body_text": "x", "category": "marketing"}
    handle(db, "email.requested", data)
    [message] = messages(db)
    assert message.status == "failed" and message.last_error == "suppressed: unsubscribed"
    assert [kind for kind, _ in outbox_events(db)] == ["email.failed"]
    assert send_due(db, settings, Mailer(parse_smtp_url("smtp://127.0.0.1:1"))) == 0


# --- the contact replica --------------------------------------------------------------------


def test_the_replica_keeps_the_newest_address_and_name(db):
    contact(db, ADA, 2, email="ada@new.example.com")
    contact(db, ADA, 1, email="ada@old.example.com")  # late and older: ignored
    contact(db, ADA, 2, email="ada@same.example.com")  # same version: ignored
    held = address_of(db, ADA)
    assert (held.email, held.name, held.version) == ("ada@new.example.com", "Ada Lovelace", 2)
    contact(db, ADA, 3, email="not-an-address", first_name=" Augusta ", last_name=None)
    held = address_of(db, ADA)
    assert (held.email, held.name, held.version) == (None, "Augusta", 3)
    handle(db, "contact.updated", {"id": ADA, "redacted": True}, aggregate_version=9)
    assert address_of(db, ADA).version == 3


def test_a_created_contact_is_kept_too(db):
    data = {"id": ADA, "first_name": "Ada", "last_name": "", "email": "ada@example.com"}
    handle(db, "contact.created", data, aggregate_id=ADA, aggregate_version=1)
    assert address_of(db, ADA).name == "Ada"


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("contact.updated", {"id": "42"}),
        ("contact.merged", {"id": ADA}),
        ("contact.merged", {"id": ADA, "duplicate_id": None}),
        ("contact.erased", {"id": ADA, "merged_ids": "x"}),
        ("contact.erased", {"id": ADA, "merged_ids": [7]}),
        ("contact.erased", {"id": None}),
    ],
)
def test_contact_events_missing_what_they_need_are_permanent_failures(db, event_type, data):
    with pytest.raises(PermanentError):
        handle(db, event_type, data)


def queue(db: Any, **fields: Any) -> str:
    values = {"message_id": None, "to": "ada@example.com", "subject": "Hi", "body_text": "x"}
    with db.session() as session:
        return queue_message(session, **{**values, **fields}).id


def test_a_merged_contacts_messages_follow_the_survivor(db):
    duplicate = str(uuid.uuid4())
    contact(db, duplicate, 1, email="ada@old.example.com")
    moved = queue(db, contact_id=duplicate)
    kept = queue(db, contact_id=GRACE, to="grace@example.com")
    data = {"id": ADA, "duplicate_id": duplicate, "email": "ada@example.com", "first_name": "Ada"}
    handle(db, "contact.merged", data, aggregate_id=ADA, aggregate_version=4)
    by_id = {message.id: message for message in messages(db)}
    assert by_id[moved].contact_id == ADA and by_id[kept].contact_id == GRACE
    assert address_of(db, duplicate) is None
    assert (address_of(db, ADA).email, address_of(db, ADA).version) == ("ada@example.com", 4)


def test_an_erased_contact_leaves_no_personal_data_in_notifications(db, settings, client):
    merged = str(uuid.uuid4())
    contact(db, ADA, 1)
    sent = queue(db, contact_id=ADA, subject="Analytical Engine", body_html="<p>Ada</p>")
    _mark_sent_with_click(db, sent)
    waiting = queue(db, to="Ada@Example.com", subject="Bernoulli numbers")  # no contact id
    by_merged = queue(db, contact_id=merged, to="ada.l@example.com", subject="Lovelace")
    posted = client.post(
        "/api/v1/messages",
        json={"to": "ada@example.com", "subject": "Ada!", "body_text": "Bernoulli"},
        headers={"Idempotency-Key": "k1"},
    ).json["id"]
    grace = queue(db, contact_id=GRACE, to="grace@example.com", subject="Grace's compiler")
    hook = add_webhook(db)
    add_delivery(db, hook, {"id": ADA, "first_name": "Ada", "last_name": "Lovelace"})
    add_delivery(db, hook, {"requester_email": "ADA@example.com", "subject": "Bernoulli"})
    add_delivery(db, hook, {"id": GRACE, "first_name": "Grace"})
    assert any("Lovelace" in value for value in every_value(db))

    handle(db, "contact.erased", {"id": ADA, "merged_ids": [merged]}, aggregate_id=ADA)

    leaks = [value for value in every_value(db) if any(word in value for word in HER_DATA)]
    assert leaks == []
    by_id = {message.id: message for message in messages(db)}
    for message_id in (sent, waiting, by_merged, posted):
        message = by_id[message_id]
        assert (message.to_address, message.subject, message.body_text) == ("", "(erased)", "")
        assert message.contact_id is None and message.body_html is None
    assert by_id[sent].status == "sent" and by_id[waiting].status == "failed"
    assert by_id[grace].subject == "Grace's compiler" and by_id[grace].contact_id == GRACE
    assert address_of(db, ADA) is None and row_counts(db, "clicks") == {"clicks": 0}
    assert row_counts(db, "webhook_deliveries") == {"webhook_deliveries": 1}  # grace's
    assert ("email.sent", {"message_id": sent, "redacted": True}) in outbox_events(db)
    assert send_due(db, settings, Mailer(parse_smtp_url("smtp://127.0.0.1:1"))) == 1  # grace's


def add_webhook(db: Any) -> str:
    webhook_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(Webhook(id=webhook_id, url="https://hooks.example", secret="s" * 16))
    return webhook_id


def add_delivery(db: Any, webhook_id: str, data: dict[str, Any]) -> None:
    """A delivery of an event about someone, as the fan-out keeps it."""
    event = make_event("contact.updated", data, "contacts")
    with db.session() as session:
        session.add(
            WebhookDelivery(
                webhook_id=webhook_id,
                event_id=event.id,
                event_type=event.type,
                payload=event.to_json(),
                status="delivered",
                attempts=1,
            )
        )


def _mark_sent_with_click(db: Any, message_id: str) -> None:
    """A message as the sender and tracking leave it: sent, announced, clicked."""
    from services.notifications.sending import record_message_event

    with db.session() as session:
        message = session.get(Message, message_id)
        message.status, message.sent_at = "sent", utcnow()
        record_message_event(session, "email.sent", message)
        session.add(Click(message_id=message_id, url="https://example.com/?who=ada@example.com"))


# --- through the real broker ----------------------------------------------------------------


@pytest.fixture
def service(make_settings, database_url, smtp_server) -> Iterator[tuple[Any, Any]]:
    settings = make_settings("notifications", database_url=database_url)
    settings = settings.with_overrides(extra={**settings.extra, "smtp_url": smtp_server.url})
    db = make_database(settings)
    db.create_all()
    yield settings, db
    db.dispose()


def request(to: str, subject: str = "Hi", **data: Any) -> Any:
    """An email.requested event as another service publishes it."""
    return make_event("email.requested", {"to": to, "subject": subject, "body_text": "x", **data})


def run_worker(settings: Any, db: Any, mailer: Mailer | None = None) -> ServiceWorker:
    """The notifications worker as deployed: mail handlers, and the sender on a timer."""
    timer = Timer(0.05, lambda: send_due(db, settings, mailer), "send_due")
    worker = ServiceWorker(settings, db, handlers(settings), timers=[timer])
    worker.start()
    wait_until(worker.consumer.consuming.is_set, 15, "for the worker to consume")
    return worker


def stop(worker: ServiceWorker) -> None:
    worker.stop()
    for thread in worker._threads:
        thread.join(15)


def status_of(db: Any, message_id: str) -> str | None:
    with db.session() as session:
        message = session.get(Message, message_id)
        return message.status if message else None


def test_a_request_delivered_twice_arrives_once(service, smtp_server):
    settings, db = service
    worker = run_worker(settings, db)
    try:
        asked = request("ada@example.com")
        message_id = derived_message_id(asked, "ada@example.com")
        publish_raw(settings, "email.requested", asked.to_json())
        publish_raw(settings, "email.requested", asked.to_json())
        same_id = request("ada@example.com", message_id=message_id)
        publish_raw(settings, "email.requested", same_id.to_json())
        wait_until(lambda: status_of(db, message_id) == "sent", 15, "for the email")
        marker = request("marker@example.com")
        publish_raw(settings, "email.requested", marker.to_json())
        smtp_server.wait_for(2)
    finally:
        stop(worker)
    assert sorted(item.rcpt_tos[0] for item in smtp_server.received) == [
        "ada@example.com",
        "marker@example.com",
    ]
    assert len(outbox_events(db, "email.sent")) == 2


class DyingMailer(Mailer):
    """Delivers, then the worker process dies before the outcome is written."""

    def confirm(self, meanwhile: Any = None) -> None:
        super().confirm(meanwhile)
        raise SystemExit("killed mid-send")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the kill
def test_a_worker_killed_mid_send_does_not_send_again_after_restart(service, smtp_server):
    settings, db = service
    asked = request("ada@example.com", "Once")
    message_id = derived_message_id(asked, "ada@example.com")
    first = run_worker(settings, db, DyingMailer(parse_smtp_url(smtp_server.url)))
    try:
        publish_raw(settings, "email.requested", asked.to_json())
        smtp_server.wait_for(1)
        [timers] = [thread for thread in first._threads if thread.name.endswith("-timers")]
        wait_until(lambda: not timers.is_alive(), 15, "for the sender to die")
    finally:
        stop(first)
    assert status_of(db, message_id) == "sending"

    second = run_worker(settings, db)  # the restarted worker, with a working mailer
    try:
        publish_raw(settings, "email.requested", asked.to_json())  # and a redelivery
        marker = request("marker@example.com")
        publish_raw(settings, "email.requested", marker.to_json())
        smtp_server.wait_for(2)
        marker_id = derived_message_id(marker, "marker@example.com")
        # Settled first: the clock moved past the lease below would take it for interrupted.
        wait_until(lambda: status_of(db, marker_id) == "sent", 15, "for the marker's outcome")
        assert status_of(db, message_id) == "sending"  # in doubt: left alone
        send_due(db, settings, now=utcnow() + SENDING_LEASE + timedelta(seconds=1))
    finally:
        stop(second)
    assert status_of(db, message_id) == "failed"
    assert [item.rcpt_tos for item in smtp_server.received] == [
        ["ada@example.com"],
        ["marker@example.com"],
    ]
    [(_, failed)] = outbox_events(db, "email.failed")
    assert failed["message_id"] == message_id and failed["uncertain"] is True


def test_a_request_that_can_never_be_sent_is_dead_lettered(service, smtp_server):
    from shared.deadletters import list_dead_letters

    settings, db = service
    worker = run_worker(settings, db)
    try:
        bad = request("nobody")
        publish_raw(settings, "email.requested", bad.to_json())
        good = request("ada@example.com")
        publish_raw(settings, "email.requested", good.to_json())
        smtp_server.wait_for(1)
        wait_until(lambda: len(list_dead_letters(settings)) == 1, 15, "for the dead letter")
    finally:
        stop(worker)
    [letter] = list_dead_letters(settings)
    assert letter.reason == "permanent" and "to" in letter.error
    assert json.loads(letter.body)["id"] == bad.id
