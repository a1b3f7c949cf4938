"""The local SMTP catcher: a real SMTP server that keeps each message as a `.eml` file.

With no `CRM_SMTP_URL`, `crm run` starts it and the mailer sends to it, so the one SMTP path
the service has is the one used on a developer's machine too. It listens on
127.0.0.1:`CRM_SMTP_CATCHER_PORT` (8025) and writes `<CRM_DATA_DIR>/mail/<UTC time>-<uuid>.eml`,
logging one JSON line per message. It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from aiosmtpd.controller import Controller

from services.notifications.mailer import catcher_port
from shared.config import load_settings
from shared.events import utcnow
from shared.logs import configure_logging

log = logging.getLogger(__name__)

SERVICE = "notifications"


class MailDirectory:
    """The aiosmtpd handler: every accepted message becomes one file in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        path = self.store(envelope.original_content or b"")
        log.info(
            "caught a message",
            extra={
                "file": str(path),
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "bytes": path.stat().st_size,
            },
        )
        return "250 2.0.0 OK: kept as " + path.name

    def store(self, content: bytes) -> Path:
        """Write one message; the file appears whole or not at all (written, then renamed)."""
        name = f"{utcnow().strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4()}.eml"
        partial = self.directory / f".{name}.part"
        partial.write_bytes(content)
        return partial.rename(self.directory / name)


def start_catcher(directory: Path, port: int, host: str = "127.0.0.1") -> Controller:
    """A running catcher writing into `directory`; `stop()` it when done."""
    controller = Controller(MailDirectory(directory), hostname=host, port=port)
    controller.start()
    return controller


def main() -> None:
    """Run the catcher until SIGTERM or SIGINT."""
    settings = load_settings(SERVICE)
    configure_logging(f"{SERVICE}-smtp-catcher", settings.log_level)
    directory, port = settings.data_dir / "mail", catcher_port(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    controller = start_catcher(directory, port)
    log.info("SMTP catcher on 127.0.0.1:%d writing to %s", port, directory)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
