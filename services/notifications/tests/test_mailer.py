"""The mailer: its URL, the MIME it builds, and real SMTP conversations (TLS, auth, errors)."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from services.notifications.mailer import (
    InvalidMessage,
    Mailer,
    PermanentSmtpError,
    SmtpConfig,
    TransientSmtpError,
    UncertainSmtpError,
    classify_reply,
    parse_smtp_url,
    smtp_url,
)
from services.notifications.mime import Outgoing
from services.notifications.tests.smtp_server import SmtpServer, free_port
from shared.config import load_settings

SENDER = "CRM <crm@example.com>"


def outgoing(**fields: Any) -> Outgoing:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "from_address": SENDER,
        "to_address": "ada@example.com",
        "subject": "Your invoice",
        "body_text": "Hello Ada,\nhere it is.\n",
        "body_html": "<p>Hello <b>Ada</b>, here it is.</p>",
        "headers": {},
    }
    return Outgoing(**{**values, **fields})


def mailer_for(server: SmtpServer, url: str | None = None) -> Mailer:
    context = server.client_context() if server.tls else None
    return Mailer(parse_smtp_url(url or server.url), ssl_context=context)


# --- the URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 25)),
        (
            "smtp://ada%40example.com:p%3Ass@mail.example.com:587",
            SmtpConfig("mail.example.com", 587, username="ada@example.com", password="p:ss"),
        ),
        ("smtps://mx.example.com", SmtpConfig("mx.example.com", 465, implicit_tls=True)),
        ("smtp://h.example:2525?starttls=true", SmtpConfig("h.example", 2525, starttls="always")),
        (
            "smtp://h.example?starttls=false&timeout=2.5&cafile=/ca.pem",
            SmtpConfig("h.example", 25, starttls="never", timeout=2.5, cafile="/ca.pem"),
        ),
    ],
)
def test_an_smtp_url_names_server_security_and_credentials(url, expected):
    assert parse_smtp_url(url) == expected
    assert parse_smtp_url(url).password == expected.password


def test_starttls_is_required_on_587_and_with_credentials_unless_turned_off():
    assert not parse_smtp_url("smtp://h.example").requires_starttls
    assert parse_smtp_url("smtp://h.example:587").requires_starttls
    assert parse_smtp_url("smtp://u:p@h.example:2525").requires_starttls
    assert not parse_smtp_url("smtp://u:p@h.example:2525?starttls=false").requires_starttls
    assert not parse_smtp_url("smtps://u:p@h.example").requires_starttls


@pytest.mark.parametrize(
    "url",
    [
        "http://h.example",
        "smtp://",
        "smtp://h.example?tls=yes",
        "smtp://h.example?starttls=maybe",
        "smtps://h.example?starttls=true",
    ],
)
def test_a_bad_smtp_url_is_refused_saying_why(url):
    with pytest.raises(ValueError):
        parse_smtp_url(url)


def test_without_an_smtp_url_mail_goes_to_the_local_catcher(monkeypatch):
    monkeypatch.delenv("CRM_SMTP_URL", raising=False)
    monkeypatch.setenv("CRM_SMTP_CATCHER_PORT", "2526")
    assert smtp_url(load_settings("notifications")) == "smtp://127.0.0.1:2526"
    monkeypatch.setenv("CRM_SMTP_URL", "smtps://mx.example.com")
    assert smtp_url(load_settings("notifications")) == "smtps://mx.example.com"


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hi\r\nBcc: everyone@example.com"},
        {"subject": "Hi\nthere"},
        {"to_address": "ada@example.com\r\nBcc: eve@example.com"},
        {"to_address": "ada@example.com, eve@example.com"},
        {"to_address": "Ada <ada@example.com>"},
        {"to_address": "not an address"},
        {"from_address": "CRM <crm@example.com>\r\nBcc: eve@example.com"},
        {"headers": {"X-Note": "fine\r\nBcc: eve@example.com"}},
        {"headers": {"Bcc": "eve@example.com"}},
        {"headers": {"X Bad Name": "value"}},
        {"headers": {"To": "eve@example.com"}},
    ],
)
def test_header_injection_is_refused_and_nothing_reaches_the_server(smtp_server, fields):
    with pytest.raises(InvalidMessage), mailer_for(smtp_server) as mailer:
        mailer.send(outgoing(**fields))
    assert smtp_server.count() == 0


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reply", "stage", "kind", "hard"),
    [
        (451, "4.3.0 Try again later", "DATA", TransientSmtpError, False),
        (421, "Service not available", "MAIL FROM", TransientSmtpError, False),
        (
            550,
            "5.1.1 <ada@example.com>: Recipient address rejected: User unknown",
            "RCPT TO",
            PermanentSmtpError,
            True,
        ),
        (550, "No such user here", "RCPT TO", PermanentSmtpError, True),
        (553, "5.1.3 Bad destination mailbox address syntax", "RCPT TO", PermanentSmtpError, True),
        (553, "5.1.8 Bad sender's system address", "RCPT TO", PermanentSmtpError, False),
        (550, "5.1.1 sender unknown", "MAIL FROM", PermanentSmtpError, False),
        (554, "5.7.1 Message rejected as spam", "DATA", PermanentSmtpError, False),
        (552, "5.2.2 Mailbox full", "DATA", PermanentSmtpError, False),
    ],
)
def test_answers_are_sorted_into_transient_permanent_and_hard_bounces(
    code, reply, stage, kind, hard
):
    error = classify_reply(code, reply.encode(), stage)
    assert type(error) is kind and error.code == code
    assert getattr(error, "hard_bounce", False) is hard
    assert reply.split()[0] in error.detail


# --- real conversations ---------------------------------------------------------------------


def test_a_batch_goes_over_one_connection_and_arrives_intact(smtp_server):
    messages = [outgoing(to_address=f"user{n}@example.com") for n in range(3)]
    messages.append(outgoing(body_text=".\n..\n.leading dot\n", body_html=None))
    with mailer_for(smtp_server) as mailer:
        for message in messages:
            mailer.send(message)
    assert smtp_server.count() == 4
    assert len({item.peer for item in smtp_server.received}) == 1
    first = smtp_server.received[0]
    assert first.mail_from == "crm@example.com" and first.rcpt_tos == ["user0@example.com"]
    assert first.message["Message-ID"] == f"<{messages[0].id}@example.com>"
    last = smtp_server.received[-1].message
    assert last.get_content() == ".\n..\n.leading dot\n"


def test_a_refused_message_leaves_the_connection_usable_for_the_next(smtp_server):
    smtp_server.refuse_next(1, "451 4.7.1 Greylisted, try again", stage="rcpt")
    smtp_server.refuse_next(1, "550 5.1.1 User unknown", stage="data")
    with mailer_for(smtp_server) as mailer:
        with pytest.raises(TransientSmtpError) as deferred:
            mailer.send(outgoing())
        with pytest.raises(PermanentSmtpError) as refused:
            mailer.send(outgoing())
        mailer.send(outgoing(subject="third time"))
    assert deferred.value.code == 451 and "Greylisted" in deferred.value.detail
    assert refused.value.code == 550 and refused.value.hard_bounce
    assert [item.message["Subject"] for item in smtp_server.received] == ["third time"]
    assert len({item.peer for item in smtp_server.received}) == 1


def test_a_connection_the_server_closed_is_replaced_without_a_second_copy(smtp_server):
    with mailer_for(smtp_server) as mailer:
        mailer.send(outgoing())
        # The connection breaks while the mailer keeps it (a server's idle timeout).
        mailer._smtp.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        mailer.send(outgoing())
    assert smtp_server.count() == 2
    assert len({item.peer for item in smtp_server.received}) == 2


def test_a_server_that_is_not_there_is_a_transient_error():
    mailer = Mailer(parse_smtp_url(f"smtp://127.0.0.1:{free_port()}?timeout=2"))
    with pytest.raises(TransientSmtpError, match="cannot open an SMTP session"):
        mailer.send(outgoing())


def test_no_answer_after_the_data_is_uncertain_not_retryable(smtp_server):
    smtp_server.stall_next(1)
    with (
        pytest.raises(UncertainSmtpError),
        mailer_for(smtp_server, smtp_server.url + "?timeout=1") as mailer,
    ):
        mailer.send(outgoing())
    assert smtp_server.count() == 1  # it did arrive: sending again would duplicate it


def test_starttls_and_login():
    with SmtpServer(tls="starttls", login=("ada", "s3cret:!")) as server:
        assert server.url.startswith("smtp://ada:")
        with mailer_for(server) as mailer:
            mailer.send(outgoing())
        assert server.count() == 1


def test_tls_from_the_first_byte():
    with SmtpServer(tls="implicit") as server, mailer_for(server) as mailer:
        mailer.send(outgoing())
        assert server.count() == 1


def test_an_untrusted_certificate_is_refused():
    with SmtpServer(tls="starttls") as server:
        mailer = Mailer(parse_smtp_url(server.url + "?starttls=true"))
        with pytest.raises(TransientSmtpError, match="CERTIFICATE_VERIFY_FAILED"):
            mailer.send(outgoing())
        assert server.count() == 0


def test_a_wrong_password_is_transient_and_sends_nothing():
    with SmtpServer(tls="starttls", login=("ada", "right")) as server:
        url = server.url.replace(":right@", ":wrong@")
        with pytest.raises(TransientSmtpError, match="535"), mailer_for(server, url) as mailer:
            mailer.send(outgoing())
        assert server.count() == 0


def test_credentials_never_cross_in_clear_unless_starttls_is_turned_off():
    with SmtpServer(login=("ada", "pw")) as server:
        with pytest.raises(TransientSmtpError, match="STARTTLS"), mailer_for(server) as mailer:
            mailer.send(outgoing())
        with mailer_for(server, server.url + "?starttls=false") as mailer:
            mailer.send(outgoing())
        assert server.count() == 1


def test_the_callers_work_runs_in_the_gaps_of_a_conversation(smtp_server):
    steps: list[int] = []

    def work():
        for step in range(10):
            steps.append(step)
            yield

    meanwhile = work()
    with mailer_for(smtp_server) as mailer:
        prepared = mailer.prepare(outgoing())
        mailer.submit(prepared, meanwhile)
        assert steps == [0, 1, 2]  # while MAIL, RCPT and DATA were answered
        mailer.confirm(meanwhile)
        assert steps == [0, 1, 2, 3]
    assert smtp_server.count() == 1
    assert smtp_server.received[0].message["Message-ID"] == prepared.smtp_message_id
