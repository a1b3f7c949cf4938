"""Emails per second through the notifications sender, against raw smtplib, same run, same sink.

    python bench/notifications_send.py [--messages N] [--runs R] [--no-postgres]

The sink is a local aiosmtpd server in a process of its own that accepts and discards every
message. The baseline sends N ready-made MIME messages (built before the clock starts) with
smtplib's `sendmail` over one connection. The service path starts from N messages queued in
the database (`queue_message`, not timed) and times `send_due` until none is left: claims
with SKIP LOCKED, one committed transaction per group of 20 marking them `sending` (with
the previous group's outcomes and their `email.sent` events), before each SMTP conversation
one tiny committed UPDATE (the submission marks), tracking added to the HTML, the MIME
built, the SMTP conversation. On a SQLite file, then on PostgreSQL (database
`crm_bench_notifications`, created and dropped) at CRM_BENCH_POSTGRES_URL,
CRM_TEST_POSTGRES_URL or the local default. The goal: the service at least half the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import smtplib
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import postgres_database  # noqa: E402

from services.notifications.app import make_database  # noqa: E402
from services.notifications.mailer import Mailer, parse_smtp_url  # noqa: E402
from services.notifications.mime import Outgoing, build_mime  # noqa: E402
from services.notifications.models import Message  # noqa: E402
from services.notifications.sender import send_due  # noqa: E402
from services.notifications.sending import queue_message  # noqa: E402
from shared.config import load_settings  # noqa: E402

BENCH_DATABASE = "crm_bench_notifications"
SENDER = "CRM <crm@example.com>"
TEXT = "Hello {n},\n\nYour order has shipped. Track it in your account.\n\nThe team\n"
HTML = (
    "<html><body><p>Hello {n},</p><p>Your order has shipped. "
    '<a href="https://shop.example.com/orders/{n}">Track it</a>.</p></body></html>'
)


# --- the sink -------------------------------------------------------------------------------


class _Discard:
    """The sink's handler: every message accepted and dropped."""

    async def handle_DATA(self, _server: Any, _session: Any, _envelope: Any) -> str:
        return "250 OK"


def _run_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(_Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    while True:
        time.sleep(3600)


@contextlib.contextmanager
def sink() -> Iterator[int]:
    """A discarding SMTP server in its own process; its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = multiprocessing.Process(target=_run_sink, args=(port,), daemon=True)
    process.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.join(5)


# --- the two paths --------------------------------------------------------------------------


def contents(count: int) -> list[dict[str, Any]]:
    """N order notices: a text and an HTML body (one link, so tracking has work to do)."""
    return [
        {
            "to": f"customer{n}@example.com",
            "subject": f"Order {n} has shipped",
            "body_text": TEXT.format(n=n),
            "body_html": HTML.format(n=n),
        }
        for n in range(count)
    ]


def raw_smtplib(port: int, mails: list[dict[str, Any]]) -> float:
    """Seconds for smtplib to send the same messages, built beforehand, over one connection."""
    payloads = [
        build_mime(
            Outgoing(
                str(uuid.uuid4()),
                SENDER,
                mail["to"],
                mail["subject"],
                mail["body_text"],
                mail["body_html"],
            )
        ).as_bytes()
        for mail in mails
    ]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="example.com") as smtp:
        started = time.perf_counter()
        for mail, payload in zip(mails, payloads, strict=True):
            smtp.sendmail("crm@example.com", [mail["to"]], payload)
        return time.perf_counter() - started


def through_service(url: str, port: int, mails: list[dict[str, Any]]) -> float:
    """Seconds for send_due to deliver the same messages queued in a fresh database."""
    base = load_settings("notifications")
    settings = base.with_overrides(
        database_url=url, extra={**base.extra, "smtp_url": f"smtp://127.0.0.1:{port}"}
    )
    db = make_database(settings)
    db.metadata.drop_all(db.engine)
    db.create_all()
    try:
        with db.session() as session:
            for mail in mails:
                queue_message(session, message_id=None, from_address=SENDER, **mail)
        with Mailer(
            parse_smtp_url(settings.extra["smtp_url"]), local_hostname="example.com"
        ) as mailer:
            started = time.perf_counter()
            send_due(db, settings, mailer)
            elapsed = time.perf_counter() - started
        with db.session() as session:
            sent = session.scalar(sa.select(sa.func.count()).where(Message.status == "sent"))
        assert sent == len(mails), f"only {sent} of {len(mails)} sent"
        return elapsed
    finally:
        db.metadata.drop_all(db.engine)
        db.dispose()


# --- databases ------------------------------------------------------------------------------


def report(name: str, count: int, seconds: list[float], baseline: float | None = None) -> float:
    rate = count / statistics.median(seconds)
    ratio = f"  ratio {rate / baseline:.2f} (goal >= 0.5)" if baseline else ""
    print(f"{name:<34} {rate:>8,.0f} emails/s  (median of {len(seconds)} runs){ratio}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mails = contents(args.messages)
    with sink() as port, tempfile.TemporaryDirectory() as directory:
        raw = report(
            "raw smtplib, one connection",
            args.messages,
            [raw_smtplib(port, mails) for _ in range(args.runs)],
        )
        sqlite = f"sqlite:///{Path(directory) / 'notifications.db'}"
        report(
            "service (send_due), SQLite",
            args.messages,
            [through_service(sqlite, port, mails) for _ in range(args.runs)],
            raw,
        )
        if args.no_postgres:
            return
        with postgres_database(BENCH_DATABASE) as url:
            if url is not None:
                report(
                    "service (send_due), PostgreSQL",
                    args.messages,
                    [through_service(url, port, mails) for _ in range(args.runs)],
                    raw,
                )


if __name__ == "__main__":
    main()
