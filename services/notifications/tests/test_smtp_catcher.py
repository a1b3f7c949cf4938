"""The local SMTP catcher: each message kept whole as a .eml file; the process stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from email import policy
from email.parser import BytesParser
from pathlib import Path

from services.notifications.mailer import Mailer, parse_smtp_url
from services.notifications.mime import Outgoing
from services.notifications.sender import send_due
from services.notifications.sending import queue_message
from services.notifications.smtp_catcher import start_catcher
from services.notifications.tests.smtp_server import free_port

ROOT = Path(__file__).resolve().parents[3]


def outgoing(subject: str) -> Outgoing:
    return Outgoing(
        id=str(uuid.uuid4()),
        from_address="CRM <crm@example.com>",
        to_address="ada@example.com",
        subject=subject,
        body_text="Hello",
        body_html="<p>Hello</p>",
    )


def parse(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


def test_each_caught_message_is_written_as_an_eml_file(tmp_path):
    port = free_port()
    controller = start_catcher(tmp_path / "mail", port)
    try:
        with Mailer(parse_smtp_url(f"smtp://127.0.0.1:{port}")) as mailer:
            mailer.send(outgoing("first"))
            mailer.send(outgoing("second"))
    finally:
        controller.stop()
    files = sorted((tmp_path / "mail").iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    assert sorted(parse(path)["Subject"] for path in files) == ["first", "second"]
    assert parse(files[0]).get_content_type() == "multipart/alternative"
    stamp, _, rest = files[0].name.partition("-")
    assert stamp.endswith("Z") and len(stamp) == 23 and uuid.UUID(rest.removesuffix(".eml"))


def test_the_catcher_process_takes_the_services_mail_and_stops_on_sigterm(tmp_path, db, app):
    port = free_port()
    env = {**os.environ, "CRM_DATA_DIR": str(tmp_path), "CRM_SMTP_CATCHER_PORT": str(port)}
    catcher = subprocess.Popen(
        [sys.executable, "-m", "services.notifications.smtp_catcher"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port)
        settings = app.extensions["crm.settings"]
        extra = {**settings.extra, "smtp_url": "", "smtp_catcher_port": port}
        settings = settings.with_overrides(extra=extra)
        with db.session() as session:
            queue_message(
                session, message_id=None, to="ada@example.com", subject="Hi", body_text="x"
            )
        assert send_due(db, settings) == 1  # no CRM_SMTP_URL: the catcher is the server
    finally:
        catcher.send_signal(signal.SIGTERM)
        _, errors = catcher.communicate(timeout=15)
    assert catcher.returncode == 0
    [path] = (tmp_path / "mail").glob("*.eml")
    assert parse(path)["Subject"] == "Hi"
    lines = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    caught = [line for line in lines if line["message"] == "caught a message"]
    assert (
        caught and caught[0]["file"] == str(path) and caught[0]["rcpt_tos"] == ["ada@example.com"]
    )


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, "the catcher did not start"
            time.sleep(0.05)
