"""The sender against a real SMTP server: at most once, retries, failures, crashes, replicas."""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.notifications.mailer import Mailer, parse_smtp_url
from services.notifications.models import Message, Suppression
from services.notifications.outcomes import INTERRUPTED, SENDING_LEASE
from services.notifications.sender import CLAIM_LEASE, claim_due, send_due, sending_timer
from services.notifications.sending import queue_message
from services.notifications.tests.smtp_server import SmtpServer, free_port
from shared.testing import outbox_events

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(app: Any) -> Any:
    return app.extensions["crm.settings"]


def at(moment: datetime | None) -> datetime | None:
    """A stored moment in UTC (SQLite gives naive datetimes back)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def queue(db: Any, to: str = "ada@example.com", **fields: Any) -> str:
    values: dict[str, Any] = {"message_id": None, "subject": "Hello", "body_text": "Hi there"}
    with db.session() as session:
        return queue_message(
            session, to=to, from_address="CRM <crm@example.com>", **{**values, **fields}
        ).id


def load(db: Any, message_id: str) -> Message:
    with db.session() as session:
        return session.get(Message, message_id)


def mailer_for(server: SmtpServer, query: str = "") -> Mailer:
    return Mailer(parse_smtp_url(server.url + query))


def copies(server: SmtpServer, message_id: str) -> int:
    return sum(1 for item in server.received if message_id in item.message["Message-ID"])


def test_a_queued_message_is_sent_once_and_announced(db, settings, smtp_server):
    message_id = queue(db, contact_id="00000000-0000-4000-8000-0000000000c1")
    assert send_due(db, settings, mailer_for(smtp_server), now=T0) == 1
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(hours=2)) == 0
    assert copies(smtp_server, message_id) == 1 and smtp_server.count() == 1
    message = load(db, message_id)
    assert (message.status, message.attempts, at(message.sent_at)) == ("sent", 1, T0)
    assert message.smtp_message_id == f"<{message_id}@example.com>"
    assert at(message.sending_started_at) == T0 and message.version == 3
    [(kind, data)] = outbox_events(db)
    assert kind == "email.sent"
    assert data["message_id"] == message_id and data["to"] == "ada@example.com"
    assert data["contact_id"] == "00000000-0000-4000-8000-0000000000c1"
    assert data["category"] == "transactional" and data["campaign_id"] is None
    assert data["cause"] is None and data["smtp_message_id"] == message.smtp_message_id


def test_a_4xx_answer_is_retried_after_a_backoff_and_then_succeeds(db, settings, smtp_server):
    message_id = queue(db)
    smtp_server.refuse_next(1, "451 4.3.0 Mailbox busy, try later")
    assert send_due(db, settings, mailer_for(smtp_server), now=T0) == 1
    deferred = load(db, message_id)
    assert (deferred.status, deferred.attempts) == ("queued", 1)
    assert at(deferred.next_attempt_at) == T0 + timedelta(seconds=30)
    assert "451 4.3.0 Mailbox busy" in deferred.last_error
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(seconds=29)) == 0
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(seconds=30)) == 1
    sent = load(db, message_id)
    assert (sent.status, sent.attempts) == ("sent", 2)
    assert copies(smtp_server, message_id) == 1
    assert [kind for kind, _ in outbox_events(db)] == ["email.sent"]


def test_after_the_last_retry_the_message_fails(db, settings, smtp_server):
    message_id = queue(db)
    smtp_server.refuse_next(5, "421 4.4.2 Timeout, closing", stage="rcpt")
    moment = T0
    for wait in (timedelta(0), *(timedelta(seconds=s) for s in (30, 120, 600, 3600))):
        moment += wait
        assert send_due(db, settings, mailer_for(smtp_server), now=moment) == 1
    message = load(db, message_id)
    assert (message.status, message.attempts) == ("failed", 5)
    assert message.last_error.startswith("gave up after 5 attempts: RCPT TO: 421")
    [(kind, data)] = outbox_events(db)
    assert kind == "email.failed" and data["reason"] == "retries_exhausted"
    assert data["uncertain"] is False and data["code"] == 421
    assert smtp_server.count() == 0


def test_a_5xx_answer_fails_the_message_for_good(db, settings, smtp_server):
    message_id = queue(db)
    smtp_server.refuse_next(1, "554 5.7.1 Message rejected as spam")
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    message = load(db, message_id)
    assert (message.status, at(message.failed_at)) == ("failed", T0)
    assert message.last_error == "DATA: 554 5.7.1 Message rejected as spam"
    [(kind, data)] = outbox_events(db)
    assert kind == "email.failed"
    assert (data["reason"], data["code"], data["uncertain"]) == ("rejected", 554, False)
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(days=1)) == 0


def test_an_unknown_mailbox_bounces_and_is_suppressed_for_marketing(db, settings, smtp_server):
    message_id = queue(db, to="Gone@example.com")
    smtp_server.refuse_next(1, "550 5.1.1 <gone@example.com>: user unknown", stage="rcpt")
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    message = load(db, message_id)
    assert (message.status, at(message.failed_at)) == ("bounced", T0)
    [(kind, data)] = outbox_events(db)
    assert kind == "email.bounced" and data["hard"] is True and data["code"] == 550
    with db.session() as session:
        assert session.get(Suppression, "gone@example.com").reason == "bounced"
    later = queue(db, to="gone@example.com", category="marketing")
    assert load(db, later).last_error == "suppressed: bounced"


def test_mail_that_would_inject_headers_is_never_sent(db, settings, smtp_server):
    with db.session() as session:
        session.add(
            Message(
                id=str(uuid.uuid4()),
                to_address="ada@example.com",
                to_key="ada@example.com",
                from_address="CRM <crm@example.com>",
                subject="Hi\r\nBcc: everyone@example.com",
                body_text="x",
            )
        )
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    [message] = _all(db)
    assert message.status == "failed" and "line breaks" in message.last_error
    assert smtp_server.count() == 0


def _all(db: Any) -> list[Message]:
    with db.session() as session:
        return list(session.scalars(sa.select(Message).order_by(Message.created_at)))


class DyingMailer(Mailer):
    """Delivers to the server, then the worker dies before it can write down the outcome."""

    def confirm(self, meanwhile: Any = None) -> None:
        super().confirm(meanwhile)
        raise SystemExit("killed right after the server accepted the message")


def test_a_worker_killed_mid_send_never_sends_that_message_again(db, settings, smtp_server):
    first = queue(db, subject="first")
    others = [queue(db, subject=f"other {n}") for n in range(3)]
    with pytest.raises(SystemExit):
        send_due(db, settings, DyingMailer(parse_smtp_url(smtp_server.url)), now=T0)
    assert load(db, first).status == "sending" and copies(smtp_server, first) == 1
    # After a restart: the others go out; the one in doubt is left alone...
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(minutes=1)) == 3
    assert load(db, first).status == "sending"
    # ...and once its attempt is older than the lease it is reconciled, not resent.
    later = T0 + SENDING_LEASE + timedelta(seconds=1)
    assert send_due(db, settings, mailer_for(smtp_server), now=later) == 0
    message = load(db, first)
    assert (message.status, message.last_error, at(message.failed_at)) == (
        "failed",
        INTERRUPTED,
        later,
    )
    assert copies(smtp_server, first) == 1 and smtp_server.count() == 4
    assert all(load(db, other).status == "sent" for other in others)
    failed = outbox_events(db, "email.failed")
    assert [(data["message_id"], data["uncertain"], data["reason"]) for _, data in failed] == [
        (first, True, "interrupted")
    ]


def test_claimed_messages_of_a_dead_sender_are_taken_again_when_the_claim_ends(
    db, settings, smtp_server
):
    message_id = queue(db)
    claim = claim_due(db, T0, 10)  # a sender claims, then dies before any attempt
    assert claim.ids == [message_id] and load(db, message_id).status == "queued"
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(minutes=1)) == 0
    assert send_due(db, settings, mailer_for(smtp_server), now=T0 + CLAIM_LEASE) == 1
    assert load(db, message_id).status == "sent" and copies(smtp_server, message_id) == 1


def test_no_answer_after_the_data_is_a_failure_in_doubt_never_a_resend(db, settings, smtp_server):
    message_id = queue(db)
    smtp_server.stall_next(1)
    send_due(db, settings, mailer_for(smtp_server, "?timeout=1"), now=T0)
    message = load(db, message_id)
    assert message.status == "failed" and "connection lost after" in message.last_error
    [(_, data)] = outbox_events(db, "email.failed")
    assert data["uncertain"] is True and data["reason"] == "uncertain"
    send_due(db, settings, mailer_for(smtp_server), now=T0 + timedelta(days=1))
    assert copies(smtp_server, message_id) == 1


def test_two_senders_at_once_never_send_one_message_twice(db, settings, smtp_server):
    ids = [queue(db, to=f"user{n}@example.com") for n in range(120)]
    counts: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            with mailer_for(smtp_server) as mailer:
                counts.append(send_due(db, settings, mailer, now=T0, batch=7))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sum(counts) == 120
    seen = Counter(item.message["Message-ID"] for item in smtp_server.received)
    assert len(seen) == 120 and set(seen.values()) == {1}
    assert {message.status for message in _all(db)} == {"sent"}
    assert len(outbox_events(db, "email.sent")) == len(ids)


def test_without_a_mailer_one_is_opened_only_when_there_is_mail(db, settings, smtp_server):
    nowhere = settings.with_overrides(
        extra={**settings.extra, "smtp_url": f"smtp://127.0.0.1:{free_port()}"}
    )
    assert send_due(db, nowhere) == 0  # nothing due: no connection is tried
    configured = settings.with_overrides(extra={**settings.extra, "smtp_url": smtp_server.url})
    message_id = queue(db)
    assert send_due(db, configured) == 1
    assert copies(smtp_server, message_id) == 1


def test_html_gets_tracking_as_the_message_goes_out(db, settings, smtp_server):
    asked = '<html><body><p><a href="https://shop.example.com/offer">Offer</a></p></body></html>'
    message_id = queue(db, body_html=asked)
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    [received] = smtp_server.received
    html = received.message.get_body(("html",)).get_content()
    public = settings.extra["public_url"]
    assert f'href="{public}/t/c/' in html and f'src="{public}/t/o/' in html
    assert "https://shop.example.com/offer" not in html.split("/t/c/")[0]
    assert load(db, message_id).body_html == asked  # the log keeps what was asked


def test_the_sent_click_links_lead_to_the_stored_urls(db, settings, smtp_server, anonymous):
    asked = '<a href="https://shop.example.com/offer">Offer</a><a href="https://x.example/">X</a>'
    queue(db, body_html=asked)
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    [received] = smtp_server.received
    html = received.message.get_body(("html",)).get_content()
    public = settings.extra["public_url"]
    clicks = [link.removeprefix(public) for link in re.findall(r'href="([^"]+)"', html)]
    followed = [anonymous.get(path).headers["Location"] for path in clicks]
    assert followed == ["https://shop.example.com/offer", "https://x.example/"]


def test_marketing_mail_goes_out_with_rfc_8058_one_click_unsubscribe(db, settings, smtp_server):
    link = "<https://crm.example.com/api/v1/unsubscribe/abc>"
    queue(db, category="marketing", headers={"List-Unsubscribe": link})  # as campaigns ask
    queue(db, to="bob@example.com")  # transactional: no unsubscribe
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    [marketing] = smtp_server.messages_for("ada@example.com")
    assert marketing.message["List-Unsubscribe"] == link
    assert marketing.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [transactional] = smtp_server.messages_for("bob@example.com")
    assert transactional.message["List-Unsubscribe-Post"] is None


def test_the_worker_runs_the_sender_on_its_tick(settings, db):
    timer = sending_timer(settings, db)
    assert timer.every_seconds == settings.extra["notifications_tick_seconds"]
    assert timer.label == "send_due"


def test_a_claim_takes_no_more_than_its_batch(db):
    ids = [queue(db, to=f"user{n}@example.com") for n in range(12)]
    first = claim_due(db, T0, 5)
    second = claim_due(db, T0, 5)
    third = claim_due(db, T0, 5)
    assert first.ids == ids[:5] and second.ids == ids[5:10] and third.ids == ids[10:]
    assert claim_due(db, T0, 5).ids == []


def test_a_message_that_cannot_be_built_fails_alone(db, settings, smtp_server):
    before = queue(db, subject="before")
    with db.session() as session:
        bad = Message(
            id=str(uuid.uuid4()),
            to_address="eve@example.com",
            to_key="eve@example.com",
            from_address="CRM <crm@example.com>",
            subject="x",
            body_text="x",
            headers={"Bcc": "everyone@example.com"},
        )
        session.add(bad)
    after = queue(db, subject="after")
    assert send_due(db, settings, mailer_for(smtp_server), now=T0) == 3
    assert [load(db, message_id).status for message_id in (before, bad.id, after)] == [
        "sent",
        "failed",
        "sent",
    ]
    assert "Bcc" in load(db, bad.id).last_error and smtp_server.count() == 2


def test_sent_failed_and_bounced_emails_are_counted(db, settings, smtp_server):
    from prometheus_client import REGISTRY

    def emails(outcome: str) -> float:
        labels = {"service": settings.service, "outcome": outcome}
        return REGISTRY.get_sample_value("crm_emails_total", labels) or 0.0

    before = {outcome: emails(outcome) for outcome in ("sent", "failed", "bounced")}
    queue(db)
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    queue(db)
    smtp_server.refuse_next(1, "554 5.7.1 Message rejected as spam")
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    queue(db, to="gone@example.com")
    smtp_server.refuse_next(1, "550 5.1.1 <gone@example.com>: user unknown", stage="rcpt")
    send_due(db, settings, mailer_for(smtp_server), now=T0)
    moved = {outcome: emails(outcome) - before[outcome] for outcome in before}
    assert moved == {"sent": 1, "failed": 1, "bounced": 1}
